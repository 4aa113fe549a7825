//! `pagoda hash`: the namespace id and chain hashes of a token sequence.
//!
//! Reads token ids (JSON array or one per line) from `--input` or stdin, the
//! namespace from flags and the tenant secret from `--secret-file`, and prints
//! what a Pagoda server would compute (`formats/SPEC.md`, "Chain hashing").
//! Tokens of a partial last block are not hashed; a note on stderr says so.

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use pagoda_formats::chain::{ChainKey, TenantSecret, hash_tokens};
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace};

use crate::tokens;

/// Flags of `pagoda hash`.
#[derive(Debug, Args)]
pub(crate) struct HashArgs {
    /// Tenant name (a-z 0-9 _ -, at most 63 bytes).
    #[arg(long)]
    tenant: String,
    /// Model name (A-Z a-z 0-9 . _ - /, at most 128 bytes).
    #[arg(long)]
    model: String,
    /// Model revision (A-Z a-z 0-9 . _ -, at most 64 bytes).
    #[arg(long)]
    revision: String,
    /// Tokens per block (1..=4096).
    #[arg(long, default_value_t = 16)]
    block_tokens: u32,
    /// File holding the tenant secret (16..=256 bytes; one trailing newline is ignored).
    #[arg(long)]
    secret_file: PathBuf,
    /// Element type: f32, f16, bf16, fp8-e4m3, fp8-e5m2, int8.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// KV kind: kv (separate K and V) or latent (MLA).
    #[arg(long, default_value = "kv")]
    kind: String,
    /// Transformer layers.
    #[arg(long, default_value_t = 32)]
    layers: u32,
    /// KV heads of the whole model.
    #[arg(long, default_value_t = 8)]
    kv_heads: u32,
    /// Elements per head (latent width for MLA).
    #[arg(long, default_value_t = 128)]
    head_dim: u32,
    /// Tensor-parallel rank of this shard.
    #[arg(long, default_value_t = 0)]
    tp_rank: u16,
    /// Tensor-parallel group size.
    #[arg(long, default_value_t = 1)]
    tp_size: u16,
    /// Read token ids from this file instead of stdin.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Why `pagoda hash` failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tokens(#[from] tokens::TokenError),
    #[error("{context}: {source}")]
    Format {
        context: &'static str,
        source: pagoda_formats::Error,
    },
}

fn format_error(context: &'static str) -> impl FnOnce(pagoda_formats::Error) -> HashError {
    move |source| HashError::Format { context, source }
}

pub(crate) fn run(args: &HashArgs) -> Result<(), HashError> {
    let layout = KvLayout {
        dtype: args
            .dtype
            .parse::<Dtype>()
            .map_err(format_error("bad --dtype"))?,
        kind: args
            .kind
            .parse::<KvKind>()
            .map_err(format_error("bad --kind"))?,
        layer_count: args.layers,
        kv_head_count: args.kv_heads,
        head_dim: args.head_dim,
        block_tokens: args.block_tokens,
        tp_rank: args.tp_rank,
        tp_size: args.tp_size,
    };
    let namespace = Namespace::new(&args.tenant, &args.model, &args.revision, layout)
        .map_err(format_error("bad namespace"))?;
    let secret = read_secret(&args.secret_file)?;
    let text = read_input(args.input.as_ref())?;
    let tokens = tokens::parse(&text)?;

    let namespace_id = namespace.id();
    let key = ChainKey::derive(&namespace_id, &secret);
    let chain =
        hash_tokens(&key, args.block_tokens, &tokens).map_err(format_error("cannot hash"))?;
    if args.json {
        let hashes: Vec<String> = chain.hashes.iter().map(ToString::to_string).collect();
        let report = serde_json::json!({
            "namespace_id": namespace_id.to_string(),
            "block_tokens": args.block_tokens,
            "token_count": tokens.len(),
            "partial_tokens": chain.partial_tokens,
            "hashes": hashes,
        });
        println!("{report}");
    } else {
        println!("namespace_id {namespace_id}");
        for (index, hash) in chain.hashes.iter().enumerate() {
            println!("block {index} {hash}");
        }
    }
    if chain.partial_tokens > 0 {
        eprintln!(
            "note: the last {} token(s) do not fill a block of {} and were not hashed",
            chain.partial_tokens, args.block_tokens
        );
    }
    Ok(())
}

fn read_secret(path: &PathBuf) -> Result<TenantSecret, HashError> {
    let mut bytes = fs::read(path).map_err(|source| HashError::Read {
        what: "secret file",
        path: path.display().to_string(),
        source,
    })?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    TenantSecret::new(bytes).map_err(format_error("bad secret file"))
}

fn read_input(path: Option<&PathBuf>) -> Result<String, HashError> {
    if let Some(path) = path {
        return fs::read_to_string(path).map_err(|source| HashError::Read {
            what: "input",
            path: path.display().to_string(),
            source,
        });
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|source| HashError::Read {
            what: "input",
            path: "<stdin>".to_owned(),
            source,
        })?;
    Ok(text)
}
