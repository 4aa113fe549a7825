//! `pagoda-conductor`: the KVCache-aware scheduler.
//!
//! Picks a prefill and a decode instance for each request as in Mooncake's
//! Algorithm 1 (estimated TTFT from queue, prefix transfer and prefill of the
//! unmatched tokens; TBT within SLO), rejects early when no choice meets the
//! SLOs, and replicates hot prefixes. It keeps only soft state and talks to the
//! store through `pagoda-client`, so several conductors run side by side.
//!
//! Modules: [`schedule`] (the placement decision: Algorithm 1 and the
//! round-robin, least-loaded and local-only baselines, with early rejection,
//! over the cost model of `pagoda-worker`; pure, shared with `pagoda
//! replay`) and [`service`] (the `pagoda conductor` process: HTTP requests,
//! worker registration, soft state, failover, hot-block replication).
#![forbid(unsafe_code)]

pub mod schedule;
pub mod service;

/// Errors of a Conductor's start and run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store (a node or a cluster) or its namespace could not be opened.
    #[error("store: {0}")]
    Store(String),
    /// A listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster settings are wrong.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A port's server failed.
    #[error("{port} server: {reason}")]
    Serve {
        /// `http` or `grpc`.
        port: &'static str,
        /// Why.
        reason: String,
    },
}
