//! Replaying request traces in the Mooncake format into a real engine, to
//! compare eviction policies by prefix hit ratio.
//!
//! A trace is JSON Lines; each request carries `hash_ids`, one id per
//! 512-token block, prefix-chained (block i's id names the whole prefix
//! through block i). [`parse_trace`] reads just those ids. [`replay`] drives
//! a DRAM-only [`Engine`] whose pool holds exactly `capacity` one-page blocks:
//! per request a prefix lookup (the leading hits count), then puts of the
//! missing blocks in chain order. [`belady`] computes the offline optimum
//! under the same rules (prefix hits only, leaf-first): it evicts the cached
//! leaf whose next use is furthest away.

use std::collections::{BTreeSet, HashMap};

use pagoda_formats::chain::{ChainHash, TenantSecret};
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::options::{EngineOptions, TenantConfig};
use crate::policy::PolicyKind;

/// One request of a trace: its block ids in prefix order.
pub type Request = Vec<u64>;

/// The `hash_ids` of every request of a Mooncake-format trace (read by
/// [`pagoda_formats::trace::parse_trace`], the one reader of the format).
pub fn parse_trace(text: &str) -> Result<Vec<Request>> {
    pagoda_formats::trace::parse_trace(text)
        .map(|requests| {
            requests
                .into_iter()
                .map(|request| request.hash_ids)
                .collect()
        })
        .map_err(|error| Error::InvalidArgument(error.to_string()))
}

/// Hits and lookups of a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HitCount {
    /// Blocks found by prefix lookups.
    pub hits: u64,
    /// Blocks looked up.
    pub blocks: u64,
}

impl HitCount {
    /// Hits over blocks.
    pub fn ratio(&self) -> f64 {
        if self.blocks == 0 {
            0.0
        } else {
            self.hits as f64 / self.blocks as f64
        }
    }
}

/// The chain hash standing for a trace's block id.
pub fn trace_hash(id: u64) -> ChainHash {
    let mut bytes = [0u8; 32];
    if let Some(head) = bytes.get_mut(..8) {
        head.copy_from_slice(&id.to_le_bytes());
    }
    if let Some(last) = bytes.last_mut() {
        *last = 0x5a;
    }
    ChainHash(bytes)
}

/// A DRAM-only engine whose pool holds `capacity` one-page blocks: a cache
/// of trace blocks with the engine's real lookup, prefix closure and
/// eviction (used by [`replay`] and by `pagoda replay`'s prefill instances).
#[derive(Debug)]
pub struct BlockCache {
    engine: Engine,
    ns: crate::NamespaceInfo,
}

/// Bytes of one block (and page) of a [`BlockCache`].
const CACHE_PAGE: usize = 64;

impl BlockCache {
    /// A cache of `capacity` blocks evicting by `policy`.
    pub fn new(capacity: u64, policy: PolicyKind) -> Result<BlockCache> {
        let secret = TenantSecret::new(b"trace replay secret".to_vec())?;
        let options = EngineOptions {
            page_bytes: CACHE_PAGE,
            policy,
            maintenance_interval: None,
            tenants: vec![TenantConfig::new("trace", secret)],
            ..EngineOptions::in_memory(capacity.max(1) * CACHE_PAGE as u64)
        };
        let engine = Engine::open(options)?;
        let layout = KvLayout {
            dtype: Dtype::F16,
            kind: KvKind::SeparateKv,
            layer_count: 1,
            kv_head_count: 1,
            head_dim: 16,
            block_tokens: 512,
            tp_rank: 0,
            tp_size: 1,
        };
        let namespace = Namespace::new("trace", "mooncake", "fast25", layout)?;
        let id = engine.create_namespace(&namespace)?;
        let ns = engine
            .namespace(&id)
            .ok_or_else(|| Error::UnknownNamespace("trace".into()))?;
        Ok(BlockCache { engine, ns })
    }

    /// Leading blocks of `hashes` cached (a lookup: it counts as a use).
    pub fn matched(&self, hashes: &[ChainHash]) -> Result<usize> {
        Ok(self.engine.lookup(&self.ns.id, hashes)?.matched)
    }

    /// Tells the policy that the blocks of `hashes` are about to be
    /// read (`soon`) or no longer ([`Engine::expect`]).
    pub fn expect(&self, hashes: &[ChainHash], soon: bool) -> Result<usize> {
        self.engine.expect(&self.ns.id, hashes, soon)
    }

    /// Stores `hashes[from..]`, each the child of the one before, as far as
    /// they fit (a chain longer than the cache is cached in part).
    pub fn store(&self, hashes: &[ChainHash], from: usize) -> Result<()> {
        let payload = [0x5au8; CACHE_PAGE];
        let crc = crc32c::crc32c(&payload);
        let mut parent = from
            .checked_sub(1)
            .and_then(|at| hashes.get(at))
            .copied()
            .unwrap_or(ChainHash::ROOT);
        for hash in hashes.iter().skip(from) {
            match self.engine.put(&self.ns.id, &parent, hash, &payload, crc) {
                Ok(crate::engine::PutOutcome::Stored | crate::engine::PutOutcome::Exists) => {}
                Ok(_) | Err(Error::ResourceExhausted(_)) => break,
                Err(error) => return Err(error),
            }
            parent = *hash;
        }
        Ok(())
    }
}

/// Replays `requests` into a DRAM-only engine holding `capacity` blocks
/// (`None`: unbounded) with `policy`; returns the prefix hits.
pub fn replay(requests: &[Request], capacity: Option<u64>, policy: PolicyKind) -> Result<HitCount> {
    replay_queued(requests, capacity, policy, 0)
}

/// [`replay`] with a scheduler queue of `queued` requests: each request is
/// known `queued` requests before it is served, and its blocks are
/// announced to the policy then ([`BlockCache::expect`]: those cached at
/// once, the others when a request ahead puts them) and released when it is
/// served — what a Conductor with that many requests waiting knows.
pub fn replay_queued(
    requests: &[Request],
    capacity: Option<u64>,
    policy: PolicyKind,
    queued: usize,
) -> Result<HitCount> {
    let unique = requests
        .iter()
        .flatten()
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    let cache = BlockCache::new(capacity.unwrap_or(unique), policy)?;
    let chains: Vec<Vec<ChainHash>> = requests
        .iter()
        .map(|request| request.iter().map(|id| trace_hash(*id)).collect())
        .collect();
    for hashes in chains.iter().take(queued) {
        cache.expect(hashes, true)?;
    }
    let mut count = HitCount::default();
    for (index, hashes) in chains.iter().enumerate() {
        if queued > 0 {
            cache.expect(hashes, false)?;
            if let Some(arriving) = chains.get(index + queued) {
                cache.expect(arriving, true)?;
            }
        }
        let matched = cache.matched(hashes)?;
        count.hits += matched as u64;
        count.blocks += hashes.len() as u64;
        cache.store(hashes, matched)?;
    }
    Ok(count)
}

/// The offline optimum (Belady's MIN under prefix closure): on a miss the
/// missing blocks are inserted, and while over capacity the cached leaf whose
/// next use is furthest in the future is evicted.
pub fn belady(requests: &[Request], capacity: u64) -> HitCount {
    let next_use = next_uses(requests);
    let mut parent: HashMap<u64, Option<u64>> = HashMap::new();
    let mut children: HashMap<u64, u32> = HashMap::new();
    let mut next_of: HashMap<u64, u64> = HashMap::new();
    // Leaves ordered by next use (furthest last).
    let mut leaves: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut count = HitCount::default();
    for (index, request) in requests.iter().enumerate() {
        let mut matched = 0;
        while request
            .get(matched)
            .is_some_and(|id| next_of.contains_key(id))
        {
            matched += 1;
        }
        count.hits += matched as u64;
        count.blocks += request.len() as u64;
        for (position, id) in request.iter().enumerate() {
            let next = next_use
                .get(index)
                .and_then(|row| row.get(position))
                .copied()
                .unwrap_or(u64::MAX);
            if let Some(old) = next_of.get(id).copied() {
                if children.get(id).copied().unwrap_or(0) == 0 {
                    leaves.remove(&(old, *id));
                    leaves.insert((next, *id));
                }
                next_of.insert(*id, next);
                continue;
            }
            if position > matched
                && !request
                    .get(position - 1)
                    .is_some_and(|p| next_of.contains_key(p))
            {
                break;
            }
            let up = position
                .checked_sub(1)
                .and_then(|at| request.get(at))
                .copied();
            if let Some(up) = up {
                let entry = children.entry(up).or_insert(0);
                if *entry == 0 {
                    leaves.remove(&(next_of.get(&up).copied().unwrap_or(0), up));
                }
                *entry += 1;
            }
            parent.insert(*id, up);
            next_of.insert(*id, next);
            leaves.insert((next, *id));
            evict_furthest(
                capacity,
                &mut leaves,
                &mut next_of,
                &mut parent,
                &mut children,
            );
        }
    }
    count
}

/// Next use of each (request, position) occurrence: the index of the next
/// request holding the same block, `u64::MAX` when none does.
fn next_uses(requests: &[Request]) -> Vec<Vec<u64>> {
    // Next use of each (request, position) occurrence.
    let mut next_use: Vec<Vec<u64>> = requests.iter().map(|r| vec![u64::MAX; r.len()]).collect();
    let mut last_seen: HashMap<u64, u64> = HashMap::new();
    for (index, request) in requests.iter().enumerate().rev() {
        for (position, id) in request.iter().enumerate() {
            if let Some(slot) = next_use
                .get_mut(index)
                .and_then(|row| row.get_mut(position))
            {
                *slot = last_seen.get(id).copied().unwrap_or(u64::MAX);
            }
        }
        for id in request {
            last_seen.insert(*id, index as u64);
        }
    }
    next_use
}

/// [`belady`]'s eviction: while more than `capacity` blocks are cached, the
/// cached leaf whose next use is furthest goes; a parent whose last cached
/// child went becomes a leaf.
fn evict_furthest(
    capacity: u64,
    leaves: &mut BTreeSet<(u64, u64)>,
    next_of: &mut HashMap<u64, u64>,
    parent: &mut HashMap<u64, Option<u64>>,
    children: &mut HashMap<u64, u32>,
) {
    while next_of.len() as u64 > capacity {
        let Some(&(victim_next, victim)) = leaves.iter().next_back() else {
            break;
        };
        leaves.remove(&(victim_next, victim));
        next_of.remove(&victim);
        if let Some(Some(up)) = parent.remove(&victim)
            && let Some(entry) = children.get_mut(&up)
        {
            *entry -= 1;
            if *entry == 0
                && let Some(up_next) = next_of.get(&up)
            {
                leaves.insert((*up_next, up));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_parse_and_bad_lines_are_errors() {
        let line = |ids: &str| {
            format!(
                "{{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [{ids}]}}\n"
            )
        };
        let text = format!("{}\n{}", line("0, 1, 2"), line(""));
        let text = text.as_str();
        assert_eq!(parse_trace(text).unwrap(), vec![vec![0, 1, 2], vec![]]);
        assert!(parse_trace(&line("1, x")).is_err());
        assert!(parse_trace("{\"timestamp\": 1}").is_err());
    }

    #[test]
    fn small_replays_count_prefix_hits() {
        let requests = vec![vec![0, 1, 2], vec![0, 1, 3], vec![0, 4], vec![0, 1, 2]];
        for policy in [PolicyKind::Lru, PolicyKind::S3Fifo] {
            let unbounded = replay(&requests, None, policy).unwrap();
            assert_eq!((unbounded.hits, unbounded.blocks), (6, 11));
        }
        assert_eq!(belady(&requests, 100).hits, 6);
        // Two blocks: only the shared root and one more can stay.
        assert!(
            belady(&requests, 2).hits >= replay(&requests, Some(2), PolicyKind::Lru).unwrap().hits
        );
    }
}
