#!/usr/bin/env bash
# Installs what svcnet and its test suite need on a fresh Debian machine (run as root).
# Idempotent: skips what is already there.
set -euo pipefail

need_apt=()
command -v nft >/dev/null || need_apt+=(nftables)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v dig >/dev/null || need_apt+=(bind9-dnsutils)
command -v curl >/dev/null || need_apt+=(curl)
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v dnsperf >/dev/null || need_apt+=(dnsperf)
command -v knotd >/dev/null || need_apt+=(knot)
command -v conntrack >/dev/null || need_apt+=(conntrack)
command -v arping >/dev/null || need_apt+=(iputils-arping)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)  # baseline of the node network benchmark
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The official Python client, for the client-compatibility tests.
if ! python3 -c 'import kubernetes' 2>/dev/null; then
  python3 -m pip --version >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null; }
  # Debian marks its Python as externally managed; this is a test-only client library.
  python3 -m pip install -q --break-system-packages 'kubernetes>=31' 2>/dev/null || python3 -m pip install -q 'kubernetes>=31'
  python3 -c 'import kubernetes'
fi

# kubectl: the machine image ships it; say so clearly when it is missing.
command -v kubectl >/dev/null || { echo "setup: kubectl is not installed; the end-to-end tests need it" >&2; exit 1; }
echo "setup: ok"
