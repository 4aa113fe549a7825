//! Generates the gRPC code of `proto/pagoda/v1/*.proto` when the `grpc`
//! feature is on. protox parses the files in-process, so no `protoc` binary is
//! needed on the machine.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    #[cfg(feature = "grpc")]
    if let Err(error) = generate() {
        panic!("gRPC code generation from formats/proto failed: {error}");
    }
}

#[cfg(feature = "grpc")]
fn generate() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/pagoda/v1/store.proto",
        "proto/pagoda/v1/admin.proto",
        "proto/pagoda/v1/serving.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Payload chunks as `bytes::Bytes`: decoded without a copy, and a
        // server can send pages it already holds.
        .bytes(".pagoda.v1.PutRequest.chunk")
        .bytes(".pagoda.v1.GetResponse.chunk")
        .compile_fds(descriptors)?;
    Ok(())
}
