//! A pod's `/etc/resolv.conf` and `/etc/hosts`, as the kubelet writes them (pure).

use k8s_openapi::api::core::v1::Pod;

/// The node's DNS settings.
#[derive(Clone, Debug)]
pub struct ClusterDns {
    /// The cluster DNS Service's addresses (`kube-dns`'s ClusterIP).
    pub nameservers: Vec<String>,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// The node's own resolv.conf, for `dnsPolicy: Default` (and `ClusterFirst` on host-network
    /// pods).
    pub host_resolv_conf: String,
}

/// The pod's resolv.conf per `dnsPolicy` (`ClusterFirst` by default) and `dnsConfig`.
pub fn resolv_conf(pod: &Pod, dns: &ClusterDns) -> String {
    let spec = pod.spec.as_ref();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let (mut nameservers, mut searches, mut options): (Vec<String>, Vec<String>, Vec<String>) = match policy {
        "None" => (vec![], vec![], vec![]),
        "Default" => parse_host(&dns.host_resolv_conf),
        "ClusterFirst" if host_network => parse_host(&dns.host_resolv_conf),
        _ => (
            dns.nameservers.clone(),
            vec![format!("{namespace}.svc.{}", dns.domain), format!("svc.{}", dns.domain), dns.domain.clone()],
            vec!["ndots:5".into()],
        ),
    };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        for ns in config.nameservers.iter().flatten() {
            if !nameservers.contains(ns) {
                nameservers.push(ns.clone());
            }
        }
        for s in config.searches.iter().flatten() {
            if !searches.contains(s) {
                searches.push(s.clone());
            }
        }
        for o in config.options.iter().flatten() {
            let text = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = o.name.as_deref().unwrap_or_default();
            options.retain(|existing| existing.split(':').next() != Some(name));
            options.push(text);
        }
    }
    // glibc reads at most 3 nameservers; upstream trims to that and to 32 search domains.
    nameservers.truncate(3);
    searches.truncate(32);
    let mut out = String::new();
    for ns in &nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

fn parse_host(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut ns, mut search, mut options) = (vec![], vec![], vec![]);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => ns.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => search = words.map(str::to_string).collect(),
            Some("options") => options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    (ns, search, options)
}

/// The pod's `/etc/hosts`: localhost, its own address under its hostname (and FQDN when
/// `subdomain` is set), then `hostAliases`.
pub fn hosts(pod: &Pod, pod_ip: &str, cluster_domain: &str) -> String {
    let spec = pod.spec.as_ref();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let hostname = hostname(pod);
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    match spec.and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty()) {
        Some(sub) => out.push_str(&format!("{pod_ip}\t{hostname}.{sub}.{namespace}.svc.{cluster_domain}\t{hostname}\n")),
        None => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases.filter(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.clone().unwrap_or_default().join("\t")));
        }
    }
    out
}

/// The pod's hostname: `spec.hostname`, else its name (truncated to 63 bytes, as upstream).
pub fn hostname(pod: &Pod) -> String {
    let name = pod.spec.as_ref().and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty()).or_else(|| pod.metadata.name.clone()).unwrap_or_default();
    let mut h: String = name.chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dns() -> ClusterDns {
        ClusterDns {
            nameservers: vec!["10.96.0.10".into()],
            domain: "cluster.local".into(),
            host_resolv_conf: "nameserver 192.0.2.53\nsearch example.org\n".into(),
        }
    }

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c"}]);
        serde_json::from_value(json!({"metadata": {"name": "web-0", "namespace": "shop"}, "spec": spec})).unwrap()
    }

    #[test]
    fn cluster_first() {
        assert_eq!(
            resolv_conf(&pod(json!({})), &dns()),
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
    }

    #[test]
    fn default_none_and_dns_config() {
        assert_eq!(resolv_conf(&pod(json!({"dnsPolicy": "Default"})), &dns()), "nameserver 192.0.2.53\nsearch example.org\n");
        let p = pod(
            json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
        );
        assert_eq!(resolv_conf(&p, &dns()), "nameserver 1.2.3.4\nsearch a.b\noptions ndots:2 edns0\n");
        let p = pod(json!({"dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}}));
        assert!(resolv_conf(&p, &dns()).ends_with("options ndots:1\n"));
    }

    #[test]
    fn hosts_file() {
        let p = pod(json!({"hostname": "db", "subdomain": "pg", "hostAliases": [{"ip": "10.1.1.1", "hostnames": ["a", "b"]}]}));
        let h = hosts(&p, "10.244.1.5", "cluster.local");
        assert!(h.contains("10.244.1.5\tdb.pg.shop.svc.cluster.local\tdb\n"), "{h}");
        assert!(h.contains("10.1.1.1\ta\tb\n"));
        assert_eq!(hostname(&pod(json!({}))), "web-0");
    }
}
