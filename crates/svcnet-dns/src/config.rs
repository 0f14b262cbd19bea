//! The DNS server's settings.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

/// How the DNS server listens, what it is authoritative for, and where other names go.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Addresses to serve on; each is bound for both UDP and TCP. Port 0 picks a free port (the
    /// same one for UDP and TCP); [`crate::DnsServer::local_addrs`] tells which.
    pub listen: Vec<SocketAddr>,
    /// The cluster zone, `cluster.local` by default.
    pub zone: String,
    /// TTL of every answer and the SOA minimum (negative-caching TTL), 5 s by default as in CoreDNS.
    pub ttl: u32,
    /// Resolvers for names outside the zone, tried in order. Empty: such names get SERVFAIL.
    pub upstreams: Vec<SocketAddr>,
    /// How long one forwarded question may take across all upstreams before it gets SERVFAIL.
    pub upstream_timeout: Duration,
}

impl Default for DnsConfig {
    /// Listens on `127.0.0.1:53`, zone `cluster.local`, TTL 5, upstreams from `/etc/resolv.conf`.
    fn default() -> Self {
        DnsConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 53))],
            zone: "cluster.local".to_string(),
            ttl: 5,
            upstreams: system_upstreams(),
            upstream_timeout: Duration::from_millis(1500),
        }
    }
}

/// The `nameserver`s of `/etc/resolv.conf` (port 53); empty when it cannot be read.
pub fn system_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf").map(|text| parse_resolv_conf(&text)).unwrap_or_default()
}

/// The `nameserver` lines of a resolv.conf, as port-53 socket addresses (IPv6 zone ids dropped).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let addr = words.next()?;
            let ip: IpAddr = addr.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver  fe80::1%eth0\nnameserver bogus\noptions ndots:5\n";
        assert_eq!(parse_resolv_conf(text), vec!["10.0.0.2:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
    }
}
