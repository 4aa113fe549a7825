//! `pagoda-server`: the serving front end.
//!
//! Adapts the engine to the network and nothing more: tonic gRPC for the data
//! and admin services of `formats/proto/pagoda/v1/`, hyper HTTP for
//! `/metrics`, `/healthz`, `/readyz` and `/v1/stats`, authentication of API
//! tokens to (tenant, role), and backpressure with named limits. All error to
//! status mapping lives in one function here. Empty until the server issue
//! lands.
#![forbid(unsafe_code)]
