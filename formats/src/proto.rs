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

impl From<&crate::namespace::Namespace> for v1::Namespace {
    /// The wire form of a namespace (the same for client and server).
    fn from(namespace: &crate::namespace::Namespace) -> Self {
        let layout = namespace.layout();
        v1::Namespace {
            tenant: namespace.tenant().to_owned(),
            model: namespace.model().to_owned(),
            revision: namespace.revision().to_owned(),
            layout: Some(v1::KvLayout {
                dtype: i32::from(layout.dtype.code()),
                kind: i32::from(layout.kind.code()),
                layer_count: layout.layer_count,
                kv_head_count: layout.kv_head_count,
                head_dim: layout.head_dim,
                block_tokens: layout.block_tokens,
                tp_rank: u32::from(layout.tp_rank),
                tp_size: u32::from(layout.tp_size),
            }),
        }
    }
}
