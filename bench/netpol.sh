#!/usr/bin/env bash
# NetworkPolicy benchmark: new connections/s with no table, 0 and 1,000 policies over 10,000 pods
# (ratios against the first row), and the time pod label, namespace label and policy changes take
# to take effect through the API server, the runner and nftables (NETPOL_BENCH_ONLY_CHANGES=1:
# only those). Needs root (network namespaces). NETPOL_BENCH_SECS sets the
# seconds per rate measurement (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p svcnet-netpol --example netpol_bench
exec "$target/release/examples/netpol_bench"
