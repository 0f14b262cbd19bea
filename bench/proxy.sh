#!/usr/bin/env bash
# The Service proxy at scale, next to the kernel's floor (run as root):
#   bench/proxy.sh [SERVICES [ENDPOINTS]]     (default 10000 10)
# Full sync into a fresh network namespace (libnftables in-process, as the proxy applies it, and
# the same script with `nft -f`), the same with every endpoint on the measured node, one endpoint
# change with everything present, the same numbers of bare map elements loaded with `nft -f` (the
# baseline column) and through libnftables, and new connections/s through the first and the last
# Service. Whole loads are medians of 3, with CPU time next to wall time (the machine is shared).
# Namespaces are created and removed by the benchmark. PROXY_BENCH_DUMP=DIR keeps the scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -q -p svcnet-proxy --bench proxy -- "$@"
