#!/usr/bin/env bash
# Pod network setup/teardown rate of svcnet's node network (crates/svcnet-node/src/network) next
# to the reference CNI plugins (bridge + host-local) run in the same node namespace.
# Needs root; BENCH_PODS (default 100) pods, one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_PODS="${BENCH_PODS:-100}" cargo test --release -q -p svcnet-node --test network -- --ignored --nocapture --exact bench_pod_network_setup 2>&1 | grep -v '^running\|^test \|^$'
