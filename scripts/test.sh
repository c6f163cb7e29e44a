#!/usr/bin/env bash
# Runs every forcebridge test: the formatting, lint and layout checks (CONTRIBUTING.md), unit
# tests, integration tests against the simulated org with the embedded Kafka (librdkafka mock
# cluster) and with a real broker process (tansu), after each cargo-fuzz target has run for a short
# fixed time (README, "Fuzzing"), the Helm chart checks (README, "Kubernetes") and the interop tier
# (clients nobody here wrote against the simulated org, README "Developing against the simulated
# org").
# Installs tansu with its in-memory storage engine (feature `dynostore`) first; cargo skips the
# install when that exact build is already present (the first install takes 10 to 20 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# The habits first, so a slip fails in seconds: formatting, then the shape of src/ (no import
# cycle between files, no file over 600 lines outside its tests, no function over 120 lines;
# scripts/layout.py), then clippy with every warning an error (the [lints] of Cargo.toml).
cargo fmt --all -- --check
python3 scripts/layout.py
cargo clippy --all-targets -- -D warnings

cargo install tansu --locked --features dynostore

# Fuzzing on the stable toolchain: cargo fuzz passes -Z flags, which RUSTC_BOOTSTRAP=1 lets stable
# accept; `--sanitizer none` because AddressSanitizer needs a nightly standard library. `--dev`
# keeps debug assertions and overflow checks on and the build short. New inputs go to a scratch
# directory, the committed seeds are read only; a crash fails the run and leaves the input
# under fuzz/artifacts/<target>/.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
fuzz_seconds=15
RUSTC_BOOTSTRAP=1 cargo fuzz build --dev --sanitizer none
for target in cdc_decode bitmap writeback_message; do
    scratch=$(mktemp -d)
    echo "fuzzing $target for ${fuzz_seconds}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run --dev --sanitizer none "$target" "$scratch" "fuzz/corpus/$target" -- \
        -max_total_time="$fuzz_seconds" -verbosity=0 -print_final_stats=1
    rm -rf "$scratch"
done

# The Helm chart checks (tests/helm.rs, helm/check.py) render the chart with Go's text/template and
# sprig from Debian packages (no helm binary) and validate the manifests with kubernetes-validate.
# Installed when missing (about 20 s for the apt packages, 10 s for pip); without root they are
# left to you and tests/helm.rs says SKIPPED (and fails under CI).
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/Masterminds/sprig ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            golang-go golang-github-masterminds-sprig-dev >/dev/null
    else
        echo "note: install golang-go and golang-github-masterminds-sprig-dev for the chart checks"
    fi
fi
python3 -c "import kubernetes_validate" 2>/dev/null || python3 -m pip install -q kubernetes-validate==1.37.0

# The interop tier (tests/interop.rs): clients nobody here wrote, run against `forcebridge sim`.
# Node.js packages pinned by tests/interop/node/package-lock.json (pozil's Pub/Sub client and
# jsforce), installed with `npm ci` when missing or when the lock file changed (a few seconds).
node_dir=tests/interop/node
if command -v npm >/dev/null; then
    if [ ! -f "$node_dir/node_modules/.forcebridge-lock" ] ||
        ! cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.forcebridge-lock"; then
        (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
        cp "$node_dir/package-lock.json" "$node_dir/node_modules/.forcebridge-lock"
    fi
else
    echo "note: install Node.js and npm for the interop tier (tests/interop.rs)"
fi

# Python packages pinned by tests/interop/python/requirements.txt (grpcio-tools for a client
# generated from the proto, avro, simple-salesforce), in a venv, reinstalled when the file changed.
py_dir=tests/interop/python
if [ ! -f "$py_dir/.venv/.forcebridge-requirements" ] ||
    ! cmp -s "$py_dir/requirements.txt" "$py_dir/.venv/.forcebridge-requirements"; then
    python3 -m venv "$py_dir/.venv"
    "$py_dir/.venv/bin/pip" install -q -r "$py_dir/requirements.txt"
    cp "$py_dir/requirements.txt" "$py_dir/.venv/.forcebridge-requirements"
fi

cargo test --all-targets "$@"
