#!/usr/bin/env bash
# The whole test suite: unit, integration and end-to-end tests (real kubectl, real Python
# client, real kernel where a test needs it). Run as root after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=4
