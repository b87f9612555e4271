//! Compiles tokend's public RevocationFeed contract, the client side only,
//! with protox: this crate knows tokend through the proto file and the JWKS.
//! The tests and the example also get the server side (another out dir) to
//! run scripted feeds and a demo gRPC service; the library never includes it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto";
    let example = "examples/proto";
    println!("cargo:rerun-if-changed={proto}/tokend/v1/feed.proto");
    println!("cargo:rerun-if-changed={example}/demo/v1/orders.proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(["tokend/v1/feed.proto"], [proto])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    let full = out.join("full");
    std::fs::create_dir_all(&full)?;
    let fds = protox::compile(
        ["tokend/v1/feed.proto", "demo/v1/orders.proto"],
        [proto, example],
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .out_dir(&full)
        .compile_fds(fds)?;
    Ok(())
}
