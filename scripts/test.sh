#!/usr/bin/env bash
# Runs every forcebridge test: unit tests, integration tests against the simulated org with the
# embedded Kafka (librdkafka mock cluster) and with a real broker process (tansu).
# Installs tansu first when it is missing (`cargo install tansu --locked`, about 11 minutes once).
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! command -v tansu >/dev/null 2>&1; then
  echo "tansu (Kafka-compatible broker used by the real-broker tests) is missing: installing it once"
  cargo install tansu --locked
fi

cargo test --all-targets "$@"
