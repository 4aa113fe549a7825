//! The steps of the workload: each picks its arguments from the seed, calls
//! the engine once, and accepts only the errors a caller may get
//! ([`Sim::allowed`]).

use std::time::Duration;

use pagoda_formats::chain::ChainHash;

use super::{CHAINS, DEPTH, LEASES_HELD_MAX, Sim, SimFailure, hash, payload, short};
use crate::PutOutcome;

impl Sim {
    pub(super) fn put(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let chain = self.pick(CHAINS);
        // Mostly the chain's next block (what a prefill worker stores),
        // sometimes any block (a re-put, or a parent that is missing).
        let position = if self.rng.one_in(4) {
            self.pick(DEPTH)
        } else {
            let id = self.namespaces[ns].id();
            let hashes: Vec<ChainHash> = (0..DEPTH).map(|at| hash(chain, at)).collect();
            let cached = self
                .engine()
                .lookup(&id, &hashes)
                .map_or(0, |found| found.matched);
            u64::try_from(cached).expect("small").min(DEPTH - 1)
        };
        self.op = format!("put ns {ns} chain {chain} block {position}");
        let block = hash(chain, position);
        let parent = if position == 0 {
            ChainHash::ROOT
        } else {
            hash(chain, position - 1)
        };
        let bytes = payload(ns, &block);
        let split = usize::try_from(self.pick(bytes.len() as u64 + 1)).expect("small");
        let (head, tail) = bytes.split_at(split);
        let id = self.namespaces[ns].id();
        let result =
            self.engine()
                .put_chunks(&id, &parent, &block, &[head, tail], crc32c::crc32c(&bytes));
        match result {
            Ok(PutOutcome::Stored) => {
                self.stats.stored += 1;
                Ok(())
            }
            Ok(PutOutcome::Exists | PutOutcome::ParentMissing) => Ok(()),
            Ok(PutOutcome::Diverged) => Err(self.fail("a put of the same bytes diverged")),
            Err(error) if self.allowed(&error, ns) => Ok(()),
            Err(error) => Err(self.fail(format!("put failed: {error}"))),
        }
    }

    pub(super) fn get(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let block = hash(self.pick(CHAINS), self.pick(DEPTH));
        self.op = format!("get ns {ns} {}", short(&block));
        self.check_get(ns, &block).map(drop)
    }

    pub(super) fn lookup(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let chain = self.pick(CHAINS);
        self.op = format!("lookup ns {ns} chain {chain}");
        self.check_prefix_closed(ns, chain)
    }

    pub(super) fn remove(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let chain = self.pick(CHAINS);
        let from = self.pick(DEPTH);
        self.op = format!("remove ns {ns} chain {chain} from {from}");
        let hashes: Vec<ChainHash> = (from..DEPTH)
            .map(|position| hash(chain, position))
            .collect();
        let id = self.namespaces[ns].id();
        match self.engine().remove(&id, &hashes) {
            Ok(_) => Ok(()),
            Err(error) if self.allowed(&error, ns) => Ok(()),
            Err(error) => Err(self.fail(format!("remove failed: {error}"))),
        }
    }

    pub(super) fn pin(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let chain = self.pick(CHAINS);
        let ttl = Duration::from_millis(1 + self.pick(2000));
        self.op = format!("pin ns {ns} chain {chain} for {ttl:?}");
        if self.leases.len() >= LEASES_HELD_MAX {
            return Ok(());
        }
        let hashes: Vec<ChainHash> = (0..DEPTH).map(|position| hash(chain, position)).collect();
        let id = self.namespaces[ns].id();
        match self.engine().pin(&id, &hashes, ttl) {
            Ok(lease) => {
                self.leases.push(lease.id);
                Ok(())
            }
            Err(error) if self.allowed(&error, ns) => Ok(()),
            Err(error) => Err(self.fail(format!("pin failed: {error}"))),
        }
    }

    pub(super) fn unpin(&mut self) {
        self.op = "unpin".into();
        if self.leases.is_empty() {
            return;
        }
        let index = usize::try_from(self.pick(self.leases.len() as u64)).expect("small");
        let lease = self.leases.swap_remove(index);
        // False when it expired meanwhile: both are fine.
        self.engine().unpin(lease);
    }

    pub(super) fn drop_or_create(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let id = self.namespaces[ns].id();
        if self.live[ns] {
            self.op = format!("drop namespace {ns}");
            match self.engine().drop_namespace(&id) {
                Ok(existed) if existed => {
                    self.live[ns] = false;
                    self.known.retain(|(index, _), _| *index != ns);
                    Ok(())
                }
                Ok(_) => Err(self.fail("a live namespace did not exist")),
                Err(error) if self.allowed(&error, ns) => Ok(()),
                Err(error) => Err(self.fail(format!("drop failed: {error}"))),
            }
        } else {
            self.op = format!("re-create namespace {ns}");
            self.create(ns)
        }
    }

    pub(super) fn maintain(&mut self) -> Result<(), SimFailure> {
        self.op = "maintain".into();
        match self.engine().maintain() {
            Ok(()) => Ok(()),
            Err(_) if self.disk.powered_off() => Ok(()),
            Err(error) => Err(self.fail(format!("maintenance failed: {error}"))),
        }
    }

    pub(super) fn sync(&mut self) -> Result<(), SimFailure> {
        self.op = "sync".into();
        self.absorb_events();
        match self.engine().sync() {
            Ok(()) => {
                for known in self.known.values_mut() {
                    known.durable |= known.ssd;
                }
                Ok(())
            }
            Err(_) if self.disk.powered_off() => Ok(()),
            Err(error) => Err(self.fail(format!("sync failed: {error}"))),
        }
    }
}
