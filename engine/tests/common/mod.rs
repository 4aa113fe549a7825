//! Helpers shared by the engine's integration tests.
#![allow(dead_code, reason = "each test file uses a subset")]

use std::path::{Path, PathBuf};

use pagoda_engine::{Engine, EngineOptions, TenantConfig};
use pagoda_formats::chain::{ChainHash, TenantSecret};
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace, NamespaceId};

/// A directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "pagoda-engine-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn layout(block_tokens: u32) -> KvLayout {
    KvLayout {
        dtype: Dtype::F16,
        kind: KvKind::SeparateKv,
        layer_count: 2,
        kv_head_count: 2,
        head_dim: 4,
        block_tokens,
        tp_rank: 0,
        tp_size: 1,
    }
}

pub(crate) fn namespace(tenant: &str, revision: &str) -> Namespace {
    Namespace::new(tenant, "llama", revision, layout(16)).unwrap()
}

pub(crate) fn tenant(name: &str) -> TenantConfig {
    let secret = format!("secret of {name} ............");
    TenantConfig::new(name, TenantSecret::new(secret.into_bytes()).unwrap())
}

/// Deterministic payload bytes for (seed, len).
pub(crate) fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A synthetic chain hash: (chain, position).
pub(crate) fn hash(chain: u64, position: u64) -> ChainHash {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&chain.to_le_bytes());
    bytes[8..16].copy_from_slice(&position.to_le_bytes());
    bytes[31] = 1;
    ChainHash(bytes)
}

/// The chain `hash(chain, 0..len)`.
pub(crate) fn chain(id: u64, len: u64) -> Vec<ChainHash> {
    (0..len).map(|position| hash(id, position)).collect()
}

/// Puts a chain's blocks in order, each with `payload(seed_of(hash), len)`.
pub(crate) fn put_chain(engine: &Engine, ns: &NamespaceId, hashes: &[ChainHash], len: usize) {
    let mut parent = ChainHash::ROOT;
    for hash in hashes {
        let bytes = payload_for(hash, len);
        engine
            .put(ns, &parent, hash, &bytes, crc32c::crc32c(&bytes))
            .unwrap();
        parent = *hash;
    }
}

pub(crate) fn payload_for(hash: &ChainHash, len: usize) -> Vec<u8> {
    payload(
        u64::from_le_bytes(hash.0[..8].try_into().unwrap())
            ^ u64::from_le_bytes(hash.0[8..16].try_into().unwrap()) << 20,
        len,
    )
}

pub(crate) fn memory_options(dram_bytes: u64, page_bytes: usize) -> EngineOptions {
    EngineOptions {
        page_bytes,
        maintenance_interval: None,
        tenants: vec![tenant("acme"), tenant("globex")],
        ..EngineOptions::in_memory(dram_bytes)
    }
}

pub(crate) fn disk_options(dir: &Path, dram_bytes: u64, page_bytes: usize) -> EngineOptions {
    let mut options = EngineOptions::on_disk(dir);
    options.dram_bytes = dram_bytes;
    options.page_bytes = page_bytes;
    options.maintenance_interval = None;
    options.tenants = vec![tenant("acme"), tenant("globex")];
    options.wal.segment_bytes = 1 << 20;
    options
}
