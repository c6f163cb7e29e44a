# syntax=docker/dockerfile:1
# forcebridge container image. Built in CI elsewhere (no Docker engine on the development
# machine); tests/dockerfile.rs checks this file's structure on every test run.
#
#   docker build -t forcebridge .
#   docker run --rm -v $PWD/forcebridge.yaml:/etc/forcebridge/forcebridge.yaml:ro \
#       -e SF_CLIENT_ID -e SF_CLIENT_SECRET -p 9464:9464 forcebridge

# ---- builder: the release binary --------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
# rdkafka-sys builds librdkafka from its bundled sources (configure + make, C and C++) with
# zlib (feature `libz`); everything else is pure Rust (rustls, protox: no OpenSSL, no protoc).
RUN apt-get update \
    && apt-get install -y --no-install-recommends make gcc g++ perl python3 pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependency layer: build every dependency against placeholder sources, so that a change to
# src/ does not rebuild librdkafka and the crates (Cargo.lock and build.rs decide this layer).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin forcebridge \
    && rm -rf src target/release/.fingerprint/forcebridge-* target/release/deps/forcebridge-* \
        target/release/deps/libforcebridge-* target/release/forcebridge

# The application.
COPY schemas ./schemas
COPY src ./src
RUN cargo build --release --locked --bin forcebridge \
    && install -D -m 0755 target/release/forcebridge /out/forcebridge

# ---- runtime: glibc, libstdc++ (librdkafka is C++-linked), CA certificates, nothing else -------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/forcebridge /usr/local/bin/forcebridge
# distroless `nonroot`: uid/gid 65532 (the Helm chart's runAsUser).
USER 65532:65532
# /metrics, /healthz, /readyz (config `ops.listen`).
EXPOSE 9464
ENTRYPOINT ["forcebridge"]
CMD ["run", "--config", "/etc/forcebridge/forcebridge.yaml"]
