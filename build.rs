//! Compiles `proto/gent.proto` with protox (a Rust protobuf compiler), so building
//! gent needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/gent.proto");
    let descriptors = protox::compile(["proto/gent.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
