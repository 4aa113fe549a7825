//! Faults: clean restarts and power losses, and the durability check after
//! each (every block that had to survive did, with its bytes).

use pagoda_formats::chain::ChainHash;

use super::{CHAINS, DEPTH, Known, NAMESPACES, Sim, SimFailure, TENANTS, hash, short};

impl Sim {
    pub(super) fn restart(&mut self) -> Result<(), SimFailure> {
        self.op = "clean restart".into();
        self.absorb_events();
        let engine = self.engine.take().expect("open between steps");
        let closed = engine.close();
        if closed.is_err() || self.disk.powered_off() {
            if !self.disk.powered_off() {
                return Err(self.fail(format!("close failed: {closed:?}")));
            }
            // The power went during the close (its sync, or the log's seal).
            self.stats.crashes += 1;
            self.disk = self.disk.crash();
            return self.reopen_after(true);
        }
        self.stats.restarts += 1;
        // A clean close syncs: every SSD copy is durable.
        for known in self.known.values_mut() {
            known.durable = known.ssd;
        }
        self.reopen_after(false)
    }

    pub(super) fn crash(&mut self) -> Result<(), SimFailure> {
        self.absorb_events();
        self.stats.crashes += 1;
        let image = self.disk.crash();
        let keep_seed = self.rng.next_u64();
        if let Some(engine) = self.engine.take() {
            let result = engine.crash(|unsynced| {
                usize::try_from(keep_seed % (unsynced as u64 + 1)).expect("bounded by unsynced")
            });
            if let Err(error) = result {
                return Err(self.fail(format!("rolling back the index: {error}")));
            }
        }
        self.disk = image;
        self.reopen_after(true)
    }

    /// Reopens and checks that every block that had to survive did, with
    /// its bytes; then the model is what the engine holds.
    fn reopen_after(&mut self, crashed: bool) -> Result<(), SimFailure> {
        self.engine = None;
        self.leases.clear();
        self.open()?;
        let mut must: Vec<(usize, ChainHash)> = Vec::new();
        for ns in 0..NAMESPACES {
            if !self.live[ns] {
                continue;
            }
            for chain in 0..CHAINS {
                for position in 0..DEPTH {
                    // The block and its whole prefix were durable (an SSD
                    // eviction of a parent cuts its children off).
                    let durable = (0..=position).all(|at| {
                        self.known
                            .get(&(ns, hash(chain, at)))
                            .is_some_and(|known| known.durable)
                    });
                    if !durable {
                        break;
                    }
                    must.push((ns, hash(chain, position)));
                }
            }
        }
        for (ns, block) in must {
            self.stats.survivors_checked += 1;
            if !self.check_get(ns, &block)? {
                let how = if crashed {
                    "power loss"
                } else {
                    "clean restart"
                };
                return Err(self.fail(format!(
                    "block {} of namespace {ns} was durable and is gone after a {how}",
                    short(&block)
                )));
            }
        }
        // Now the model is what the engine holds: every block is on SSD
        // only, and durable (open replays the log and checkpoints).
        self.known.clear();
        let mut per_tenant = [0u64; TENANTS.len()];
        for ns in 0..NAMESPACES {
            let id = self.namespaces[ns].id();
            for chain in 0..CHAINS {
                for position in 0..DEPTH {
                    let block = hash(chain, position);
                    let present =
                        self.live[ns] && matches!(self.engine().contains(&id, &block), Ok(Some(_)));
                    if present {
                        per_tenant[ns / 2] += 1;
                        self.known.insert(
                            (ns, block),
                            Known {
                                ssd: true,
                                durable: true,
                            },
                        );
                    }
                }
                if self.live[ns] {
                    self.check_prefix_closed(ns, chain)?;
                }
            }
        }
        let stats = self.engine().stats();
        for (tenant, expected) in stats.tenants.iter().zip(per_tenant) {
            if tenant.ssd_blocks != expected {
                return Err(self.fail(format!(
                    "after reopening, tenant {} counts {} SSD blocks; it holds {expected}",
                    tenant.name, tenant.ssd_blocks
                )));
            }
        }
        Ok(())
    }
}
