#!/usr/bin/env bash
# Benchmark of the svcnet API server: ConfigMap creates/s over HTTPS (concurrency 1 and 32) and
# watch-event latency with 100 watchers, each next to the same work done straight into the
# embedded store (RedbStore, in-process) and into etcd (when `etcd` is on PATH), in one run on
# the same disk. Prints a Markdown table: metric | svcnet | baseline | ratio.
#
# Not a test: it asserts nothing about timings. All traffic stays on loopback.
# The backends run interleaved, in ROUNDS rounds, and the table shows each metric's median and
# range, so that load from elsewhere on the machine hits them alike and shows as spread.
# About a minute on a 2-core machine once built. Extra arguments go to svcnet-bench
# (see `target/release/svcnet-bench --help`), e.g. `bench/apiserver.sh --creates 5000`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p svcnet -p svcnet-bench
exec target/release/svcnet-bench \
  --svcnet target/release/svcnet \
  --rounds "${ROUNDS:-3}" \
  --creates "${CREATES:-1000}" \
  --concurrency "${CONCURRENCY:-1,32}" \
  --watchers "${WATCHERS:-100}" \
  --watch-events "${WATCH_EVENTS:-500}" \
  --watch-concurrency "${WATCH_CONCURRENCY:-8}" \
  "$@"
