//! Eviction policies of the DRAM tier, pluggable behind [`Policy`].
//!
//! A policy orders the blocks of one tenant (each tenant has its own
//! instance, so one tenant's traffic never decides another's evictions) by
//! block id and proposes victims. The engine tells it about inserts and
//! accesses and asks for a victim with a predicate: a block that is pinned,
//! or whose removal would break prefix closure (it has cached children and no
//! copy on SSD), is not evictable, and the policy must pass over it.
//!
//! The engine touches the blocks of a matched prefix deepest first, so a
//! parent is always more recent than its children: recency-ordered policies
//! then find leaves at their cold end and evict leaf-first without searching.
//!
//! - [`Lru`]: least recently used, an intrusive doubly linked list over block
//!   ids. Mooncake's policy (approximate LRU at a 90 % watermark).
//! - [`S3Fifo`] (the default): the S3-FIFO policy of Yang et al. (SOSP '23):
//!   a small probationary FIFO (10 % of the blocks) that new blocks enter, a
//!   main FIFO for blocks that were reused while on probation, a ghost list
//!   of recently evicted ids that lets a block seen again go straight to main,
//!   and a two-bit reuse counter that gives hot blocks another lap of main.
//!   One-hit wonders (most blocks of a KVCache trace: a prompt's unshared
//!   tail) leave after a short probation instead of pushing hot prefixes out,
//!   which is what makes it scan-resistant. Blocks with cached children are
//!   hot by construction and go to main.

use std::collections::VecDeque;

/// Maps and sets keyed by the engine's block ids (or fingerprints): foldhash,
/// seeded per process, instead of SipHash (policy calls sit on the lookup
/// path, one per block).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Which policy a tenant's DRAM tier uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Least recently used.
    Lru,
    /// Prefix-aware LRU: tail demotion and a reuse bonus (the default).
    #[default]
    PrefixLru,
    /// S3-FIFO with leaf-first eviction.
    S3Fifo,
}

impl PolicyKind {
    /// Every kind, for reports.
    pub const ALL: [PolicyKind; 3] = [PolicyKind::Lru, PolicyKind::PrefixLru, PolicyKind::S3Fifo];

    /// A new, empty policy of this kind.
    pub fn build(self) -> Box<dyn Policy> {
        match self {
            PolicyKind::Lru => Box::new(Lru::default()),
            PolicyKind::PrefixLru => Box::new(PrefixLru::default()),
            PolicyKind::S3Fifo => Box::new(S3Fifo::default()),
        }
    }

    /// `"lru"`, `"prefix-lru"` or `"s3fifo"`.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::PrefixLru => "prefix-lru",
            PolicyKind::S3Fifo => "s3fifo",
        }
    }

    /// Parses a [`PolicyKind::name`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "lru" => Some(PolicyKind::Lru),
            "prefix-lru" | "default" => Some(PolicyKind::PrefixLru),
            "s3fifo" | "s3-fifo" => Some(PolicyKind::S3Fifo),
            _ => None,
        }
    }
}

/// An eviction policy over block ids.
pub trait Policy: Send + std::fmt::Debug {
    /// A block entered the tier. `fingerprint` identifies its key across
    /// removals (policies with ghost lists remember it).
    fn insert(&mut self, id: u32, fingerprint: u64);
    /// A cached block was used.
    fn access(&mut self, id: u32);
    /// A block left the tier for a reason other than [`Policy::victim`].
    fn remove(&mut self, id: u32);
    /// Picks a block to evict among those `evictable` accepts and forgets it;
    /// `None` when no block is evictable.
    fn victim(&mut self, evictable: &mut dyn FnMut(u32) -> bool) -> Option<u32>;
    /// A block the policy passed over as not evictable (it had cached
    /// children, or was pinned) may be evictable now. Policies park such
    /// blocks instead of cycling them, and put them back as the next
    /// candidates when told: a cold chain then leaves leaf to root in one
    /// pass, and hot blocks do not lose their standing to the cycling.
    fn unblocked(&mut self, id: u32);
    /// A block got its first cached child (it is a parent now, not a tail).
    fn child_added(&mut self, _id: u32) {}
    /// Appends to `out` up to `count` blocks that [`Policy::victim`] would
    /// look at next, coldest first, without changing anything: the engine
    /// picks one of them by size (and then calls [`Policy::remove`]). An
    /// approximation is fine; the default offers none, and the engine then
    /// evicts in plain policy order.
    fn peek(&self, _count: usize, _out: &mut Vec<u32>) {}
    /// Blocks tracked.
    fn len(&self) -> usize;
    /// Whether no block is tracked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const NIL: u32 = u32::MAX;

/// Least recently used.
#[derive(Debug)]
pub struct Lru {
    /// id → (towards older, towards newer).
    links: HashMap<u32, (u32, u32)>,
    newest: u32,
    oldest: u32,
    parked: HashSet<u32>,
}

impl Default for Lru {
    fn default() -> Self {
        Lru {
            links: HashMap::default(),
            newest: NIL,
            oldest: NIL,
            parked: HashSet::default(),
        }
    }
}

impl Lru {
    fn unlink(&mut self, id: u32) -> bool {
        let Some((older, newer)) = self.links.remove(&id) else {
            return false;
        };
        match self.links.get_mut(&older) {
            Some(link) => link.1 = newer,
            None => self.oldest = newer,
        }
        match self.links.get_mut(&newer) {
            Some(link) => link.0 = older,
            None => self.newest = older,
        }
        true
    }

    fn push_oldest(&mut self, id: u32) {
        let previous = self.oldest;
        if let Some(link) = self.links.get_mut(&previous) {
            link.0 = id;
        } else {
            self.newest = id;
        }
        self.links.insert(id, (NIL, previous));
        self.oldest = id;
    }

    fn push_newest(&mut self, id: u32) {
        let previous = self.newest;
        if let Some(link) = self.links.get_mut(&previous) {
            link.1 = id;
        } else {
            self.oldest = id;
        }
        self.links.insert(id, (previous, NIL));
        self.newest = id;
    }
}

impl Policy for Lru {
    fn insert(&mut self, id: u32, _fingerprint: u64) {
        self.remove(id);
        self.push_newest(id);
    }

    fn access(&mut self, id: u32) {
        if self.unlink(id) || self.parked.remove(&id) {
            self.push_newest(id);
        }
    }

    fn remove(&mut self, id: u32) {
        self.unlink(id);
        self.parked.remove(&id);
    }

    fn unblocked(&mut self, id: u32) {
        if self.parked.remove(&id) {
            self.push_oldest(id);
        }
    }

    fn peek(&self, count: usize, out: &mut Vec<u32>) {
        let mut at = self.oldest;
        for _ in 0..count {
            let Some(&(_, newer)) = self.links.get(&at) else {
                break;
            };
            out.push(at);
            at = newer;
        }
    }

    fn victim(&mut self, evictable: &mut dyn FnMut(u32) -> bool) -> Option<u32> {
        while self.oldest != NIL {
            let at = self.oldest;
            self.unlink(at);
            if evictable(at) {
                return Some(at);
            }
            self.parked.insert(at);
        }
        take_parked(&mut self.parked, evictable)
    }

    fn len(&self) -> usize {
        self.links.len() + self.parked.len()
    }
}

/// Offset that ranks a never-extended, never-reused block below all others.
const TAIL_OFFSET: i64 = 1 << 48;

/// Leaf-first LRU made prefix-aware (the default), found by replaying the
/// Mooncake traces (`pagoda bench policies`):
///
/// - *tail demotion*: a block enters ranked below every other block until it
///   gets a child or a hit. The last block of a prompt is such a tail (and
///   usually partial in token terms); it is reused a few percent of the time
///   against 25–45 % for the blocks before it, so it should leave first. A
///   burst of unique prompts evicts its own tails before anything reused.
/// - *reuse bonus*: a hit ranks a block a quarter of the tier's block count
///   ahead of plain recency, so a block reused once outlives a scan of up to
///   that many new blocks.
/// - *leaf-first*: a block with cached children is parked, not cycled, and
///   comes back with its rank when its last child leaves.
///
/// Ranks are kept in a `BTreeSet`; every operation is `O(log n)`.
#[derive(Debug, Default)]
pub struct PrefixLru {
    ranks: HashMap<u32, i64>,
    order: std::collections::BTreeSet<(i64, u32)>,
    parked: HashSet<u32>,
    clock: i64,
}

impl PrefixLru {
    fn set_rank(&mut self, id: u32, rank: i64) {
        if let Some(old) = self.ranks.insert(id, rank)
            && self.order.remove(&(old, id))
        {
            self.order.insert((rank, id));
        }
    }
}

impl Policy for PrefixLru {
    fn insert(&mut self, id: u32, _fingerprint: u64) {
        self.remove(id);
        self.clock += 1;
        let rank = self.clock - TAIL_OFFSET;
        self.ranks.insert(id, rank);
        self.order.insert((rank, id));
    }

    fn access(&mut self, id: u32) {
        if !self.ranks.contains_key(&id) {
            return;
        }
        self.clock += 1;
        let bonus = i64::try_from(self.ranks.len() / 4).unwrap_or(i64::MAX / 4);
        self.set_rank(id, self.clock + bonus);
    }

    fn child_added(&mut self, id: u32) {
        if let Some(&rank) = self.ranks.get(&id)
            && rank < 0
        {
            self.set_rank(id, rank + TAIL_OFFSET);
        }
    }

    fn remove(&mut self, id: u32) {
        if let Some(rank) = self.ranks.remove(&id) {
            self.order.remove(&(rank, id));
        }
        self.parked.remove(&id);
    }

    fn unblocked(&mut self, id: u32) {
        if self.parked.remove(&id)
            && let Some(&rank) = self.ranks.get(&id)
        {
            self.order.insert((rank, id));
        }
    }

    fn peek(&self, count: usize, out: &mut Vec<u32>) {
        out.extend(self.order.iter().take(count).map(|&(_, id)| id));
    }

    fn victim(&mut self, evictable: &mut dyn FnMut(u32) -> bool) -> Option<u32> {
        while let Some((rank, id)) = self.order.pop_first() {
            if evictable(id) {
                self.ranks.remove(&id);
                return Some(id);
            }
            let _ = rank;
            self.parked.insert(id);
        }
        let id = take_parked(&mut self.parked, evictable)?;
        self.ranks.remove(&id);
        Some(id)
    }

    fn len(&self) -> usize {
        self.ranks.len()
    }
}

/// Highest value of the reuse counter.
const FREQ_MAX: u8 = 3;

/// Queue positions [`S3Fifo::peek`] looks at per block asked for.
const PEEK_SCAN_FACTOR: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Entry {
    freq: u8,
    in_main: bool,
    fingerprint: u64,
    /// Which queue position is current (older positions are skipped).
    stamp: u32,
}

/// S3-FIFO with leaf-first eviction (see the module docs).
#[derive(Debug, Default)]
pub struct S3Fifo {
    entries: HashMap<u32, Entry>,
    small: VecDeque<(u32, u32)>,
    main: VecDeque<(u32, u32)>,
    small_len: usize,
    ghost: VecDeque<u64>,
    ghost_set: HashSet<u64>,
    next_stamp: u32,
    parked: HashSet<u32>,
}

impl S3Fifo {
    /// Share of blocks on probation, in percent.
    pub const SMALL_PERCENT: usize = 10;

    fn stamp(&mut self) -> u32 {
        self.next_stamp = self.next_stamp.wrapping_add(1);
        self.next_stamp
    }

    fn enqueue(&mut self, id: u32, main: bool) {
        let stamp = self.stamp();
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let was_small = !entry.in_main;
        entry.in_main = main;
        entry.stamp = stamp;
        if main {
            self.main.push_back((id, stamp));
            if was_small {
                self.small_len = self.small_len.saturating_sub(1);
            }
        } else {
            self.small.push_back((id, stamp));
        }
    }

    fn remember_ghost(&mut self, fingerprint: u64) {
        if self.ghost_set.insert(fingerprint) {
            self.ghost.push_back(fingerprint);
        }
        let bound = self.entries.len().max(16);
        while self.ghost.len() > bound {
            if let Some(old) = self.ghost.pop_front() {
                self.ghost_set.remove(&old);
            }
        }
    }

    /// Pops the next current position of a queue.
    fn pop(&mut self, main: bool) -> Option<u32> {
        loop {
            let queue = if main {
                &mut self.main
            } else {
                &mut self.small
            };
            let (id, stamp) = queue.pop_front()?;
            if self
                .entries
                .get(&id)
                .is_some_and(|entry| entry.stamp == stamp && entry.in_main == main)
            {
                return Some(id);
            }
        }
    }
}

impl Policy for S3Fifo {
    fn insert(&mut self, id: u32, fingerprint: u64) {
        self.remove(id);
        let to_main = self.ghost_set.remove(&fingerprint);
        self.entries.insert(
            id,
            Entry {
                freq: 0,
                in_main: false,
                fingerprint,
                stamp: 0,
            },
        );
        if to_main {
            self.enqueue(id, true);
        } else {
            self.small_len += 1;
            self.enqueue(id, false);
        }
    }

    fn access(&mut self, id: u32) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.freq = (entry.freq + 1).min(FREQ_MAX);
        }
    }

    fn remove(&mut self, id: u32) {
        if let Some(entry) = self.entries.remove(&id)
            && !entry.in_main
            && !self.parked.contains(&id)
        {
            self.small_len = self.small_len.saturating_sub(1);
        }
        self.parked.remove(&id);
    }

    fn peek(&self, count: usize, out: &mut Vec<u32>) {
        // Blocks without reuse at the heads of the queues, the one `victim`
        // pops first leading: those it would evict without another lap.
        let small_target = (self.entries.len() * Self::SMALL_PERCENT / 100).max(1);
        let small_first = self.small_len >= small_target || self.main.is_empty();
        let (first, second) = if small_first {
            ((&self.small, false), (&self.main, true))
        } else {
            ((&self.main, true), (&self.small, false))
        };
        // Stale positions and reused blocks are skipped, within a bound.
        let mut budget = count.saturating_mul(PEEK_SCAN_FACTOR);
        for (queue, main) in [first, second] {
            for &(id, stamp) in queue {
                if out.len() >= count || budget == 0 {
                    return;
                }
                budget -= 1;
                let cold = self.entries.get(&id).is_some_and(|entry| {
                    entry.stamp == stamp && entry.in_main == main && entry.freq == 0
                });
                if cold {
                    out.push(id);
                }
            }
        }
    }

    fn unblocked(&mut self, id: u32) {
        if self.parked.remove(&id) {
            let stamp = self.stamp();
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.in_main = true;
                entry.stamp = stamp;
                self.main.push_front((id, stamp));
            }
        }
    }

    fn victim(&mut self, evictable: &mut dyn FnMut(u32) -> bool) -> Option<u32> {
        // Each block is looked at most a few times (its counter drops by one
        // per lap of main), so this loop ends; the budget only guards
        // against a tier where nothing is evictable.
        let mut budget = 2 * (usize::from(FREQ_MAX) + 2) * self.entries.len() + 16;
        while budget > 0 {
            budget -= 1;
            let small_target = (self.entries.len() * Self::SMALL_PERCENT / 100).max(1);
            let from_small = self.small_len >= small_target || self.main.is_empty();
            let Some(id) = self.pop(!from_small).or_else(|| self.pop(from_small)) else {
                break;
            };
            let entry = *self.entries.get(&id)?;
            if entry.freq == 0 && !evictable(id) {
                // Cold but holding children (or pinned): wait for `unblocked`.
                if !entry.in_main {
                    self.small_len = self.small_len.saturating_sub(1);
                }
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.in_main = true;
                    entry.stamp = 0;
                }
                self.parked.insert(id);
                continue;
            }
            if !entry.in_main {
                if entry.freq > 0 || !evictable(id) {
                    if let Some(entry) = self.entries.get_mut(&id) {
                        entry.freq = 0;
                    }
                    self.enqueue(id, true);
                    continue;
                }
                self.entries.remove(&id);
                self.small_len = self.small_len.saturating_sub(1);
                self.remember_ghost(entry.fingerprint);
                return Some(id);
            }
            if entry.freq > 0 || !evictable(id) {
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.freq = entry.freq.saturating_sub(1);
                }
                self.enqueue(id, true);
                continue;
            }
            self.entries.remove(&id);
            return Some(id);
        }
        let id = take_parked(&mut self.parked, evictable)?;
        self.entries.remove(&id);
        Some(id)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The first parked block that became evictable without a notice.
fn take_parked(parked: &mut HashSet<u32>, evictable: &mut dyn FnMut(u32) -> bool) -> Option<u32> {
    let id = parked.iter().copied().find(|&id| evictable(id))?;
    parked.remove(&id);
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(policy: &mut dyn Policy, evictable: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut check = |id| evictable(id);
        while let Some(id) = policy.victim(&mut check) {
            out.push(id);
        }
        out
    }

    #[test]
    fn lru_evicts_least_recent_first_and_skips_what_is_not_evictable() {
        let mut lru = Lru::default();
        for id in 0..5 {
            lru.insert(id, u64::from(id));
        }
        lru.access(0);
        lru.remove(3);
        assert_eq!(drain(&mut lru, |id| id != 2), vec![1, 4, 0]);
        assert_eq!(lru.len(), 1);
    }

    #[test]
    fn prefix_lru_evicts_tails_first_and_keeps_reused_blocks() {
        let mut policy = PrefixLru::default();
        // A chain 0 -> 1 -> 2 inserted in order: 0 and 1 get children.
        for id in 0..3 {
            policy.insert(id, 0);
            if id > 0 {
                policy.child_added(id - 1);
            }
        }
        policy.insert(10, 0); // a lone tail, newer than the chain
        policy.access(0);
        // The tails go first (oldest first), then plain recency; reused last.
        assert_eq!(drain(&mut policy, |_| true), vec![2, 10, 1, 0]);
        // Parked parents come back when unblocked.
        policy.insert(5, 0);
        policy.insert(6, 0);
        policy.child_added(5);
        assert_eq!(policy.victim(&mut |id| id != 5), Some(6));
        assert_eq!(policy.victim(&mut |id| id != 5), None);
        policy.unblocked(5);
        assert_eq!(policy.victim(&mut |_| true), Some(5));
        assert!(policy.is_empty());
    }

    #[test]
    fn s3fifo_keeps_reused_blocks_over_a_scan() {
        let mut policy = S3Fifo::default();
        for id in 0..10 {
            policy.insert(id, u64::from(id));
            policy.access(id);
        }
        // A scan of one-hit wonders: each insert is followed by one eviction.
        let mut evicted = Vec::new();
        for id in 100..200 {
            policy.insert(id, u64::from(id));
            evicted.extend(policy.victim(&mut |_| true));
        }
        assert!(evicted.iter().all(|id| *id >= 100), "{evicted:?}");
        // A ghost hit goes straight to main.
        policy.insert(500, 198);
        assert!(policy.entries[&500].in_main);
    }

    #[test]
    fn peek_offers_the_next_victims_coldest_first_and_changes_nothing() {
        let mut lru = Lru::default();
        let mut prefix = PrefixLru::default();
        let mut s3 = S3Fifo::default();
        for id in 0..6 {
            lru.insert(id, u64::from(id));
            prefix.insert(id, u64::from(id));
            s3.insert(id, u64::from(id));
        }
        lru.access(0);
        prefix.access(0);
        s3.access(0);
        for policy in [&mut lru as &mut dyn Policy, &mut prefix, &mut s3] {
            let mut peeked = Vec::new();
            policy.peek(3, &mut peeked);
            assert_eq!(peeked, vec![1, 2, 3], "{policy:?}");
            // Peeking again sees the same; the victims come in that order.
            let mut again = Vec::new();
            policy.peek(3, &mut again);
            assert_eq!(again, peeked);
            let victims: Vec<u32> = (0..3)
                .filter_map(|_| policy.victim(&mut |_| true))
                .collect();
            assert_eq!(victims, peeked, "{policy:?}");
        }
    }

    #[test]
    fn s3fifo_never_returns_a_block_that_is_not_evictable() {
        let mut policy = S3Fifo::default();
        for id in 0..50 {
            policy.insert(id, u64::from(id));
        }
        let victims = drain(&mut policy, |id| id % 7 != 0);
        assert_eq!(victims.len(), 42);
        assert!(victims.iter().all(|id| id % 7 != 0));
        assert_eq!(policy.len(), 8);
    }
}
