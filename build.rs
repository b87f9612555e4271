//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and writes the
//! encoded descriptor set for gRPC server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "tokend/v1/token.proto",
        "tokend/v1/authorization.proto",
        "tokend/v1/admin.proto",
        "tokend/v1/feed.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tokend_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Malformed requests are INVALID_ARGUMENT, not INTERNAL (src/transport/codec.rs).
        .codec_path("crate::transport::codec::ProtoCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
