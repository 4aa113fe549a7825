//! Every bound of Pagoda's formats and APIs, with its reason.
//!
//! A length prefix, count or size read from disk or the network is checked
//! against these constants before anything is allocated. `formats/SPEC.md`
//! lists the same table; a compatible client must enforce at least the wire
//! limits. A server answers a request over a limit on its own size (one of
//! these, or the node's configured payload, chunk or message size) with
//! `INVALID_ARGUMENT`, since retrying cannot help, and a request over a limit
//! of shared capacity (requests or bytes in flight, quotas, queues) with
//! `RESOURCE_EXHAUSTED` and a retry hint (`formats/SPEC.md` §12).

/// Smallest `block_tokens` a namespace may declare.
pub const BLOCK_TOKENS_MIN: u32 = 1;
/// Largest `block_tokens`: 4096 tokens keeps the hashed input of one block at
/// 16 KiB and one block's payload within the payload cap for every layout we
/// know of (the Mooncake traces use 512).
pub const BLOCK_TOKENS_MAX: u32 = 4096;

/// Most token ids in one request (`Lookup`, `Put`, `pagoda hash`).
/// 2^21 = 2,097,152: a 1,048,576-token prompt is an ordinary request with
/// room to spare, and the largest token list stays below
/// [`MESSAGE_BYTES_MAX`] (at most 5 bytes per varint-encoded id).
pub const TOKENS_PER_REQUEST_MAX: u64 = 1 << 21;

/// Most blocks (chain hashes) in one `Lookup`. 2^17 blocks of 32 bytes is a
/// 4 MiB request; it covers a 1M-token prompt at `block_tokens >= 8`.
pub const BLOCKS_PER_LOOKUP_MAX: u32 = 1 << 17;

/// Most keys in one `Exists`, `Remove`, `Pin`, `Unpin`, `Replicate` or
/// multi-key `Get` request; the same bound as a lookup, for the same reason.
pub const KEYS_PER_REQUEST_MAX: u32 = 1 << 17;

/// Most blocks in one `Put` stream: bounds the work and the response of one call.
pub const PUT_BLOCKS_PER_STREAM_MAX: u32 = 4096;

/// Most bytes of `extra` (multimodal content hashes, a LoRA id) mixed into one
/// block's chain hash. 4 KiB holds over a hundred 32-byte content hashes.
pub const EXTRA_BYTES_MAX: u32 = 4096;

/// Default largest block payload a server accepts: 64 MiB holds 512 tokens of
/// an 8B model in bf16 (32 layers, 8 KV heads, head dim 128) on one rank.
/// Servers may raise it up to [`PAYLOAD_BYTES_HARD_MAX`].
pub const PAYLOAD_BYTES_DEFAULT_MAX: u32 = 64 << 20;

/// Hard cap on a block payload, whatever the configuration: 512 MiB holds
/// 512 tokens of LLaMA2-70B in fp16 without tensor parallelism (160 MiB) with
/// room to spare, and keeps every length a `u32`.
pub const PAYLOAD_BYTES_HARD_MAX: u32 = 512 << 20;

/// Default payload bytes per streamed `Put`/`Get` message.
pub const CHUNK_BYTES_DEFAULT: u32 = 1 << 20;

/// Most payload bytes in one streamed `Put`/`Get` message. 2 MiB keeps every
/// chunk message under gRPC's customary 4 MiB message size with headroom.
pub const CHUNK_BYTES_MAX: u32 = 2 << 20;

/// Largest single gRPC message a server must accept (a lookup by tokens of
/// [`TOKENS_PER_REQUEST_MAX`] ids is at most 10 MiB).
pub const MESSAGE_BYTES_MAX: u32 = 16 << 20;

/// Longest tenant name, in bytes (a DNS label's length).
pub const TENANT_NAME_BYTES_MAX: usize = 63;
/// Longest model name, in bytes (room for `organisation/model-name` paths).
pub const MODEL_NAME_BYTES_MAX: usize = 128;
/// Longest model revision, in bytes (a 40-hex-digit commit id fits, as do tags).
pub const REVISION_BYTES_MAX: usize = 64;

/// Shortest tenant secret: 16 bytes (128 bits) is the least we accept as a
/// key for deriving chain keys.
pub const TENANT_SECRET_BYTES_MIN: usize = 16;
/// Longest tenant secret, in bytes.
pub const TENANT_SECRET_BYTES_MAX: usize = 256;

/// Most layers in a KV layout.
pub const LAYER_COUNT_MAX: u32 = 1024;
/// Most KV heads in a KV layout.
pub const KV_HEAD_COUNT_MAX: u32 = 1024;
/// Largest head dimension (or latent width, for MLA) in a KV layout.
pub const HEAD_DIM_MAX: u32 = 16384;
/// Largest tensor-parallel group.
pub const TP_SIZE_MAX: u16 = 1024;

/// Largest payload of one log record: a block record's 104-byte header and
/// 32-byte parent hash (`formats/SPEC.md` §10), an encrypted record's
/// 12-byte nonce and 16-byte tag (§10.1), plus the hard payload cap.
pub const RECORD_PAYLOAD_BYTES_MAX: u32 = PAYLOAD_BYTES_HARD_MAX + 136 + 28;

const _: () = assert!(crate::block::BLOCK_HEADER_SIZE == 104);
const _: () = assert!(crate::block::BLOCK_RECORD_OVERHEAD == 136);
const _: () = assert!(crate::block::SEAL_OVERHEAD == 28);

/// Every record starts at a multiple of this many bytes within its segment.
pub const RECORD_ALIGN: u64 = 8;

/// Alignment of offsets and lengths for `O_DIRECT` writes: a group-commit batch
/// ends on a multiple of this (padded with a padding record).
pub const DIRECT_IO_ALIGN: u64 = 4096;

/// Shortest lease a `Pin` may ask for. A lease of 0 ms would expire before
/// it is answered and protect nothing; asking for it is a client bug.
pub const PIN_DURATION_MS_MIN: u64 = 1;

/// Longest lease a `Pin` may ask for: ten minutes covers any transfer, and a
/// crashed client's pins expire without operator help.
pub const PIN_DURATION_MS_MAX: u64 = 10 * 60 * 1000;

/// Most namespaces in one `ListNamespaces` page, and the page size a request
/// of `page_size = 0` gets. A namespace entry is at most a few hundred
/// bytes, so a page stays far below [`MESSAGE_BYTES_MAX`] while a tenant may
/// hold up to the engine's 2^20 namespaces.
pub const NAMESPACES_PER_PAGE_MAX: u32 = 1000;

/// Largest request metadata (the HTTP/2 header list, counted as HTTP/2
/// does: name, value and 32 bytes per entry) a server accepts. Real calls
/// carry well under 1 KiB (a token, a deadline, the content type). A call
/// with more is answered on its own (HTTP 431, the stream reset) and the
/// connection serves on; the HTTP/2 stack closes the connection only past
/// four times this (its abuse limit), so 1 MiB of metadata still costs just
/// that one call.
pub const METADATA_BYTES_MAX: u32 = 512 << 10;

const _: () = assert!(BLOCK_TOKENS_MIN >= 1 && BLOCK_TOKENS_MIN <= BLOCK_TOKENS_MAX);
const _: () = assert!(CHUNK_BYTES_DEFAULT <= CHUNK_BYTES_MAX);
const _: () = assert!(PAYLOAD_BYTES_DEFAULT_MAX <= PAYLOAD_BYTES_HARD_MAX);
const _: () = assert!(TOKENS_PER_REQUEST_MAX * 5 < MESSAGE_BYTES_MAX as u64);
const _: () = assert!(BLOCKS_PER_LOOKUP_MAX as u64 * 32 < MESSAGE_BYTES_MAX as u64);
const _: () = assert!(DIRECT_IO_ALIGN.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(PIN_DURATION_MS_MIN >= 1 && PIN_DURATION_MS_MIN <= PIN_DURATION_MS_MAX);
const _: () = assert!(METADATA_BYTES_MAX * 4 > 1 << 20);
