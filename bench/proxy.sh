#!/usr/bin/env bash
# The Service proxy at scale, next to the kernel's floor (run as root):
#   bench/proxy.sh [SERVICES [ENDPOINTS]]     (default 10000 10)
# Full sync into a fresh network namespace as the proxy does it (the skeleton with `nft -f`, then
# every element in one netlink transaction), the same over the table it left (a restart), the whole
# ruleset as one `nft -f` script, the same with every endpoint on the measured node, one endpoint
# change with everything present, the same numbers of bare map elements loaded with `nft -f` (the
# baseline column) and over netlink, and new connections/s through the first and the last
# Service. Whole loads are medians of 3, with CPU time next to wall time (the machine is shared).
# Namespaces are created and removed by the benchmark. PROXY_BENCH_DUMP=DIR keeps the scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -q -p svcnet-proxy --bench proxy -- "$@"
