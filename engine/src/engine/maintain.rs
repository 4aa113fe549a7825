//! Maintenance: the periodic pass, the thread that runs it, and the DRAM
//! pool's free-page reserve.
//!
//! One pass ([`Inner::maintain`]), under the maintenance lock: queued index
//! deletes, expired leases, a bounded sweep of blocks of dropped
//! generations, a refill of the free-page reserve, then (with an SSD tier)
//! segment reclaim and the index checkpoint. The maintenance lock
//! serialises passes and checkpoints, so a checkpoint never passes a
//! reclaim's copies before they are indexed.
//!
//! **The free-page reserve** ([`Inner::refill_reserve`]): eviction ahead of
//! demand, so that a put finds its pages free instead of evicting, and
//! writing demotions to SSD, on its own time. When fewer than
//! `reserve_low_pages` pages are free beyond those promised, a refill
//! evicts through the policy and admission ([`Inner::make_room`],
//! [`Inner::demote`]) until `reserve_high_pages` are, in batches of at most
//! `REFILL_BATCH_VICTIMS` victims per hold of the state lock, with the
//! batch's demotions written between holds. Blocks whose pages readers hold
//! are passed over. One refill runs at a time (`refilling`); it needs no
//! maintenance lock, so a nudged refill never waits behind a checkpoint.
//!
//! The thread holds the engine weakly: it never keeps a dropped engine
//! alive, and stops when asked or when the engine closes. It runs a pass
//! every period, and a refill alone when nudged ([`Inner::nudge_if_low`]:
//! a put or promotion that leaves the pool under the low watermark). A
//! refill that cannot reach the low watermark (everything left is pinned
//! or being read) stalls the nudges until the next pass, so a full pool of
//! pinned blocks does not turn every put into a scan of the policy. A full
//! disk fails every pass until space returns; it is logged once.
//!
//! May touch: through the modules it calls; itself only the sweep's cursor,
//! the blocks of dead generations and `refilling`.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::tiering::Room;
use super::{Engine, Inner};
use crate::error::Result;
use crate::options::limits;
use crate::state::Released;
use crate::stats::NsCounters;

/// What the maintenance thread is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Signal {
    /// The engine closes: stop.
    Stop,
    /// The pool is under the reserve's low watermark: refill it now.
    Refill,
}

impl Engine {
    /// One maintenance pass: releases expired leases, frees blocks of dropped
    /// namespaces (a bounded batch), refills the DRAM pool's free-page
    /// reserve, reclaims the oldest value-log segment when the SSD tier is
    /// over its high watermark, and writes the index checkpoint. The
    /// background thread calls it periodically.
    pub fn maintain(&self) -> Result<()> {
        self.inner.maintain()
    }
}

impl Inner {
    /// The maintenance lock: held by maintenance passes (reclaim, sweeps)
    /// and by every checkpoint.
    pub(super) fn maintenance_lock(&self) -> MutexGuard<'_, ()> {
        self.maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn maintain(&self) -> Result<()> {
        let _serial = self.maintenance_lock();
        self.drain_index_deletes();
        self.expire_leases();
        self.sweep();
        self.refill_reserve();
        if self.ssd.is_some() {
            self.reclaim()?;
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Free pages beyond those promised to puts and promotions in flight.
    fn available_pages(&self) -> usize {
        self.pool
            .free_pages()
            .saturating_sub(self.reserved_pages.load(Ordering::Acquire))
    }

    /// Wakes the maintenance thread for a refill when the pool is under the
    /// reserve's low watermark. Never blocks: a wake-up already queued
    /// stands for this one.
    pub(super) fn nudge_if_low(&self) {
        if let Some(signal) = &self.maintenance_signal
            && self.available_pages() < self.reserve_low_pages
        {
            let _ = signal.try_send(Signal::Refill);
        }
    }

    /// Refills the free-page reserve when it is under its low watermark
    /// (see the module docs); returns whether the low watermark holds
    /// afterwards (or another refill is under way).
    pub(super) fn refill_reserve(&self) -> bool {
        let (low, high) = (self.reserve_low_pages, self.reserve_high_pages);
        if self.available_pages() >= low {
            return true;
        }
        let Some(refilling) = Refilling::begin(&self.refilling) else {
            return true;
        };
        NsCounters::bump(&self.eviction.refills);
        for _ in 0..limits::REFILL_BATCHES_MAX {
            if self.available_pages() >= high {
                break;
            }
            let eviction = {
                let mut state = self.lock();
                self.make_room(&mut state, Room::refill(high))
            };
            let Ok(eviction) = eviction else { break };
            let victims = eviction.victims;
            self.demote(eviction.demotions);
            if victims == 0 {
                break;
            }
        }
        drop(refilling);
        let refilled = self.available_pages() >= low;
        tracing::debug!(
            free_pages = self.pool.free_pages(),
            low,
            high,
            refilled,
            "refilled the DRAM free-page reserve"
        );
        if let Some(hook) = &self.options.hook {
            hook(crate::options::HookPoint::ReserveRefilled);
        }
        refilled
    }

    /// Frees a batch of blocks of dropped namespace generations.
    fn sweep(&self) {
        let mut released = Released::default();
        {
            let mut state = self.lock();
            let len = state.slab.len();
            if len == 0 || !state.dead_pending {
                return;
            }
            for _ in 0..limits::SWEEP_BATCH.min(len) {
                let id = u32::try_from(state.sweep_cursor % len).expect("slab ids are u32");
                state.sweep_cursor = (state.sweep_cursor + 1) % len;
                let meta = state.meta(id);
                if meta.flags & crate::state::LIVE != 0 && !state.is_current(id) {
                    state.remove_dead(id, &mut released);
                    state.sweep_found = true;
                }
                if state.sweep_cursor == 0 {
                    // A whole cycle: done when it found nothing left.
                    state.dead_pending = std::mem::take(&mut state.sweep_found);
                }
            }
        }
        self.finish_release(released);
    }
}

/// The one refill under way: holds `refilling` set until dropped.
struct Refilling<'a>(&'a std::sync::atomic::AtomicBool);

impl<'a> Refilling<'a> {
    /// `None` when another refill is under way.
    fn begin(flag: &'a std::sync::atomic::AtomicBool) -> Option<Self> {
        (!flag.swap(true, Ordering::AcqRel)).then_some(Refilling(flag))
    }
}

impl Drop for Refilling<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Starts the maintenance thread, which receives on `channel`'s receiver;
/// returns its sender (to stop it) and handle.
pub(super) fn spawn_maintenance(
    inner: &Arc<Inner>,
    (signal, signals): (SyncSender<Signal>, Receiver<Signal>),
) -> (SyncSender<Signal>, JoinHandle<()>) {
    let weak = Arc::downgrade(inner);
    let period = inner
        .options
        .maintenance_interval
        .expect("a maintenance channel only with a period");
    let handle = std::thread::Builder::new()
        .name("pagoda-maintain".into())
        .spawn(move || maintenance_loop(&weak, &signals, period))
        .expect("spawning the maintenance thread");
    (signal, handle)
}

/// The maintenance thread: a pass every `period`, a refill of the reserve
/// alone when nudged (unless the last one stalled), until told to stop.
fn maintenance_loop(inner: &std::sync::Weak<Inner>, signals: &Receiver<Signal>, period: Duration) {
    // A full disk fails every pass until space returns: said once.
    let mut disk_full = false;
    let mut stalled = false;
    let mut next_pass = Instant::now() + period;
    loop {
        let refill_only =
            match signals.recv_timeout(next_pass.saturating_duration_since(Instant::now())) {
                Ok(Signal::Refill) => true,
                Err(RecvTimeoutError::Timeout) => false,
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            };
        if refill_only && stalled {
            continue;
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if refill_only {
            stalled = !inner.refill_reserve();
            continue;
        }
        stalled = false;
        next_pass = Instant::now() + period;
        match inner.maintain() {
            Err(error) if error.is_no_space() => {
                if !std::mem::replace(&mut disk_full, true) {
                    tracing::warn!(%error, "engine maintenance: the disk is full (said once)");
                }
            }
            Err(error) => tracing::warn!(%error, "engine maintenance"),
            Ok(()) => {
                if std::mem::replace(&mut disk_full, false) {
                    tracing::info!("engine maintenance: the disk has space again");
                }
            }
        }
    }
}
