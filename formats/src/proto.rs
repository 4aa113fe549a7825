//! The generated gRPC code of `formats/proto/pagoda/v1/` (messages with prost,
//! service stubs with tonic), for the server and the client. Generated at
//! build time without a `protoc` binary (see `build.rs`).
#![expect(
    missing_docs,
    reason = "generated code; the .proto files are documented"
)]
#![expect(clippy::pedantic, reason = "generated code")]
#![expect(clippy::allow_attributes, reason = "generated code")]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("pagoda.v1");
}
