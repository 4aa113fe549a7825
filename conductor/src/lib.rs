//! `pagoda-conductor`: the KVCache-aware scheduler.
//!
//! Picks a prefill and a decode instance for each request as in Mooncake's
//! Algorithm 1 (estimated TTFT from queue, prefix transfer and prefill of the
//! unmatched tokens; TBT within SLO), rejects early when no choice meets the
//! SLOs, and replicates hot prefixes. It keeps only soft state and talks to the
//! store through `pagoda-client`, so several conductors run side by side.
//! Empty until the Conductor issue lands.
#![forbid(unsafe_code)]
