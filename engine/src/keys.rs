//! Encryption at rest of the SSD tier: the key hierarchy, the wrapped data
//! keys in the index, and sealed block records. `formats/SPEC.md` sections
//! 10.1 and 16.1 define every byte; this module follows them, and its tests
//! pin the vectors of `formats/tests/vectors/encryption.json`.
//!
//! - The **master key** (32 bytes, one per node) comes from a file or the
//!   environment and is never stored beside the data. The index keeps only a
//!   check value derived from it (`keys/master`), so a wrong key is refused
//!   at open, before the log is recovered or anything is written.
//! - Every namespace generation gets a random 256-bit **data key** when it
//!   is created. It is stored only *wrapped*: sealed with AES-256-GCM under a
//!   key-encryption key (KEK) that HKDF-SHA256 derives from the master key,
//!   the tenant's name and the namespace id, in `dk/<namespace id>`.
//!   Dropping the namespace deletes that entry, synced, before anything
//!   else: with it goes the only copy of the data key, and every record
//!   sealed under it is noise from then on (crypto-erasure), long before
//!   reclaim overwrites it.
//! - **Block records** are sealed under the data key: the block header and
//!   parent hash stay readable (recovery and fsck need them) and are the
//!   associated data; the KV bytes become `nonce || ciphertext || tag`. A
//!   nonce is the node's *nonce epoch*, raised and synced at every open, and
//!   a counter of this open: no nonce is ever used twice under any key.
//!   Reclaim copies sealed bytes unchanged (same key, nonce and plaintext),
//!   which reuses nothing.
//! - Rotating the master key re-wraps the data keys ([`rotate_master_key`],
//!   on a stopped node, one atomic index write); no record is rewritten.
//!
//! DRAM holds plaintext (pages and data keys): see SPEC 16.1 for what this
//! protects against and what it does not.
//!
//! Threads: a [`Keyring`] is shared by the engine's threads. Its data keys
//! sit behind an `RwLock` held for map lookups and inserts only, never
//! across I/O; the nonce counter is an atomic. Changes of a namespace's key
//! (create, drop) are serialised by the engine, not here.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use pagoda_formats::block::{BLOCK_RECORD_OVERHEAD, SEAL_NONCE_BYTES, SEAL_TAG_BYTES};
use pagoda_formats::namespace::{Namespace, NamespaceId};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use crate::dir_lock::DirLock;
use crate::error::{Error, Result};
use crate::index::Index;

/// Bytes of a master key.
pub const MASTER_KEY_BYTES: usize = 32;
/// Bytes of a data key.
pub const DATA_KEY_BYTES: usize = 32;
/// Bytes of a wrapped data key (the value of `dk/<namespace id>`).
pub const WRAPPED_KEY_BYTES: usize = 76;
/// Bytes of the master key check (the value of `keys/master`).
pub const MASTER_CHECK_BYTES: usize = 40;

/// `meta` key of the master key check.
pub const MASTER_CHECK_KEY: &[u8] = b"keys/master";
/// `meta` key of the nonce epoch (u32 LE).
pub const NONCE_EPOCH_KEY: &[u8] = b"keys/nonce-epoch";
/// `meta` key prefix of wrapped data keys (then the 32-byte namespace id).
pub const DATA_KEY_PREFIX: &[u8] = b"dk/";

/// HKDF-Extract salt of every key derived from the master key.
const KDF_SALT: &[u8] = b"pagoda 2026-12-02 master key salt v1";
/// HKDF-Expand info label of key-encryption keys.
const KEK_INFO: &[u8] = b"pagoda 2026-12-02 key-encryption key v1";
/// HKDF-Expand info of the master key check value.
const CHECK_INFO: &[u8] = b"pagoda 2026-12-02 master key check v1";
/// Format version of wrapped keys and of the master key check.
const KEYS_VERSION: u16 = 1;
/// Algorithm code of AES-256-GCM (wrapped keys, and the records they seal).
const ALGORITHM_AES_256_GCM: u8 = 1;

/// The sealed bytes of a record begin here: header, parent hash, nonce.
const SEALED_START: usize = BLOCK_RECORD_OVERHEAD + SEAL_NONCE_BYTES;

/// A node's master key. Its bytes never leave the process; `Debug` hides
/// them.
#[derive(Clone)]
pub struct MasterKey([u8; MASTER_KEY_BYTES]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// HKDF output lengths of 32 bytes.
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl MasterKey {
    /// A master key of these bytes.
    pub fn from_bytes(bytes: [u8; MASTER_KEY_BYTES]) -> Self {
        MasterKey(bytes)
    }

    /// A new random master key (from the operating system's RNG).
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; MASTER_KEY_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::Keys("the system RNG failed".into()))?;
        Ok(MasterKey(bytes))
    }

    /// Parses a key file's content: exactly 32 raw bytes, or 64 hex digits
    /// (either case) with surrounding ASCII whitespace ignored.
    pub fn parse(content: &[u8]) -> Result<Self> {
        let looks_hex = |bytes: &[u8]| bytes.iter().all(u8::is_ascii_hexdigit);
        if content.len() == MASTER_KEY_BYTES {
            if looks_hex(content) {
                return Err(Error::Keys(
                    "the master key is 32 hex digits (16 bytes); it must be 32 bytes: \
                     32 raw bytes or 64 hex digits"
                        .into(),
                ));
            }
            let mut bytes = [0u8; MASTER_KEY_BYTES];
            bytes.copy_from_slice(content);
            return Ok(MasterKey(bytes));
        }
        let text = content.trim_ascii();
        if text.len() == 2 * MASTER_KEY_BYTES && looks_hex(text) {
            let decoded = pagoda_formats::hex::decode(
                std::str::from_utf8(text).map_err(|_| Error::Keys("not UTF-8".into()))?,
            )
            .map_err(|error| Error::Keys(format!("the master key's hex: {error}")))?;
            let bytes = <[u8; MASTER_KEY_BYTES]>::try_from(decoded.as_slice())
                .map_err(|_| Error::Keys("the master key is not 32 bytes".into()))?;
            return Ok(MasterKey(bytes));
        }
        Err(Error::Keys(format!(
            "a master key is 32 raw bytes or 64 hex digits, not {} bytes",
            content.len()
        )))
    }

    /// Reads a key file ([`MasterKey::parse`]). Warns when the file can be
    /// read by its group or others.
    pub fn from_file(path: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let content = std::fs::read(path).map_err(Error::io(format!(
            "reading the master key file {}",
            path.display()
        )))?;
        if let Ok(metadata) = std::fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(),
                "the master key file is readable by its group or others; chmod 600 it");
        }
        Self::parse(&content).map_err(|error| match error {
            Error::Keys(reason) => Error::Keys(format!("{}: {reason}", path.display())),
            other => other,
        })
    }

    /// The key as 64 lower-case hex digits (what `pagoda keys generate`
    /// writes).
    pub fn to_hex(&self) -> String {
        pagoda_formats::hex::encode(&self.0)
    }

    fn prk(&self) -> hkdf::Prk {
        hkdf::Salt::new(hkdf::HKDF_SHA256, KDF_SALT).extract(&self.0)
    }

    fn expand(&self, info: &[&[u8]]) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.prk()
            .expand(info, Len32)
            .and_then(|okm| okm.fill(&mut out))
            .expect("32 bytes is within HKDF-SHA256's output limit");
        out
    }

    /// The check value stored in the index (SPEC 16.1): it identifies the
    /// key without revealing it.
    pub fn check_value(&self) -> [u8; 32] {
        self.expand(&[CHECK_INFO])
    }

    /// The key-encryption key of one namespace's data keys (SPEC 16.1).
    pub fn kek_bytes(&self, tenant: &str, namespace: &NamespaceId) -> [u8; 32] {
        let tenant = tenant.as_bytes();
        let len = [u8::try_from(tenant.len()).expect("tenant names are at most 63 bytes")];
        self.expand(&[KEK_INFO, &len, tenant, namespace.as_bytes()])
    }

    fn kek(&self, tenant: &str, namespace: &NamespaceId) -> LessSafeKey {
        aead_key(&self.kek_bytes(tenant, namespace))
    }
}

fn aead_key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256 keys are 32 bytes"))
}

/// A namespace generation's data key: what seals its block records.
pub struct DataKey {
    generation: u64,
    bytes: [u8; DATA_KEY_BYTES],
    key: LessSafeKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// A data key of these bytes for `generation`.
    pub fn from_bytes(generation: u64, bytes: [u8; DATA_KEY_BYTES]) -> Self {
        DataKey {
            generation,
            bytes,
            key: aead_key(&bytes),
        }
    }

    /// The namespace generation the key belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The associated data of a wrapped key: its first 16 bytes (version,
/// algorithm, reserved, generation), then the namespace id.
fn wrap_aad(head: &[u8], namespace: &NamespaceId) -> [u8; 48] {
    let mut aad = [0u8; 48];
    aad[..16].copy_from_slice(head);
    aad[16..].copy_from_slice(namespace.as_bytes());
    aad
}

/// Wraps `key` for `dk/<namespace>` (SPEC 16.1). `nonce` must be fresh
/// (random); each wrap of a KEK is a new one.
pub fn wrap_data_key(
    master: &MasterKey,
    tenant: &str,
    namespace: &NamespaceId,
    key: &DataKey,
    nonce: [u8; SEAL_NONCE_BYTES],
) -> [u8; WRAPPED_KEY_BYTES] {
    let mut out = [0u8; WRAPPED_KEY_BYTES];
    out[0..2].copy_from_slice(&KEYS_VERSION.to_le_bytes());
    out[2] = ALGORITHM_AES_256_GCM;
    out[8..16].copy_from_slice(&key.generation.to_le_bytes());
    out[16..28].copy_from_slice(&nonce);
    out[28..60].copy_from_slice(&key.bytes);
    let aad = wrap_aad(&out[..16], namespace);
    let (_, sealed) = out.split_at_mut(28);
    let (body, tag) = sealed.split_at_mut(DATA_KEY_BYTES);
    let computed = master
        .kek(tenant, namespace)
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
        .expect("AES-GCM seals 32 bytes");
    tag.copy_from_slice(computed.as_ref());
    out
}

/// Unwraps a `dk/<namespace>` value (SPEC 16.1). Fails when the value is
/// malformed, or does not open under this master key (another key, or an
/// altered entry).
pub fn unwrap_data_key(
    master: &MasterKey,
    tenant: &str,
    namespace: &NamespaceId,
    wrapped: &[u8],
) -> Result<DataKey> {
    let ns = pagoda_formats::hex::encode(namespace.as_bytes());
    let bad = |reason: &str| Error::Keys(format!("wrapped data key of namespace {ns}: {reason}"));
    let wrapped: &[u8; WRAPPED_KEY_BYTES] = wrapped.try_into().map_err(|_| {
        bad(&format!(
            "{} bytes, expected {WRAPPED_KEY_BYTES}",
            wrapped.len()
        ))
    })?;
    if u16::from_le_bytes([wrapped[0], wrapped[1]]) != KEYS_VERSION {
        return Err(bad("unsupported version"));
    }
    if wrapped[2] != ALGORITHM_AES_256_GCM {
        return Err(bad("unknown algorithm"));
    }
    if wrapped[3..8].iter().any(|&byte| byte != 0) {
        return Err(bad("non-zero reserved bytes"));
    }
    let generation = u64::from_le_bytes(wrapped[8..16].try_into().expect("8 bytes"));
    let nonce: [u8; SEAL_NONCE_BYTES] = wrapped[16..28].try_into().expect("12 bytes");
    let aad = wrap_aad(&wrapped[..16], namespace);
    let mut sealed = wrapped[28..].to_vec();
    let opened = master
        .kek(tenant, namespace)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut sealed,
        )
        .map_err(|_| {
            bad("it does not open under this master key (another key, or the entry was altered)")
        })?;
    let bytes: [u8; DATA_KEY_BYTES] = (&*opened).try_into().expect("32 bytes opened");
    Ok(DataKey::from_bytes(generation, bytes))
}

/// The nonce of a sealed record: the nonce epoch, then the counter.
pub fn record_nonce(epoch: u32, counter: u64) -> [u8; SEAL_NONCE_BYTES] {
    let mut nonce = [0u8; SEAL_NONCE_BYTES];
    nonce[..4].copy_from_slice(&epoch.to_le_bytes());
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce
}

/// Seals a block record in place (SPEC 10.1). `record` holds the record
/// prefix (header with the `ENCRYPTED` flag, parent hash), the nonce and
/// the plaintext KV bytes; the KV bytes are encrypted where they lie and
/// the tag is appended: no copy.
pub fn seal_block_record(key: &DataKey, record: &mut Vec<u8>) -> Result<()> {
    if record.len() < SEALED_START {
        return Err(Error::InvalidArgument(
            "a record to seal is shorter than its header, parent and nonce".into(),
        ));
    }
    let (head, body) = record.split_at_mut(SEALED_START);
    let (aad, nonce) = head.split_at(BLOCK_RECORD_OVERHEAD);
    let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12 bytes");
    let tag = key
        .key
        .seal_in_place_separate_tag(nonce, Aad::from(aad), body)
        .map_err(|_| Error::InvalidArgument("a block too large for AES-GCM".into()))?;
    record.extend_from_slice(tag.as_ref());
    Ok(())
}

/// The tag of a sealed record did not verify: its bytes (header, parent,
/// nonce, ciphertext or tag) are not what was sealed under the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagMismatch;

impl fmt::Display for TagMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AEAD tag mismatch: the sealed record was altered (tampering or corruption)")
    }
}

/// Opens a sealed block record in place (SPEC 10.1): verifies the tag over
/// header, parent hash and ciphertext, and decrypts. Returns where the
/// plaintext KV bytes lie in `record` (the tag's bytes after them are
/// garbage then). On a mismatch nothing is returned and the ciphertext may
/// be left half-decrypted: callers drop it.
pub fn open_block_record(
    key: &DataKey,
    record: &mut [u8],
) -> std::result::Result<Range<usize>, TagMismatch> {
    if record.len() < SEALED_START + SEAL_TAG_BYTES {
        return Err(TagMismatch);
    }
    let (head, body) = record.split_at_mut(SEALED_START);
    let (aad, nonce) = head.split_at(BLOCK_RECORD_OVERHEAD);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TagMismatch)?;
    let plaintext = key
        .key
        .open_in_place(nonce, Aad::from(aad), body)
        .map_err(|_| TagMismatch)?;
    Ok(SEALED_START..SEALED_START + plaintext.len())
}

/// The `meta` key of a namespace's wrapped data key.
pub fn data_key_key(namespace: &NamespaceId) -> Vec<u8> {
    let mut key = DATA_KEY_PREFIX.to_vec();
    key.extend_from_slice(namespace.as_bytes());
    key
}

/// The value of `keys/master`: version, reserved, check value.
fn master_check(master: &MasterKey) -> [u8; MASTER_CHECK_BYTES] {
    let mut out = [0u8; MASTER_CHECK_BYTES];
    out[..2].copy_from_slice(&KEYS_VERSION.to_le_bytes());
    out[8..].copy_from_slice(&master.check_value());
    out
}

/// Whether `stored` (a `keys/master` value) is `master`'s check. Compares
/// every byte whatever the first difference.
fn master_matches(master: &MasterKey, stored: &[u8]) -> Result<bool> {
    if stored.len() != MASTER_CHECK_BYTES
        || stored.get(..2) != Some(&KEYS_VERSION.to_le_bytes()[..])
    {
        return Err(Error::Keys(format!(
            "the index's master key check ({} bytes) does not decode",
            stored.len()
        )));
    }
    let expected = master_check(master);
    let difference = expected
        .iter()
        .zip(stored)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    Ok(difference == 0)
}

/// The data keys of an open data directory, and its nonce source.
pub(crate) struct Keyring {
    master: MasterKey,
    nonce_epoch: u32,
    counter: AtomicU64,
    rng: SystemRandom,
    data: RwLock<HashMap<NamespaceId, Arc<DataKey>>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("nonce_epoch", &self.nonce_epoch)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Opens the keys of the data directory `dir` whose index is `index`:
    /// without a master key, `None` (encryption off) unless the index holds
    /// keys ([`Error::MasterKeyRequired`]); with one, checks it against the
    /// stored check ([`Error::WrongMasterKey`]; the first open stores it)
    /// and raises the nonce epoch, synced, before any record is sealed.
    pub(crate) fn open(
        index: &Index,
        master: Option<&MasterKey>,
        dir: &Path,
    ) -> Result<Option<Keyring>> {
        let check = index.get_meta(MASTER_CHECK_KEY)?;
        let Some(master) = master else {
            if check.is_some() || !index.meta_with_prefix(DATA_KEY_PREFIX)?.is_empty() {
                return Err(Error::MasterKeyRequired {
                    dir: dir.to_path_buf(),
                });
            }
            tracing::info!(
                "encryption at rest is off (no master key given): SSD blocks are stored in plaintext"
            );
            return Ok(None);
        };
        let mut writes: Vec<(&[u8], Vec<u8>)> = Vec::new();
        match check {
            Some(stored) if master_matches(master, &stored)? => {}
            Some(_) => {
                return Err(Error::WrongMasterKey {
                    dir: dir.to_path_buf(),
                });
            }
            None => writes.push((MASTER_CHECK_KEY, master_check(master).to_vec())),
        }
        let epoch = match index.get_meta(NONCE_EPOCH_KEY)? {
            None => 0,
            Some(bytes) => u32::from_le_bytes(bytes.as_slice().try_into().map_err(|_| {
                Error::Keys(format!("the nonce epoch is {} bytes, not 4", bytes.len()))
            })?),
        };
        let nonce_epoch = epoch
            .checked_add(1)
            .filter(|&epoch| epoch < u32::MAX)
            .ok_or_else(|| {
                Error::Keys(
                    "the nonce epochs are used up (2^32 opens): rotate to new data keys".into(),
                )
            })?;
        writes.push((NONCE_EPOCH_KEY, nonce_epoch.to_le_bytes().to_vec()));
        let puts: Vec<(&[u8], &[u8])> = writes
            .iter()
            .map(|(key, value)| (*key, value.as_slice()))
            .collect();
        index.write_meta(&puts, &[], true)?;
        Ok(Some(Keyring {
            master: master.clone(),
            nonce_epoch,
            counter: AtomicU64::new(0),
            rng: SystemRandom::new(),
            data: RwLock::new(HashMap::new()),
        }))
    }

    /// A fresh record nonce.
    pub(crate) fn next_nonce(&self) -> [u8; SEAL_NONCE_BYTES] {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        assert!(counter < u64::MAX, "2^64 records sealed in one open");
        record_nonce(self.nonce_epoch, counter)
    }

    /// The data key of `namespace` at `generation`, if the namespace has
    /// it (it does not once dropped).
    pub(crate) fn data_key(
        &self,
        namespace: &NamespaceId,
        generation: u64,
    ) -> Option<Arc<DataKey>> {
        self.data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .filter(|key| key.generation == generation)
            .cloned()
    }

    /// A new random data key for `namespace` at `generation`, and its
    /// wrapped form; not installed until [`Keyring::install`].
    pub(crate) fn new_data_key(
        &self,
        namespace: &Namespace,
        generation: u64,
    ) -> Result<(Arc<DataKey>, [u8; WRAPPED_KEY_BYTES])> {
        let mut bytes = [0u8; DATA_KEY_BYTES];
        let mut nonce = [0u8; SEAL_NONCE_BYTES];
        self.rng
            .fill(&mut bytes)
            .and_then(|()| self.rng.fill(&mut nonce))
            .map_err(|_| Error::Keys("the system RNG failed".into()))?;
        let key = DataKey::from_bytes(generation, bytes);
        let wrapped = wrap_data_key(
            &self.master,
            namespace.tenant(),
            &namespace.id(),
            &key,
            nonce,
        );
        Ok((Arc::new(key), wrapped))
    }

    /// Makes `key` the data key of `namespace`.
    pub(crate) fn install(&self, namespace: NamespaceId, key: Arc<DataKey>) {
        self.data
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(namespace, key);
    }

    /// Forgets the data key of `namespace` (after its wrapped copy is gone).
    pub(crate) fn forget(&self, namespace: &NamespaceId) {
        self.data
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(namespace);
    }

    /// Unwraps a stored data key of `namespace` with this node's master key.
    pub(crate) fn unwrap(&self, namespace: &Namespace, wrapped: &[u8]) -> Result<DataKey> {
        unwrap_data_key(&self.master, namespace.tenant(), &namespace.id(), wrapped)
    }

    /// Data keys held.
    pub(crate) fn len(&self) -> usize {
        self.data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The namespaces of an index's registry, by id (dropped ones included).
fn registry(index: &Index) -> Result<HashMap<NamespaceId, Namespace>> {
    let mut out = HashMap::new();
    for (key, value) in index.meta_with_prefix(pagoda_formats::registry::NAMESPACE_KEY_PREFIX)? {
        let namespace = crate::index::decode_namespace_record(&key, &value)?.namespace;
        out.insert(namespace.id(), namespace);
    }
    Ok(out)
}

/// Every wrapped data key of an index, unwrapped with `master`: (namespace,
/// its data key), or the reason one does not unwrap. For offline tools
/// (fsck, key rotation, tests); takes no lock itself.
pub fn unwrap_all(
    index: &Index,
    master: &MasterKey,
) -> Result<Vec<(NamespaceId, std::result::Result<DataKey, String>)>> {
    let namespaces = registry(index)?;
    let mut out = Vec::new();
    for (key, value) in index.meta_with_prefix(DATA_KEY_PREFIX)? {
        let id = key
            .get(DATA_KEY_PREFIX.len()..)
            .and_then(|id| <[u8; 32]>::try_from(id).ok())
            .map(NamespaceId)
            .ok_or_else(|| Error::BadIndexEntry {
                reason: format!("data key entry {key:02x?} does not name a namespace"),
            })?;
        let unwrapped = match namespaces.get(&id) {
            None => Err("no namespace record names it".to_owned()),
            Some(namespace) => unwrap_data_key(master, namespace.tenant(), &id, &value)
                .map_err(|error| error.to_string()),
        };
        out.push((id, unwrapped));
    }
    Ok(out)
}

/// Checks `master` against the index's master key check: `Ok(false)` when
/// the index has none (never encrypted).
pub fn verify_master_key(index: &Index, master: &MasterKey, dir: &Path) -> Result<bool> {
    match index.get_meta(MASTER_CHECK_KEY)? {
        None => Ok(false),
        Some(stored) if master_matches(master, &stored)? => Ok(true),
        Some(_) => Err(Error::WrongMasterKey {
            dir: dir.to_path_buf(),
        }),
    }
}

/// What a master key rotation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Data keys re-wrapped under the new master key.
    pub rewrapped: usize,
}

/// Rotates the master key of the stopped data directory `dir` (`pagoda keys
/// rotate`): checks `old` against the index, unwraps every data key with it,
/// re-wraps each under `new` (fresh nonces) and writes them with `new`'s
/// check in one atomic, synced index write; then purges the old wrapped
/// copies from the index's files ([`Index::purge_meta`]). No record is
/// rewritten. Takes the data directory lock. Fails, changing nothing, when
/// `old` is not the directory's key or a data key does not unwrap.
pub fn rotate_master_key(dir: &Path, old: &MasterKey, new: &MasterKey) -> Result<Rotation> {
    let index_dir = dir.join("index");
    if !index_dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a Pagoda data directory (no index/)",
            dir.display()
        )));
    }
    let _lock = DirLock::acquire(dir)?;
    let index = Index::open(&index_dir)?;
    if !verify_master_key(&index, old, dir)? {
        return Err(Error::InvalidArgument(format!(
            "{} is not encrypted at rest (its index holds no master key check)",
            dir.display()
        )));
    }
    let namespaces = registry(&index)?;
    let rng = SystemRandom::new();
    let mut rewrapped = Vec::new();
    for (id, unwrapped) in unwrap_all(&index, old)? {
        let key = unwrapped.map_err(|reason| {
            Error::Keys(format!(
                "namespace {}: {reason}; nothing was rotated",
                pagoda_formats::hex::encode(id.as_bytes())
            ))
        })?;
        let tenant = namespaces
            .get(&id)
            .map(|namespace| namespace.tenant().to_owned())
            .expect("unwrap_all only unwraps registered namespaces");
        let mut nonce = [0u8; SEAL_NONCE_BYTES];
        rng.fill(&mut nonce)
            .map_err(|_| Error::Keys("the system RNG failed".into()))?;
        rewrapped.push((
            data_key_key(&id),
            wrap_data_key(new, &tenant, &id, &key, nonce).to_vec(),
        ));
    }
    let check = master_check(new);
    let mut puts: Vec<(&[u8], &[u8])> = rewrapped
        .iter()
        .map(|(key, value)| (key.as_slice(), value.as_slice()))
        .collect();
    puts.push((MASTER_CHECK_KEY, &check));
    index.write_meta(&puts, &[], true)?;
    index.purge_meta()?;
    tracing::info!(
        rewrapped = rewrapped.len(),
        "master key rotated: data keys re-wrapped"
    );
    Ok(Rotation {
        rewrapped: rewrapped.len(),
    })
}

#[cfg(test)]
mod tests;
