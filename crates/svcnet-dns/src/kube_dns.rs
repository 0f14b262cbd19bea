//! The `kube-system/kube-dns` Service, the name pods' resolv.conf points at, and the
//! EndpointSlice that sends its traffic to this server.
//!
//! The Service is what kubeadm creates for CoreDNS (same name, labels, port names and the tenth
//! address of the service range) but has no selector: no pod serves cluster DNS here. When the
//! server listens on an address pods can reach (the host's bridge address), an EndpointSlice
//! labelled with the Service's name and managed by [`MANAGED_BY`] points at it, so the proxy
//! DNATs `10.96.0.10:53` there like any selectorless Service. Upstream's EndpointSlice
//! controller ignores selectorless Services and its mirroring controller only mirrors Endpoints
//! objects, so neither touches this slice. [`ensure`] makes both objects what they should be and
//! is safe to call again (on restart, or periodically).

use std::net::IpAddr;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;

use crate::{Error, Result};

/// The Service's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The Service's name.
pub const SERVICE: &str = "kube-dns";
/// The EndpointSlice's name.
pub const SLICE: &str = "kube-dns-svcnet";
/// `endpointslice.kubernetes.io/managed-by` of the slice.
pub const MANAGED_BY: &str = "dns.svcnet.io";

/// The tenth address of a service range (`10.96.0.0/12` → `10.96.0.10`), which kubeadm gives
/// cluster DNS.
pub fn cluster_dns_ip(service_range: &str) -> Result<IpAddr> {
    let bad = |reason: &str| Error::ServiceRange { range: service_range.to_string(), reason: reason.to_string() };
    let (addr, bits) = service_range.split_once('/').ok_or_else(|| bad("not a CIDR"))?;
    let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
    let bits: u32 = bits.parse().map_err(|_| bad("bad prefix length"))?;
    match addr {
        IpAddr::V4(v4) => {
            if bits > 28 {
                return Err(bad("fewer than 16 addresses"));
            }
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            Ok(IpAddr::V4(std::net::Ipv4Addr::from((u32::from(v4) & mask) + 10)))
        }
        IpAddr::V6(v6) => {
            if bits > 124 {
                return Err(bad("fewer than 16 addresses"));
            }
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            Ok(IpAddr::V6(std::net::Ipv6Addr::from((u128::from(v6) & mask) + 10)))
        }
    }
}

fn service(cluster_ip: IpAddr) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true", "app.kubernetes.io/managed-by": MANAGED_BY},
        },
        "spec": {
            "clusterIP": cluster_ip.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

fn slice(endpoint: IpAddr, owner_uid: &str) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": SLICE,
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": SERVICE, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": SERVICE, "uid": owner_uid, "controller": true, "blockOwnerDeletion": true}],
        },
        "addressType": if endpoint.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [endpoint.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
    })
}

/// Whether `have` is the Service we want: same ClusterIP, no selector, our ports and labels.
fn service_ok(have: &Service, want: &serde_json::Value) -> bool {
    let Ok(have) = serde_json::to_value(have) else { return false };
    let spec = &have["spec"];
    spec["clusterIP"] == want["spec"]["clusterIP"]
        && spec.get("selector").is_none_or(|s| s.is_null() || s.as_object().is_some_and(|o| o.is_empty()))
        && want["spec"]["ports"].as_array().is_some_and(|ports| {
            ports.iter().all(|p| {
                spec["ports"].as_array().is_some_and(|hs| hs.iter().any(|h| h["name"] == p["name"] && h["port"] == p["port"] && h["protocol"] == p["protocol"]))
            }) && spec["ports"].as_array().is_some_and(|hs| hs.len() == ports.len())
        })
        && want["metadata"]["labels"].as_object().is_some_and(|labels| labels.iter().all(|(k, v)| &have["metadata"]["labels"][k] == v))
}

fn slice_ok(have: &EndpointSlice, want: &serde_json::Value) -> bool {
    let Ok(have) = serde_json::to_value(have) else { return false };
    have["endpoints"] == want["endpoints"]
        && have["ports"] == want["ports"]
        && have["addressType"] == want["addressType"]
        && have["metadata"]["ownerReferences"][0]["uid"] == want["metadata"]["ownerReferences"][0]["uid"]
        && want["metadata"]["labels"].as_object().is_some_and(|labels| labels.iter().all(|(k, v)| &have["metadata"]["labels"][k] == v))
}

/// Makes `kube-system/kube-dns` a selectorless Service on `cluster_ip` and, with `endpoint`,
/// its EndpointSlice point at `endpoint:53`; without `endpoint`, removes a slice of ours left
/// from an earlier run. Replaces what differs (a ClusterIP cannot change in place: the Service is
/// then recreated).
pub async fn ensure(client: &Client, cluster_ip: IpAddr, endpoint: Option<IpAddr>) -> Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let want = service(cluster_ip);
    let current = match services.get_opt(SERVICE).await? {
        Some(have) if service_ok(&have, &want) => have,
        Some(have) => {
            tracing::info!(cluster_ip = ?have.spec.as_ref().and_then(|s| s.cluster_ip.clone()), "replacing the kube-dns Service");
            services.delete(SERVICE, &DeleteParams::default()).await?;
            wait_gone(&services).await?;
            services.create(&PostParams::default(), &serde_json::from_value(want)?).await?
        }
        None => services.create(&PostParams::default(), &serde_json::from_value(want)?).await?,
    };
    let uid = current.metadata.uid.clone().unwrap_or_default();

    // Slices of ours other than the one we want (an endpoint that went away, an old name).
    let ours = slices.list(&ListParams::default().labels(&format!("endpointslice.kubernetes.io/managed-by={MANAGED_BY}"))).await?;
    for stale in ours.items.iter().filter(|s| endpoint.is_none() || s.metadata.name.as_deref() != Some(SLICE)) {
        if let Some(name) = &stale.metadata.name {
            // Gone already (another writer, e.g. a second `svcnet up` pass) is what we wanted.
            match slices.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let Some(endpoint) = endpoint else { return Ok(()) };
    let want = slice(endpoint, &uid);
    let owned_by = |have: &EndpointSlice, uid: &str| have.metadata.owner_references.iter().flatten().any(|o| o.uid == uid);
    match ours.items.iter().find(|s| s.metadata.name.as_deref() == Some(SLICE)) {
        Some(have) if slice_ok(have, &want) => {}
        // Owned by a Service that was replaced: the garbage collector may be deleting it, so a
        // new object (a new uid, which its pending delete cannot match) replaces it.
        Some(have) if !owned_by(have, &uid) => {
            match slices.delete(SLICE, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            slices.create(&PostParams::default(), &serde_json::from_value(want)?).await?;
        }
        Some(have) => {
            let mut replacement: EndpointSlice = serde_json::from_value(want)?;
            replacement.metadata.resource_version = have.metadata.resource_version.clone();
            match slices.replace(SLICE, &PostParams::default(), &replacement).await {
                Ok(_) => {}
                // Deleted since we listed it: create it anew.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    replacement.metadata.resource_version = None;
                    slices.create(&PostParams::default(), &replacement).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => {
            slices.create(&PostParams::default(), &serde_json::from_value(want)?).await?;
        }
    }
    Ok(())
}

async fn wait_gone(services: &Api<Service>) -> Result<()> {
    for _ in 0..100 {
        if services.get_opt(SERVICE).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(Error::KubeDns("the old kube-dns Service was not deleted within 5s".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenth_address() {
        assert_eq!(cluster_dns_ip("10.96.0.0/12").unwrap(), "10.96.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(cluster_dns_ip("10.100.7.0/24").unwrap(), "10.100.7.10".parse::<IpAddr>().unwrap());
        assert_eq!(cluster_dns_ip("10.100.7.9/24").unwrap(), "10.100.7.10".parse::<IpAddr>().unwrap());
        assert_eq!(cluster_dns_ip("fd00:10:96::/112").unwrap(), "fd00:10:96::a".parse::<IpAddr>().unwrap());
        assert!(cluster_dns_ip("10.96.0.0/30").is_err());
        assert!(cluster_dns_ip("10.96.0.0").is_err());
    }

    #[test]
    fn selector_or_port_changes_are_noticed() {
        let want = service("10.96.0.10".parse().unwrap());
        let ok: Service = serde_json::from_value(want.clone()).unwrap();
        assert!(service_ok(&ok, &want));
        let mut with_selector = want.clone();
        with_selector["spec"]["selector"] = json!({"k8s-app": "kube-dns"});
        assert!(!service_ok(&serde_json::from_value(with_selector).unwrap(), &want));
        let mut other_ip = want.clone();
        other_ip["spec"]["clusterIP"] = json!("10.96.0.11");
        assert!(!service_ok(&serde_json::from_value(other_ip).unwrap(), &want));
        let mut fewer_ports = want.clone();
        fewer_ports["spec"]["ports"].as_array_mut().unwrap().pop();
        assert!(!service_ok(&serde_json::from_value(fewer_ports).unwrap(), &want));
    }
}
