#!/usr/bin/env bash
# Benchmark of the EndpointSlice controller at scale (issue 4): the time from a pod's Ready
# condition changing (PATCH pods/<name>/status) to a watch on EndpointSlices showing that pod's
# endpoint with the new conditions.ready, with 10,000 Services and 100,000 pods pre-loaded into
# the store, next to the same measurement on a small cluster (100 Services, 1,000 pods) in the
# same run. Also reports the initial sync (svcnet start to every Service's slices holding all its
# pods ready), the store's size and svcnet's RSS after the sync. Prints a Markdown table:
# metric | 10k/100k | 100/1k (baseline) | ratio.
#
# The stores are written straight through svcnet_store::RedbStore before svcnet starts, from
# templates the API server itself produced (see crates/svcnet-bench/src/endpoints.rs).
# Not a test: it asserts nothing about timings. All traffic stays on loopback. Needs about 1.5 GB
# of disk in the temp dir (--dir moves it) and a few GB of RAM. Extra arguments go to
# `svcnet-bench endpoints` (see `target/release/svcnet-bench endpoints --help`); the sizes come from
# the environment (SERVICES, BASELINE_SERVICES, PODS_PER_SERVICE, NAMESPACES, FLIPS, GAP_MS), e.g.
# `SERVICES=1000 bench/endpoints.sh` for a quick run (about 2.5 minutes). The initial sync of the
# large cluster is most of the time: at 10k/100k it did not finish within 23 minutes on a 2-core
# machine (see docs/performance.md); --sync-timeout-secs (default 3600) bounds the wait.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p svcnet -p svcnet-bench
exec target/release/svcnet-bench endpoints \
  --svcnet target/release/svcnet \
  --services "${SERVICES:-10000}" \
  --baseline-services "${BASELINE_SERVICES:-100}" \
  --pods-per-service "${PODS_PER_SERVICE:-10}" \
  --namespaces "${NAMESPACES:-10}" \
  --flips "${FLIPS:-200}" \
  --gap-ms "${GAP_MS:-300}" \
  "$@"
