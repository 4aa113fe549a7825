//! `pagoda-client`: the async Rust client library for Pagoda.
//!
//! Connects with an API token, fetches a namespace's chain key once and hashes
//! token chains locally (`pagoda_formats::chain`), and speaks the gRPC API of
//! `formats/proto/pagoda/v1/`: lookup, streamed put and get, exists, pin,
//! replicate and watch, with retries for idempotent calls only. It depends on
//! `formats` alone, never on the engine or the server: every service, the
//! Conductor and the workers included, reaches the store through this API.
//! Empty until the server/client issue lands.
#![forbid(unsafe_code)]
