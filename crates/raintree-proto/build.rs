//! Compiles `proto/raintree.proto` with protox, so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/raintree.proto");
    let fds = protox::compile(["proto/raintree.proto"], ["proto"])?;
    let mut config = prost_build::Config::new();
    // Payload fields decode as slices of the received frame instead of fresh allocations.
    config.bytes(["."]);
    config.compile_fds(fds)?;
    Ok(())
}
