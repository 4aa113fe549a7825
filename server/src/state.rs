//! What the services share: the engine (once open), authentication, the
//! per-tenant budgets that bound requests, Watch streams and bytes in
//! flight, lease owners, the event feed of `Watch`, the node's shutdown
//! phase, and metrics.
//!
//! A budget is taken only through a [`Permit`], and given back only by its
//! `Drop`: a call, stream or block releases what it holds on every path
//! (success, error, a client that cancels, shutdown), never by hand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use pagoda_engine::Engine;
use pagoda_formats::proto::v1 as pb;
use tonic::Status;

use crate::auth::{Auth, Caller};
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::streams::Lifecycle;

/// Requests, Watch streams and bytes in flight of one tenant.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    requests: AtomicUsize,
    watch_streams: AtomicUsize,
    bytes: AtomicU64,
}

/// The shared state of the services.
#[derive(Debug)]
pub struct Shared {
    engine: OnceLock<Arc<Engine>>,
    pub(crate) auth: Auth,
    pub(crate) limits: Limits,
    budgets: Mutex<HashMap<String, Arc<Budget>>>,
    leases: Mutex<HashMap<u64, String>>,
    pub(crate) events: WatchFeeds,
    /// The shutdown phase every stream ends by (`crate::streams`).
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) metrics: Metrics,
    pub(crate) started: Instant,
    /// etcd endpoints in cluster mode (namespaces are published there).
    pub(crate) cluster: OnceLock<Vec<String>>,
    /// The cluster's settings as last seen (cluster-wide tokens).
    pub(crate) membership: OnceLock<pagoda_cluster::Membership>,
    /// Where the data plane listens, once bound.
    pub(crate) data_plane: OnceLock<crate::data::Endpoints>,
}

/// Events buffered per watched tenant before a slow watcher lags.
const WATCH_EVENTS_BUFFERED: usize = 4096;

/// The `Watch` feeds: one broadcast channel and one event sequence per
/// tenant, so a watcher's events, sequence numbers and `LAGGED` counts are
/// its own tenant's alone (one shared channel let a tenant measure another's
/// put and eviction rate from its lag).
#[derive(Debug, Default)]
pub(crate) struct WatchFeeds {
    /// By the engine's tenant number; created by the first watcher.
    tenants: Mutex<HashMap<u16, WatchFeed>>,
}

#[derive(Debug)]
struct WatchFeed {
    sender: tokio::sync::broadcast::Sender<pb::WatchEvent>,
    sequence: u64,
}

impl WatchFeeds {
    /// A receiver of `tenant`'s events from now on.
    pub(crate) fn subscribe(
        &self,
        tenant: u16,
    ) -> tokio::sync::broadcast::Receiver<pb::WatchEvent> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants
            .entry(tenant)
            .or_insert_with(|| WatchFeed {
                sender: tokio::sync::broadcast::channel(WATCH_EVENTS_BUFFERED).0,
                sequence: 0,
            })
            .sender
            .subscribe()
    }

    /// Hands an engine event to its tenant's watchers, numbered in that
    /// tenant's sequence; nothing when nobody watches the tenant. Never
    /// blocks (the engine calls it under its state lock).
    pub(crate) fn publish(&self, event: &pagoda_engine::BlockEvent) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(feed) = tenants.get_mut(&event.tenant) else {
            return;
        };
        if feed.sender.receiver_count() == 0 {
            return;
        }
        feed.sequence += 1;
        let _ = feed
            .sender
            .send(crate::grpc::watch_event(event, feed.sequence));
    }
}

/// A slot in a tenant's budget, given back on drop (and timed for metrics).
#[derive(Debug)]
pub(crate) struct Permit {
    budget: Arc<Budget>,
    requests: usize,
    watch_streams: usize,
    bytes: u64,
    timing: Option<(&'static str, Instant, Arc<Shared>)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget
            .requests
            .fetch_sub(self.requests, Ordering::AcqRel);
        self.budget
            .watch_streams
            .fetch_sub(self.watch_streams, Ordering::AcqRel);
        self.budget.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        if let Some((rpc, started, shared)) = self.timing.take() {
            shared.metrics.observe(rpc, started.elapsed().as_secs_f64());
        }
    }
}

impl Shared {
    pub(crate) fn new(auth: Auth, limits: Limits) -> Arc<Self> {
        Arc::new(Shared {
            engine: OnceLock::new(),
            auth,
            limits,
            budgets: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            events: WatchFeeds::default(),
            lifecycle: Arc::new(Lifecycle::new()),
            metrics: Metrics::default(),
            started: Instant::now(),
            cluster: OnceLock::new(),
            membership: OnceLock::new(),
            data_plane: OnceLock::new(),
        })
    }

    /// Makes the engine available (the node is ready).
    pub(crate) fn set_engine(&self, engine: Arc<Engine>) {
        let _ = self.engine.set(engine);
    }

    /// The engine, or `UNAVAILABLE` while it is still opening.
    pub(crate) fn engine(&self) -> Result<Arc<Engine>, Status> {
        self.engine
            .get()
            .cloned()
            .ok_or_else(|| Status::unavailable("the node is starting (warm restart in progress)"))
    }

    /// Whether the engine is open.
    pub fn is_ready(&self) -> bool {
        self.engine.get().is_some()
    }

    /// The engine once open.
    pub fn engine_if_ready(&self) -> Option<Arc<Engine>> {
        self.engine.get().cloned()
    }

    fn budget(&self, tenant: &str) -> Arc<Budget> {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(budgets.entry(tenant.to_owned()).or_default())
    }

    fn exhausted(&self, what: String) -> Status {
        let mut status = Status::resource_exhausted(what);
        if let Ok(value) = self.limits.retry_after_ms.to_string().parse() {
            status.metadata_mut().insert("retry-after-ms", value);
        }
        status
    }

    /// Takes a request slot of the caller's tenant.
    pub(crate) fn admit(
        self: &Arc<Self>,
        caller: &Caller,
        rpc: &'static str,
    ) -> Result<Permit, Status> {
        self.metrics.count(rpc, &caller.tenant);
        let budget = self.budget(&caller.tenant);
        let before = budget.requests.fetch_add(1, Ordering::AcqRel);
        let permit = Permit {
            budget,
            requests: 1,
            watch_streams: 0,
            bytes: 0,
            timing: Some((rpc, Instant::now(), Arc::clone(self))),
        };
        if before >= self.limits.requests_per_tenant {
            self.metrics.reject(rpc, &caller.tenant);
            return Err(self.exhausted(format!(
                "tenant {:?} has {} requests in flight, the limit; retry after {} ms",
                caller.tenant, self.limits.requests_per_tenant, self.limits.retry_after_ms
            )));
        }
        Ok(permit)
    }

    /// Takes a Watch stream slot of the caller's tenant. Watch streams
    /// have their own limit and never take a request slot: a tenant's
    /// watchers cannot starve its calls.
    pub(crate) fn admit_watch(&self, caller: &Caller) -> Result<Permit, Status> {
        self.metrics.count("watch", &caller.tenant);
        let budget = self.budget(&caller.tenant);
        let before = budget.watch_streams.fetch_add(1, Ordering::AcqRel);
        let permit = Permit {
            budget,
            requests: 0,
            watch_streams: 1,
            bytes: 0,
            timing: None,
        };
        if before >= self.limits.watch_streams_per_tenant {
            self.metrics.reject("watch", &caller.tenant);
            return Err(self.exhausted(format!(
                "tenant {:?} has {} watch streams open, the limit; retry after {} ms",
                caller.tenant, self.limits.watch_streams_per_tenant, self.limits.retry_after_ms
            )));
        }
        Ok(permit)
    }

    /// An empty reservation of `tenant`'s payload bytes, to grow with
    /// [`Shared::reserve_bytes`] as bytes arrive.
    pub(crate) fn byte_permit(&self, tenant: &str) -> Permit {
        Permit {
            budget: self.budget(tenant),
            requests: 0,
            watch_streams: 0,
            bytes: 0,
            timing: None,
        }
    }

    /// Adds `bytes` that arrived to `permit`. Refused when the tenant's
    /// other reservations and these go over its limit; a reservation alone
    /// may pass it (one block larger than the budget still goes through
    /// when nothing else is in flight). Refused bytes stay in `permit`
    /// until it drops.
    pub(crate) fn reserve_bytes(&self, permit: &mut Permit, bytes: u64) -> Result<(), Status> {
        let before = permit.budget.bytes.fetch_add(bytes, Ordering::AcqRel);
        let others = before.saturating_sub(permit.bytes);
        permit.bytes += bytes;
        if others > 0 && before + bytes > self.limits.inflight_bytes_per_tenant {
            return Err(self.exhausted(format!(
                "the tenant has {before} payload bytes in flight; the limit is {}",
                self.limits.inflight_bytes_per_tenant
            )));
        }
        Ok(())
    }

    pub(crate) fn note_lease(&self, tenant: &str, lease: u64) {
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(lease, tenant.to_owned());
    }

    pub(crate) fn owns_lease(&self, tenant: &str, lease: u64) -> bool {
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&lease)
            .is_some_and(|owner| owner == tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Role, ServerConfig};

    fn shared(limits: Limits) -> Arc<Shared> {
        let (auth, _) = Auth::from_config(&ServerConfig::default()).expect("an open node");
        Shared::new(auth, limits)
    }

    fn caller() -> Caller {
        Caller {
            tenant: "default".into(),
            role: Role::Admin,
        }
    }

    #[test]
    fn stalled_blocks_hold_only_the_bytes_that_arrived() {
        // A put once reserved the payload_len its header declared: 16
        // streams declaring 64 MiB each and sending one byte held a
        // tenant's whole 1 GiB until restart.
        let shared = shared(Limits {
            inflight_bytes_per_tenant: 100,
            ..Limits::default()
        });
        let mut stalled: Vec<Permit> = (0..16).map(|_| shared.byte_permit("default")).collect();
        for permit in &mut stalled {
            shared.reserve_bytes(permit, 1).expect("one byte each fits");
        }
        let mut writer = shared.byte_permit("default");
        shared
            .reserve_bytes(&mut writer, 84)
            .expect("the rest fits");
        let refused = shared.reserve_bytes(&mut writer, 1).map_err(|s| s.code());
        assert_eq!(refused, Err(tonic::Code::ResourceExhausted));
        drop(stalled);
        drop(writer);
        let mut alone = shared.byte_permit("default");
        shared
            .reserve_bytes(&mut alone, 1_000)
            .expect("a block alone may pass the budget");
        let mut second = shared.byte_permit("default");
        let refused = shared.reserve_bytes(&mut second, 1).map_err(|s| s.code());
        assert_eq!(refused, Err(tonic::Code::ResourceExhausted));
    }

    #[test]
    fn watch_streams_take_no_request_slot_and_give_theirs_back() {
        // Watch streams once took request slots that a cancelled stream
        // never gave back: 1,024 cancelled watches locked a tenant out.
        let shared = shared(Limits {
            requests_per_tenant: 2,
            watch_streams_per_tenant: 2,
            ..Limits::default()
        });
        let watches: Vec<Permit> = (0..2)
            .map(|_| shared.admit_watch(&caller()).expect("within the limit"))
            .collect();
        let refused = shared.admit_watch(&caller()).map_err(|s| s.code());
        assert_eq!(refused.err(), Some(tonic::Code::ResourceExhausted));
        let calls: Vec<Permit> = (0..2)
            .map(|_| {
                shared
                    .admit(&caller(), "lookup")
                    .expect("requests are free")
            })
            .collect();
        drop(calls);
        drop(watches);
        for _ in 0..2 {
            let permit = shared.admit_watch(&caller()).expect("slots given back");
            drop(permit);
        }
    }
}
