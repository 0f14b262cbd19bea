#!/usr/bin/env bash
# Benchmark of cluster DNS (issue 7): `svcnet dns` answering from list+watch of a `svcnet up`
# whose store holds 10,000 Services (every tenth headless) and 100,000 pods (one EndpointSlice of
# ten endpoints per Service), next to Knot DNS serving the same records from a generated zone
# file, in the same run, both on loopback ports, queried by dnsperf in interleaved rounds with the
# same query file (60% A ClusterIP, 5% A headless, 5% pod names, 10% SRV, 20% search-path
# NXDOMAIN). Prints a Markdown table: metric | svcnet dns | Knot | ratio, with QPS, average
# latency, lost queries, RSS, the initial sync, and the time from an EndpointSlice write to the
# changed answer (goal: 100 ms).
#
# Not a test: it asserts nothing about timings. Needs dnsperf and knot (scripts/setup.sh), about
# 1 GB of disk in the temp dir (--dir moves it) and 2 GB of RAM. Sizes from the environment
# (SERVICES, PODS_PER_SERVICE, NAMESPACES, ROUNDS, UPDATES); other arguments go to
# `svcnet-bench dns` (see `target/release/svcnet-bench dns --help`), e.g.
# `SERVICES=1000 bench/dns.sh --dnsperf-args "-c 4 -T 1 -q 200 -l 5"` for a quick run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p svcnet -p svcnet-bench
exec target/release/svcnet-bench dns \
  --svcnet target/release/svcnet \
  --services "${SERVICES:-10000}" \
  --pods-per-service "${PODS_PER_SERVICE:-10}" \
  --namespaces "${NAMESPACES:-10}" \
  --rounds "${ROUNDS:-3}" \
  --updates "${UPDATES:-50}" \
  "$@"
