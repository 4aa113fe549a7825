//! Pins and leases.
//!
//! A soft lease ([`Engine::expect_soon`]) is the scheduler's pin-for-soon
//! hint: its blocks stay evictable, the tenant's policy evicts them last
//! until the lease is released or expires; it holds no pin counts and no
//! quota, only a place among `LEASES_MAX`.
//!
//! A pin holds the cached leading blocks of a chain against eviction (from
//! DRAM and, by the SSD quota, from SSD) and removal until its lease is
//! released ([`Engine::unpin`]) or expires. Invariants:
//! - A lease names its blocks by id and epoch: a slot freed and reused is
//!   never unpinned by an old lease.
//! - Pinned bytes count against the tenant's DRAM quota (`pinned_bytes`);
//!   a pin that would exceed it is refused, and so is one past
//!   `LEASES_MAX` leases or `PINS_PER_BLOCK_MAX` pins of a block.
//! - Leases expire by the engine's [`Clock`](crate::Clock), checked before
//!   every pin and in every maintenance pass.
//!
//! May touch: the state's leases and deadlines, the blocks' pin counts, the
//! tenants' `pinned_bytes` and their policies (a block unpinned in DRAM is
//! evictable again).

use std::sync::MutexGuard;
use std::time::Duration;

use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::NamespaceId;

use super::catalog::live_slot;
use super::read::hint;
use super::{Engine, Inner, LeaseInfo};
use crate::error::{Error, Result};
use crate::options::limits;
use crate::state::{Lease, State};

impl Engine {
    /// Pins the cached leading blocks of `hashes` against eviction until
    /// `ttl` passes or [`Engine::unpin`]; their bytes count against the
    /// tenant's DRAM quota while pinned.
    pub fn pin(&self, id: &NamespaceId, hashes: &[ChainHash], ttl: Duration) -> Result<LeaseInfo> {
        let (mut state, slot, tenant) = self.open_lease(id, hashes, ttl)?;
        let mut blocks = Vec::new();
        let mut bytes = 0u64;
        for hash in hashes {
            let Some(block_id) = state.find_servable(slot, hash) else {
                break;
            };
            let meta = state.meta(block_id);
            if meta.pins >= limits::PINS_PER_BLOCK_MAX {
                return Err(Error::ResourceExhausted(
                    "a block is pinned too often".into(),
                ));
            }
            bytes += u64::from(meta.payload_len);
            blocks.push((block_id, meta.epoch));
        }
        let tenant_state = &state.tenants[tenant as usize];
        if tenant_state.pinned_bytes + bytes > tenant_state.config.dram_quota {
            return Err(Error::ResourceExhausted(format!(
                "pinning {bytes} more bytes would exceed the tenant's DRAM quota"
            )));
        }
        for (block_id, _) in &blocks {
            state.meta_mut(*block_id).pins += 1;
        }
        state.tenants[tenant as usize].pinned_bytes += bytes;
        let lease = Lease {
            tenant,
            blocks,
            bytes,
            soft: None,
        };
        Ok(self.inner.hold_lease(&mut state, lease, ttl))
    }

    /// The scheduler's pin-for-soon hint under a lease: the blocks of
    /// `hashes` are evicted last by the tenant's policy until `ttl` passes
    /// or [`Engine::unpin`] — for a queued request's prompt. Blocks in DRAM
    /// are told at once; keys not there yet (on SSD, or to be put by
    /// requests ahead in the queue) when they arrive
    /// ([`crate::policy::Policy::expect_key`]). Unlike [`Engine::pin`]
    /// nothing becomes unevictable and nothing counts against the quota;
    /// the lease counts against `LEASES_MAX`. Returns the lease with the
    /// number of DRAM blocks hinted now and 0 bytes.
    pub fn expect_soon(
        &self,
        id: &NamespaceId,
        hashes: &[ChainHash],
        ttl: Duration,
    ) -> Result<LeaseInfo> {
        let (mut state, slot, tenant) = self.open_lease(id, hashes, ttl)?;
        let hinted = hint(&mut state, slot, hashes, true);
        let lease = Lease {
            tenant,
            blocks: Vec::new(),
            bytes: 0,
            soft: Some((slot, hashes.to_vec())),
        };
        let mut info = self.inner.hold_lease(&mut state, lease, ttl);
        info.pinned = hinted;
        Ok(info)
    }

    /// What every lease request does first: checks its size and duration,
    /// expires old leases and locks the state with room for one more lease;
    /// returns the lock, the namespace's slot and its tenant.
    fn open_lease(
        &self,
        id: &NamespaceId,
        hashes: &[ChainHash],
        ttl: Duration,
    ) -> Result<(MutexGuard<'_, State>, u32, u16)> {
        check_lease_request(hashes, ttl)?;
        self.inner.expire_leases();
        let state = self.inner.lock();
        let slot = live_slot(&state, id)?;
        if state.leases.len() >= limits::LEASES_MAX {
            return Err(leases_exhausted());
        }
        let tenant = state.namespaces[slot as usize].tenant;
        Ok((state, slot, tenant))
    }

    /// Releases a lease early; false when it was unknown or had expired.
    pub fn unpin(&self, lease: u64) -> bool {
        let mut state = self.inner.lock();
        release_lease(&mut state, lease)
    }
}

/// The duration and size checks every lease request passes.
fn check_lease_request(hashes: &[ChainHash], ttl: Duration) -> Result<()> {
    let min_ttl = Duration::from_millis(pagoda_formats::limits::PIN_DURATION_MS_MIN);
    let max_ttl = Duration::from_millis(pagoda_formats::limits::PIN_DURATION_MS_MAX);
    if ttl < min_ttl || ttl > max_ttl {
        return Err(Error::InvalidArgument(format!(
            "a pin lasts {} to {} ms, not {} ms",
            min_ttl.as_millis(),
            max_ttl.as_millis(),
            ttl.as_millis()
        )));
    }
    let max = pagoda_formats::limits::KEYS_PER_REQUEST_MAX as usize;
    if hashes.len() > max {
        return Err(Error::InvalidArgument(format!(
            "{} blocks in one pin, over the limit of {max}",
            hashes.len()
        )));
    }
    Ok(())
}

fn leases_exhausted() -> Error {
    Error::ResourceExhausted(format!("{} leases are held, the limit", limits::LEASES_MAX))
}

impl Inner {
    /// Records `lease` with its deadline `ttl` from now.
    fn hold_lease(&self, state: &mut State, lease: Lease, ttl: Duration) -> LeaseInfo {
        let lease_id = state.next_lease;
        state.next_lease += 1;
        let info = LeaseInfo {
            id: lease_id,
            pinned: lease.blocks.len(),
            bytes: lease.bytes,
        };
        state.leases.insert(lease_id, lease);
        state.deadlines.push(std::cmp::Reverse((
            self.options.clock.now() + ttl,
            lease_id,
        )));
        info
    }

    pub(super) fn expire_leases(&self) {
        let now = self.options.clock.now();
        let mut state = self.lock();
        while let Some(std::cmp::Reverse((deadline, lease))) = state.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            state.deadlines.pop();
            release_lease(&mut state, lease);
        }
    }
}

fn release_lease(state: &mut State, lease: u64) -> bool {
    let Some(lease) = state.leases.remove(&lease) else {
        return false;
    };
    if let Some((slot, hashes)) = lease.soft {
        hint(state, slot, &hashes, false);
        return true;
    }
    for (id, epoch) in lease.blocks {
        let meta = state.meta_mut(id);
        if meta.epoch == epoch && meta.pins > 0 {
            meta.pins -= 1;
            if meta.pins == 0 && meta.dram.is_some() {
                let tenant = state.tenant_of(id) as usize;
                state.tenants[tenant].policy.unblocked(id);
            }
            state.free_if_unused(id);
        }
    }
    let tenant = &mut state.tenants[lease.tenant as usize];
    tenant.pinned_bytes = tenant.pinned_bytes.saturating_sub(lease.bytes);
    true
}
