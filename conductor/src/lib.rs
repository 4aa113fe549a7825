//! `pagoda-conductor`: the KVCache-aware scheduler.
//!
//! Picks a prefill and a decode instance for each request as in Mooncake's
//! Algorithm 1 (estimated TTFT from queue, prefix transfer and prefill of the
//! unmatched tokens; TBT within SLO), rejects early when no choice meets the
//! SLOs, and replicates hot prefixes. It keeps only soft state and talks to the
//! store through `pagoda-client`, so several conductors run side by side.
//!
//! Built so far: the placement decision ([`schedule::place`]): Algorithm 1
//! and the round-robin, least-loaded and local-only baselines, with early
//! rejection, over the cost model of `pagoda-worker`. The service, its soft
//! state and the replay land with the rest of the Conductor issue.
#![forbid(unsafe_code)]

pub mod schedule;
