#!/usr/bin/env bash
# The Service proxy at scale, next to the kernel's floor (run as root):
#   bench/proxy.sh [SERVICES [ENDPOINTS]]     (default 10000 10)
# Full sync into a fresh network namespace, one endpoint change with everything present, the
# same numbers of bare map elements loaded with `nft -f`, and new connections/s through the
# first and the last Service. Namespaces are created and removed by the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -q -p svcnet-proxy --bench proxy -- "$@"
