//! Maintenance: the periodic pass and the thread that runs it.
//!
//! One pass ([`Inner::maintain`]), under the maintenance lock: queued index
//! deletes, expired leases, a bounded sweep of blocks of dropped
//! generations, then (with an SSD tier) segment reclaim and the index
//! checkpoint. The maintenance lock serialises passes and checkpoints, so a
//! checkpoint never passes a reclaim's copies before they are indexed.
//!
//! The thread holds the engine weakly: it never keeps a dropped engine
//! alive, and stops when asked or when the engine closes. A full disk fails
//! every pass until space returns; it is logged once.
//!
//! May touch: through the modules it calls; itself only the sweep's cursor
//! and the blocks of dead generations.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{MutexGuard, PoisonError};
use std::time::Duration;

use super::{Engine, Inner};
use crate::error::Result;
use crate::options::limits;
use crate::state::Released;

impl Engine {
    /// One maintenance pass: releases expired leases, frees blocks of dropped
    /// namespaces (a bounded batch), reclaims the oldest value-log segment
    /// when the SSD tier is over its high watermark, and writes the index
    /// checkpoint. The background thread calls it periodically.
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
        if self.ssd.is_some() {
            self.reclaim()?;
            self.checkpoint()?;
        }
        Ok(())
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

pub(super) fn maintenance_loop(
    inner: &std::sync::Weak<Inner>,
    stop: &Receiver<()>,
    period: Duration,
) {
    // A full disk fails every pass until space returns: said once.
    let mut disk_full = false;
    loop {
        match stop.recv_timeout(period) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
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
