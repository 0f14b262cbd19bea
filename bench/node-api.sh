#!/usr/bin/env bash
# The node API through the real kubectl (crates/svcnet-node/src/server): port-forward throughput
# over both transports next to a direct connection to the same pod server, and `kubectl exec`
# latency next to `kubectl get` (same binary, one API round trip). Needs root.
# BENCH_MIB (default 64) MiB echoed per transport, BENCH_RUNS (default 20) commands timed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -q -p svcnet-node --test server -- --ignored --nocapture --exact bench_node_api 2>&1 | grep -v '^running\|^test \|^$'
