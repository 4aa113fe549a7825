//! `pagoda-worker`: prefill and decode workers, built as clients of the store.
//!
//! A prefill worker looks up a request's cached prefix, fetches the matched
//! blocks, computes the rest and puts the new blocks; a decode worker fetches
//! the KV it needs and streams tokens. Backends: `sim` (sleeps a cost model's
//! time and moves real bytes), `cpu` (derives deterministic KV bytes so every
//! loaded byte can be checked) and `cuda` (cargo feature `cuda`, module
//! [`gpu`]): KV copied between CUDA device memory and the store. The default
//! build needs no GPU, driver or CUDA toolkit; with `cuda` the driver library
//! is loaded at run time and its absence is an error, not a panic.
//!
//! Modules: [`kv`] (the `cpu` backend's
//! deterministic KV bytes), [`service`] (the worker process: gRPC service,
//! registration with Conductors) and `gpu` (feature `cuda`). The cost model
//! of simulated GPU time is `pagoda-cost` (shared with the Conductor).
//!
//! `unsafe` is denied (workspace lint) except at the one marked call that
//! probes for the CUDA driver library in `gpu`.

#[cfg(feature = "cuda")]
pub mod gpu;
pub mod kv;
pub mod service;

/// Errors of the worker crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `cuda` backend was asked for, but no CUDA driver library
    /// (`libcuda.so`) could be loaded on this machine.
    #[error("no CUDA driver found (libcuda.so could not be loaded); use --backend sim or cpu")]
    NoCudaDriver,
    /// The CUDA driver returned an error.
    #[error("CUDA driver error in {operation}: {message}")]
    Cuda {
        /// What was being done.
        operation: &'static str,
        /// The driver's description.
        message: String,
    },
}
