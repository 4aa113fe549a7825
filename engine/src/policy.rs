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
//! - [`Reuse`] (the default): reuse-aware LRU. A block's rank is its last
//!   use plus a bonus for how many requests named its key before, counted in
//!   a small history sketch keyed by fingerprint that outlives evictions (a
//!   block evicted and requested again comes back with its standing), and
//!   blocks the scheduler expects to read soon (a queued request's prefix,
//!   [`Policy::expect`]) rank above all others until that request is served.
//! - [`PrefixLru`] (the default before `reuse`): tail demotion and a reuse
//!   bonus on hits; selectable as `prefix-lru`.
//! - [`S3Fifo`]: the S3-FIFO policy of Yang et al. (SOSP '23):
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
    /// Prefix-aware LRU: tail demotion and a reuse bonus (the default until
    /// [`PolicyKind::Reuse`]).
    PrefixLru,
    /// S3-FIFO with leaf-first eviction.
    S3Fifo,
    /// Reuse-aware LRU with history and scheduler hints (the default).
    #[default]
    Reuse,
}

impl PolicyKind {
    /// Every kind, for reports.
    pub const ALL: [PolicyKind; 4] = [
        PolicyKind::Lru,
        PolicyKind::PrefixLru,
        PolicyKind::S3Fifo,
        PolicyKind::Reuse,
    ];

    /// A new, empty policy of this kind.
    pub fn build(self) -> Box<dyn Policy> {
        match self {
            PolicyKind::Lru => Box::new(Lru::default()),
            PolicyKind::PrefixLru => Box::new(PrefixLru::default()),
            PolicyKind::S3Fifo => Box::new(S3Fifo::default()),
            PolicyKind::Reuse => Box::new(Reuse::default()),
        }
    }

    /// `"lru"`, `"prefix-lru"`, `"s3fifo"` or `"reuse"`.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::PrefixLru => "prefix-lru",
            PolicyKind::S3Fifo => "s3fifo",
            PolicyKind::Reuse => "reuse",
        }
    }

    /// Parses a [`PolicyKind::name`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "lru" => Some(PolicyKind::Lru),
            "prefix-lru" => Some(PolicyKind::PrefixLru),
            "s3fifo" | "s3-fifo" => Some(PolicyKind::S3Fifo),
            "reuse" | "default" => Some(PolicyKind::Reuse),
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
    /// The scheduler expects to read a block soon (`soon`: a queued request
    /// names it) or no longer (`!soon`: that request was served or dropped).
    /// Calls nest; policies that use the hint keep such blocks over all
    /// others while any expectation is open. The default ignores it.
    fn expect(&mut self, _id: u32, _soon: bool) {}
    /// [`Policy::expect`] for a key not in the tier (its block is on SSD
    /// only, or not stored yet: a queued request names blocks that requests
    /// ahead of it will put), by fingerprint: the expectation waits for the
    /// key's insert. An expectation on a block that leaves goes back to
    /// waiting on its key, so `expect` and `expect_key` pair up whichever
    /// way the block moved in between.
    fn expect_key(&mut self, _fingerprint: u64, _soon: bool) {}
    /// Appends to `out` up to `count` blocks that [`Policy::victim`] would
    /// look at next, coldest first, without changing which blocks those are
    /// (a policy may tidy its own bookkeeping to find them): the engine
    /// picks one of them by size (and then calls [`Policy::remove`]). An
    /// approximation is fine; the default offers none, and the engine then
    /// evicts in plain policy order.
    fn peek(&mut self, _count: usize, _out: &mut Vec<u32>) {}
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

    fn peek(&mut self, count: usize, out: &mut Vec<u32>) {
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

    fn peek(&mut self, count: usize, out: &mut Vec<u32>) {
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

/// Rank offset of a block the scheduler expects soon: above every other.
const SOON_OFFSET: i64 = 1 << 56;

/// Smallest lap of [`Reuse`]'s bonus, in uses (for tiers of a few blocks).
const REUSE_LAP_MIN: usize = 64;

/// Keys [`History`] remembers per tracked block, and at least.
const HISTORY_PER_BLOCK: usize = 8;
const HISTORY_MIN: usize = 1 << 16;
/// Highest count of [`History`].
const HISTORY_COUNT_MAX: u8 = 15;

/// How many requests named each key, for keys whose blocks left the tier
/// (a cached block carries its own count): a map from the low 32 bits of
/// the fingerprint to a count (at most 15) and a flag for blocks that left
/// as tails, bounded to `max(HISTORY_MIN, HISTORY_PER_BLOCK × tracked)`
/// keys and forgetting the least recently added key first (a FIFO of keys,
/// as S3-FIFO's ghost queue). A block evicted and requested again comes
/// back with its count. About 13 bytes a key. Only inserts and evictions
/// touch it; a hit touches the block's own entry alone.
#[derive(Debug, Default)]
struct History {
    counts: HashMap<u32, u8>,
    order: VecDeque<u32>,
}

/// How many keys [`History`] (and [`Reuse`]'s other key maps) keep for a
/// tier of `tracked` blocks.
fn history_bound(tracked: usize) -> usize {
    tracked.saturating_mul(HISTORY_PER_BLOCK).max(HISTORY_MIN)
}

/// An open-expectation count after one more (`soon`) or one less.
fn nest(open: u16, soon: bool) -> u16 {
    if soon {
        open.saturating_add(1)
    } else {
        open.saturating_sub(1)
    }
}

/// [`History`]'s flag on a key whose block was evicted as a tail.
const HISTORY_TAIL: u8 = 0x80;

impl History {
    /// The 32-bit tag a fingerprint is remembered by.
    #[expect(clippy::cast_possible_truncation, reason = "a 32-bit tag of the key")]
    fn tag(fingerprint: u64) -> u32 {
        fingerprint as u32
    }

    /// The count remembered for `tag` (0 if none), and whether its block
    /// left as a tail (that flag is cleared: it is reported once).
    fn recall(&mut self, tag: u32) -> (u8, bool) {
        match self.counts.get_mut(&tag) {
            Some(count) => {
                let tail = *count & HISTORY_TAIL != 0;
                *count &= !HISTORY_TAIL;
                (*count, tail)
            }
            None => (0, false),
        }
    }

    /// Remembers that `tag`'s block left with `uses` (`tail`: as a tail).
    /// `tracked` (blocks in the tier) sizes the bound.
    fn remember(&mut self, tag: u32, uses: u8, tail: bool, tracked: usize) {
        let value = uses.min(HISTORY_COUNT_MAX) | if tail { HISTORY_TAIL } else { 0 };
        if let Some(count) = self.counts.get_mut(&tag) {
            *count = value;
            return;
        }
        self.counts.insert(tag, value);
        self.order.push_back(tag);
        let bound = history_bound(tracked);
        while self.order.len() > bound {
            if let Some(old) = self.order.pop_front() {
                self.counts.remove(&old);
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct ReuseEntry {
    rank: i64,
    /// [`History::tag`] of the block's fingerprint.
    tag: u32,
    /// Requests that named the key, this block's included (at most 15).
    uses: u8,
    /// Open expectations ([`Policy::expect`]).
    soon: u16,
    /// A new prompt's last block, demoted by a lap until it gets a child
    /// or a hit.
    tail: bool,
    /// The key it is filed under in `order` (while there): at most
    /// [`ReuseEntry::key`]. A hit raises the key without moving the entry;
    /// [`Reuse::settle`] moves it when it reaches the cold end.
    queued: i64,
}

impl ReuseEntry {
    fn key(&self) -> i64 {
        if self.soon > 0 {
            self.rank.saturating_add(SOON_OFFSET)
        } else {
            self.rank
        }
    }
}

/// Reuse-aware LRU (the default; see the module docs and
/// `docs/eviction.md`). A use ranks a block at `clock + u · W`, where
/// `clock` counts uses, `u` (at most 15) how many earlier requests named
/// the block's key (from [`History`]) and the lap `W` is the number of
/// blocks tracked (at least 64): a block named before outlives a pass over
/// the whole tier per earlier request. A block whose key was never named
/// before and that has no child is a new prompt's tail, ranked a lap lower
/// until it gets a child or a hit. Blocks
/// the scheduler expects ([`Policy::expect`], [`Policy::expect_key`]) rank
/// above all others. Ranks live in a `BTreeSet`; every operation is
/// `O(log n)`. Leaf-first like the others: a parent is parked while it has
/// children.
#[derive(Debug, Default)]
pub struct Reuse {
    entries: HashMap<u32, ReuseEntry>,
    order: std::collections::BTreeSet<(i64, u32)>,
    parked: HashSet<u32>,
    history: History,
    /// Open expectations of keys not in the tier, by [`History::tag`]
    /// (bounded like [`History`]; past it a new key's hint is dropped).
    expected: HashMap<u32, u16>,
    clock: i64,
    /// Tails evicted, and of those requested again while remembered
    /// (halved together every [`TAIL_SAMPLE`] evictions).
    tails_evicted: u32,
    tails_returned: u32,
}

/// After `entry`'s key changed: one that fell moves in `order` at once (if
/// filed there; a parked entry is filed again when unblocked), one that rose
/// stays where it was until [`Reuse::settle`] reaches it.
fn refile(order: &mut std::collections::BTreeSet<(i64, u32)>, id: u32, entry: &mut ReuseEntry) {
    let key = entry.key();
    if key < entry.queued {
        if order.remove(&(entry.queued, id)) {
            order.insert((key, id));
        }
        entry.queued = key;
    }
}

/// Evicted tails per halving of [`Reuse`]'s tail statistics.
const TAIL_SAMPLE: u32 = 4096;

impl Reuse {
    /// Whether new tails are demoted: while at most one in eight evicted
    /// tails was requested again (a prompt's last, partial block on the
    /// Mooncake traces: about 1 %). Where tails are continued (multi-turn
    /// traffic whose turns end on a block boundary), demoting them costs
    /// hits, and the policy stops.
    fn demote_tails(&self) -> bool {
        self.tails_returned.saturating_mul(8) <= self.tails_evicted
    }

    /// Notes that a block leaves; a tail's key is flagged in the history,
    /// and its open expectations wait on its key.
    fn leaving(&mut self, entry: ReuseEntry) {
        let tail = entry.tail;
        self.history
            .remember(entry.tag, entry.uses, tail, self.entries.len());
        if entry.soon > 0 {
            let waiting = self.expected.entry(entry.tag).or_default();
            *waiting = waiting.saturating_add(entry.soon);
        }
        if tail {
            self.tails_evicted += 1;
            if self.tails_evicted >= TAIL_SAMPLE {
                self.tails_evicted /= 2;
                self.tails_returned /= 2;
            }
        }
    }

    /// The bonus per earlier request: one pass over the blocks tracked
    /// (at least [`REUSE_LAP_MIN`]).
    fn lap(&self) -> i64 {
        i64::try_from(self.entries.len().max(REUSE_LAP_MIN)).unwrap_or(i64::MAX / 32)
    }

    /// The rank of a use now, for a key named by `uses` earlier requests.
    fn rank_now(&mut self, uses: u8) -> i64 {
        self.clock += 1;
        self.clock + self.lap() * i64::from(uses)
    }

    /// Changes an entry and moves it in `order` (unless parked).
    /// A key that rose stays filed where it was (see
    /// [`ReuseEntry::queued`]); one that fell moves at once.
    fn update(&mut self, id: u32, change: impl FnOnce(&mut ReuseEntry)) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        change(entry);
        refile(&mut self.order, id, entry);
    }

    /// Files the entries at the cold end of `order` under their current
    /// keys until its first `count` entries are in place: afterwards `order`
    /// begins exactly as if every rise had moved its entry at once. Each
    /// entry moves at most once per rise, so the work is what eager moves
    /// would have cost, paid only for entries that reach the cold end.
    fn settle(&mut self, count: usize) {
        let mut in_place = 0;
        let mut cursor: Option<(i64, u32)> = None;
        while in_place < count {
            let next = match cursor {
                None => self.order.first().copied(),
                Some(after) => self
                    .order
                    .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                    .next()
                    .copied(),
            };
            let Some((queued, id)) = next else {
                break;
            };
            match self.entries.get_mut(&id) {
                Some(entry) if entry.key() != queued => {
                    // Its key only rose: it files after `cursor`.
                    self.order.remove(&(queued, id));
                    entry.queued = entry.key();
                    self.order.insert((entry.queued, id));
                }
                _ => {
                    in_place += 1;
                    cursor = Some((queued, id));
                }
            }
        }
    }
}

impl Policy for Reuse {
    fn insert(&mut self, id: u32, fingerprint: u64) {
        self.remove(id);
        let tag = History::tag(fingerprint);
        let (uses, was_tail) = self.history.recall(tag);
        if was_tail {
            self.tails_returned += 1;
        }
        let mut rank = self.rank_now(uses);
        let tail = uses == 0 && self.demote_tails();
        if tail {
            // A key never named before with no child (yet): the last block
            // of a new prompt, on the Mooncake traces rarely reused. Ranked
            // as if used a lap earlier until it gets a child or a hit.
            rank -= self.lap();
        }
        let entry = ReuseEntry {
            rank,
            tag,
            uses: uses.saturating_add(1).min(HISTORY_COUNT_MAX),
            soon: self.expected.remove(&tag).unwrap_or(0),
            tail,
            queued: 0,
        };
        let entry = ReuseEntry {
            queued: entry.key(),
            ..entry
        };
        self.entries.insert(id, entry);
        self.order.insert((entry.queued, id));
    }

    fn access(&mut self, id: u32) {
        // On the lookup path: one hash probe and the move in `order`.
        let lap = self.lap();
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        self.clock += 1;
        entry.rank = self.clock + lap * i64::from(entry.uses);
        entry.uses = entry.uses.saturating_add(1).min(HISTORY_COUNT_MAX);
        entry.tail = false;
        // The key rose (the clock moved on): it stays filed where it was
        // until it reaches the cold end ([`Reuse::settle`]), so a hit is a
        // hash probe and a few stores. A lap that shrank may lower it.
        refile(&mut self.order, id, entry);
    }

    fn child_added(&mut self, id: u32) {
        let lap = self.lap();
        self.update(id, |entry| {
            if entry.tail {
                entry.tail = false;
                entry.rank += lap;
            }
        });
    }

    fn expect(&mut self, id: u32, soon: bool) {
        self.update(id, |entry| entry.soon = nest(entry.soon, soon));
    }

    fn expect_key(&mut self, fingerprint: u64, soon: bool) {
        let tag = History::tag(fingerprint);
        if soon
            && !self.expected.contains_key(&tag)
            && self.expected.len() >= history_bound(self.entries.len())
        {
            return;
        }
        let open = nest(self.expected.get(&tag).copied().unwrap_or(0), soon);
        if open == 0 {
            self.expected.remove(&tag);
        } else {
            self.expected.insert(tag, open);
        }
    }

    fn remove(&mut self, id: u32) {
        if let Some(entry) = self.entries.remove(&id) {
            self.order.remove(&(entry.queued, id));
            self.leaving(entry);
        }
        self.parked.remove(&id);
    }

    fn unblocked(&mut self, id: u32) {
        if self.parked.remove(&id)
            && let Some(entry) = self.entries.get_mut(&id)
        {
            entry.queued = entry.key();
            self.order.insert((entry.queued, id));
        }
    }

    fn peek(&mut self, count: usize, out: &mut Vec<u32>) {
        self.settle(count);
        out.extend(self.order.iter().take(count).map(|&(_, id)| id));
    }

    fn victim(&mut self, evictable: &mut dyn FnMut(u32) -> bool) -> Option<u32> {
        let id = loop {
            self.settle(1);
            if let Some((_, id)) = self.order.pop_first() {
                if evictable(id) {
                    break id;
                }
                self.parked.insert(id);
            } else {
                break take_parked(&mut self.parked, evictable)?;
            }
        };
        if let Some(entry) = self.entries.remove(&id) {
            self.leaving(entry);
        }
        Some(id)
    }

    fn len(&self) -> usize {
        self.entries.len()
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

    fn peek(&mut self, count: usize, out: &mut Vec<u32>) {
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
    fn reuse_keeps_keys_named_before_over_new_ones_even_after_eviction() {
        let mut policy = Reuse::default();
        for id in 0..4 {
            policy.insert(id, u64::from(id));
        }
        // All leave; the history remembers their keys.
        assert_eq!(drain(&mut policy, |_| true), vec![0, 1, 2, 3]);
        // Key 1 comes back under a new id, between two keys never seen.
        policy.insert(10, 100);
        policy.insert(11, 1);
        policy.insert(12, 101);
        assert_eq!(drain(&mut policy, |_| true), vec![10, 12, 11]);
        // A use ranks a block ahead of plain recency too.
        for id in 20..23 {
            policy.insert(id, u64::from(id) + 1000);
        }
        policy.access(20);
        assert_eq!(drain(&mut policy, |_| true), vec![21, 22, 20]);
    }

    #[test]
    fn reuse_stops_demoting_tails_when_evicted_tails_come_back() {
        let mut policy = Reuse::default();
        policy.insert(0, 1_000);
        assert!(policy.entries[&0].tail, "a new tail is demoted");
        assert_eq!(policy.victim(&mut |_| true), Some(0));
        // Tails that are requested again after they left (continued turns).
        for key in 0..64 {
            policy.insert(1, key);
            assert_eq!(policy.victim(&mut |_| true), Some(1));
            policy.insert(1, key);
            assert_eq!(policy.victim(&mut |_| true), Some(1));
        }
        assert!(!policy.demote_tails());
        policy.insert(2, 5_000);
        assert!(!policy.entries[&2].tail, "no longer demoted");
    }

    #[test]
    fn reuse_keeps_expected_blocks_until_the_expectation_closes() {
        let mut policy = Reuse::default();
        for id in 0..4 {
            policy.insert(id, u64::from(id));
        }
        policy.expect(0, true);
        policy.expect(0, true);
        policy.expect(1, true);
        policy.expect(1, false);
        // 0 is expected (twice): last; 1's expectation closed.
        let mut peeked = Vec::new();
        policy.peek(4, &mut peeked);
        assert_eq!(peeked, vec![1, 2, 3, 0]);
        policy.expect(0, false);
        assert_eq!(policy.victim(&mut |_| true), Some(1));
        policy.expect(0, false);
        assert_eq!(drain(&mut policy, |_| true), vec![0, 2, 3]);
        // Expecting a block that is not tracked changes nothing.
        policy.expect(42, true);
        assert!(policy.is_empty());
    }

    #[test]
    fn reuse_expectations_of_keys_not_in_the_tier_wait_for_their_insert() {
        let mut policy = Reuse::default();
        // A queued request names key 3 before anyone put it.
        policy.expect_key(3, true);
        for id in 0..4 {
            policy.insert(id, u64::from(id));
        }
        let mut peeked = Vec::new();
        policy.peek(4, &mut peeked);
        assert_eq!(peeked, vec![0, 1, 2, 3], "3 arrived expected: last");
        // The block leaves while expected: the expectation waits on its
        // key again, and comes back with it under any id.
        policy.remove(3);
        policy.insert(7, 3);
        peeked.clear();
        policy.peek(4, &mut peeked);
        assert_eq!(peeked.last(), Some(&7));
        // Closed by key while it was out: gone for good.
        policy.remove(7);
        policy.expect_key(3, false);
        assert!(policy.expected.is_empty());
        policy.insert(7, 3);
        assert_eq!(policy.entries[&7].soon, 0);
        // Closing what was never opened changes nothing.
        policy.expect_key(99, false);
        assert!(policy.expected.is_empty());
    }

    #[test]
    fn reuse_expectations_of_absent_keys_are_bounded() {
        let mut policy = Reuse::default();
        let bound = history_bound(0) as u64;
        for key in 0..bound + 10 {
            policy.expect_key(key, true);
        }
        assert_eq!(policy.expected.len() as u64, bound);
        // A key already waiting still nests past the bound.
        policy.expect_key(0, true);
        assert_eq!(policy.expected[&0], 2);
    }

    #[test]
    fn reuse_files_hits_lazily_and_still_evicts_in_exact_rank_order() {
        let mut policy = Reuse::default();
        for id in 0..40 {
            policy.insert(id, u64::from(id % 13));
        }
        // Hits, hints opened and closed, and a child added, in a fixed
        // pattern: ranks rise (filed lazily) and fall (moved at once).
        for round in 0..200u32 {
            let id = (round * 7) % 40;
            policy.access(id);
            if round % 5 == 0 {
                policy.expect(id, true);
            }
            if round % 11 == 0 {
                policy.expect((round * 3) % 40, false);
            }
            if round % 17 == 0 {
                policy.child_added(round % 40);
            }
        }
        let mut exact: Vec<(i64, u32)> = policy
            .entries
            .iter()
            .map(|(&id, entry)| (entry.key(), id))
            .collect();
        exact.sort_unstable();
        let mut peeked = Vec::new();
        policy.peek(10, &mut peeked);
        let coldest: Vec<u32> = exact.iter().take(10).map(|&(_, id)| id).collect();
        assert_eq!(peeked, coldest);
        let order: Vec<u32> = exact.iter().map(|&(_, id)| id).collect();
        assert_eq!(drain(&mut policy, |_| true), order);
    }

    #[test]
    fn history_remembers_counts_and_tails_and_forgets_the_oldest_keys_first() {
        let mut history = History::default();
        assert_eq!(History::tag(7 | 1 << 40), 7);
        assert_eq!(history.recall(7), (0, false));
        history.remember(7, 20, true, 0);
        assert_eq!(history.recall(7), (HISTORY_COUNT_MAX, true));
        assert_eq!(
            history.recall(7),
            (HISTORY_COUNT_MAX, false),
            "the flag is reported once"
        );
        // The bound grows with the tier: HISTORY_MIN keys for a small one.
        let min = u32::try_from(HISTORY_MIN).unwrap();
        for key in 0..min {
            history.remember(1_000 + key, 1, false, 0);
        }
        assert_eq!(
            history.recall(7),
            (0, false),
            "key 7 was the oldest and left"
        );
        assert_eq!(history.recall(1_000 + min - 1), (1, false));
        // A bigger tier remembers more keys.
        let tracked = HISTORY_MIN;
        for key in 0..min * 2 {
            history.remember((1 << 20) + key, 2, false, tracked);
        }
        assert_eq!(history.recall(1 << 20), (2, false));
        assert_eq!(history.recall(1_000), (1, false));
        assert!(history.order.len() <= tracked * HISTORY_PER_BLOCK);
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
        let mut reuse = Reuse::default();
        for id in 0..6 {
            lru.insert(id, u64::from(id));
            prefix.insert(id, u64::from(id));
            s3.insert(id, u64::from(id));
            reuse.insert(id, u64::from(id));
        }
        lru.access(0);
        prefix.access(0);
        s3.access(0);
        reuse.access(0);
        for policy in [
            &mut lru as &mut dyn Policy,
            &mut prefix,
            &mut s3,
            &mut reuse,
        ] {
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
