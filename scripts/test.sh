#!/usr/bin/env bash
# Runs every forcebridge test: unit tests, integration tests against the simulated org with the
# embedded Kafka (librdkafka mock cluster) and with a real broker process (tansu).
# Installs tansu with its in-memory storage engine (feature `dynostore`) first; cargo skips the
# install when that exact build is already present (the first install takes 10 to 20 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo install tansu --locked --features dynostore

cargo test --all-targets "$@"
