//! Compiles tokend's public login-app contract (the client side only) with
//! protox: this crate knows tokend through the proto file, nothing else.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto";
    println!("cargo:rerun-if-changed={proto}/tokend/v1/authorization.proto");
    let fds = protox::compile(["tokend/v1/authorization.proto"], [proto])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
