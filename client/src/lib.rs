//! `pagoda-client`: the async Rust client library for Pagoda.
//!
//! Connects with an API token, fetches a namespace's chain key once and hashes
//! token chains locally (`pagoda_formats::chain`), and speaks the gRPC API of
//! `formats/proto/pagoda/v1/`: lookup, streamed put and get, exists, pin,
//! replicate and watch, with retries for idempotent calls only. It depends on
//! `formats` alone, never on the engine or the server: every service, the
//! Conductor and the workers included, reaches the store through this API.
//!
//! Transport: gRPC over TCP by default; the optional `rdma` feature (module
//! `rdma`) finds verbs devices for an RDMA data path and compiles out of the
//! default build. The API client itself lands with the server/client issue.
#![forbid(unsafe_code)]

#[cfg(feature = "rdma")]
pub mod rdma;
