# syntax=docker/dockerfile:1
# tokend container image: build with the Rust toolchain, run on distroless (glibc, no shell, non-root).
#   docker build -t registry.example.com/tokend:0.1.0 .
#   docker run --rm -p 8080:8080 -p 50051:50051 -e TOKEND_HTTP_LISTEN=0.0.0.0:8080 \
#     -e TOKEND_GRPC_LISTEN=0.0.0.0:50051 registry.example.com/tokend:0.1.0     (dev defaults: memory store)
# The Helm chart (helm/tokend) runs `tokend serve --config /etc/tokend/config/tokend.toml` as UID 65532
# with a read-only root filesystem; probes come from Kubernetes, so the image has no HEALTHCHECK.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# Everything cargo reads to build the tokend binary: the workspace manifests (every member's, or cargo
# refuses the workspace), the proto files build.rs compiles, the sources, and benches/ because the root
# manifest declares `[[bench]] hot_paths` (cargo refuses a manifest whose declared target is missing).
# tests/ and examples/ are auto-discovered, so their absence is fine. scripts/docker-context-check.py
# (run by scripts/test.sh) builds from exactly this context with the command below.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY crates ./crates
COPY benches ./benches
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin tokend \
 && install -D -m 0755 target/release/tokend /out/tokend

# distroless/cc: glibc and libgcc for the aws-lc-rs / tokio binary, CA certificates for rediss://.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/tokend /usr/local/bin/tokend
USER 65532:65532
# gRPC (tokend.v1.TokenService, grpc.health.v1) and the HTTP bridge (/oauth/*, /.well-known/*, /healthz, /readyz, /metrics).
EXPOSE 50051 8080
# Without --config, tokend runs on its built-in defaults (memory store, ephemeral key, loopback listeners).
ENTRYPOINT ["/usr/local/bin/tokend"]
CMD ["serve"]
