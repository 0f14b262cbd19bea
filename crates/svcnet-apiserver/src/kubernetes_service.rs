//! The `default/kubernetes` Service, which kube-apiserver keeps pointing at itself so that pods
//! find the API at the first address of the service range.

use std::net::{Ipv4Addr, SocketAddr};

use serde_json::{Value, json};
use svcnet_api::resources;

use crate::{
    error::Result,
    registry::{FieldValidation, Registry, WriteOptions},
    request::Target,
};

const WRITE: WriteOptions = WriteOptions { dry_run: false, field_validation: FieldValidation::Strict, field_manager: Some("kube-apiserver"), apply: false };

fn target(plural: &str, name: Option<&str>) -> Target {
    Target {
        info: resources::find("", "v1", plural).expect("core resources are served"),
        namespace: Some("default".into()),
        name: name.map(str::to_string),
        subresource: None,
    }
}

fn service(ip: Ipv4Addr, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}
    })
}

/// Creates the Service if missing and points its target port at `listen`. Its Endpoints are
/// written only when the API listens on an address pods can reach (not loopback or wildcard).
pub async fn ensure(reg: &Registry, ip: Ipv4Addr, listen: SocketAddr) -> Result<()> {
    let want = service(ip, listen.port());
    match reg.create(&target("services", None), want.clone(), WRITE).await {
        Ok(_) => tracing::info!(%ip, "created the kubernetes Service"),
        Err(e) if e.code == 409 => {
            reg.guaranteed_update(&target("services", Some("kubernetes")), WRITE, |current| {
                if current["spec"]["ports"] == want["spec"]["ports"] {
                    return Ok(None);
                }
                let mut next = current.clone();
                next["spec"]["ports"] = want["spec"]["ports"].clone();
                Ok(Some((next, vec![])))
            })
            .await?;
        }
        Err(e) => return Err(e),
    }
    let addr = listen.ip();
    if addr.is_loopback() || addr.is_unspecified() {
        return Ok(());
    }
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": addr.to_string()}], "ports": [{"name": "https", "port": listen.port(), "protocol": "TCP"}]}]
    });
    match reg.create(&target("endpoints", None), endpoints.clone(), WRITE).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => reg
            .guaranteed_update(&target("endpoints", Some("kubernetes")), WRITE, |current| {
                if current["subsets"] == endpoints["subsets"] {
                    return Ok(None);
                }
                let mut next = current.clone();
                next["subsets"] = endpoints["subsets"].clone();
                Ok(Some((next, vec![])))
            })
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}
