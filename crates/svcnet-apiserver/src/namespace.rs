//! Namespace lifecycle inside the API server: the built-in namespaces exist from the first
//! start, and a namespace being deleted is emptied and then removed (the job of upstream's
//! namespace controller and its `kubernetes` finalizer).

use serde_json::{Value, json};
use svcnet_api::resources::{self, RESOURCES};

use crate::{
    error::Result,
    registry::{self, DeleteOptions, FieldValidation, Registry, WriteOptions},
    request::Target,
};

/// The namespaces every cluster has.
pub const BUILT_IN: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn namespaces() -> &'static resources::ResourceInfo {
    resources::find("", "v1", "namespaces").expect("namespaces are served")
}

const WRITE: WriteOptions = WriteOptions { dry_run: false, field_validation: FieldValidation::Strict, field_manager: Some("kube-apiserver"), apply: false };

/// Creates the built-in namespaces that are missing.
pub async fn ensure_built_in(reg: &Registry) -> Result<()> {
    let target = Target { info: namespaces(), namespace: None, name: None, subresource: None };
    for ns in BUILT_IN {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match reg.create(&target, body, WRITE).await {
            Ok(_) => tracing::info!(namespace = ns, "created built-in namespace"),
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Finishes the deletion of every namespace that is terminating (after a restart).
pub async fn resume_terminating(reg: &Registry) -> Result<()> {
    let page = reg.store.list(&namespaces().key_prefix(), None, None).await?;
    for kv in page.items {
        let obj = registry::from_kv(&kv)?;
        if obj["metadata"].get("deletionTimestamp").is_some() {
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            spawn_finalize(reg.clone(), name);
        }
    }
    Ok(())
}

/// Empties namespace `name` in the background, then removes it.
pub fn spawn_finalize(reg: Registry, name: String) {
    tokio::spawn(async move {
        // Objects with finalizers of their own may take a while; keep trying until empty.
        let mut backoff = std::time::Duration::from_millis(50);
        loop {
            match finalize(&reg, &name).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(namespace = %name, error = %e, "emptying namespace"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
        }
    });
}

/// One pass: deletes what is left in the namespace; when nothing is, drops the `kubernetes`
/// finalizer and the namespace. Returns whether the namespace is gone.
async fn finalize(reg: &Registry, name: &str) -> Result<bool> {
    let mut remaining = 0usize;
    for info in RESOURCES.iter().filter(|r| r.namespaced) {
        let prefix = format!("{}{}/", info.key_prefix(), name);
        let page = reg.store.list(&prefix, None, None).await?;
        for kv in page.items {
            remaining += 1;
            let obj = registry::from_kv(&kv)?;
            let target = Target { info, namespace: Some(name.to_string()), name: obj["metadata"]["name"].as_str().map(str::to_string), subresource: None };
            // Upstream deletes the contents with grace period 0 for pods only when no node
            // runs them; with the default, the node agent terminates them gracefully.
            match reg.delete(&target, &DeleteOptions::default(), WRITE).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    if remaining > 0 {
        return Ok(false);
    }
    let target = Target { info: namespaces(), namespace: None, name: Some(name.to_string()), subresource: Some("finalize".into()) };
    let done = reg
        .guaranteed_update(&target, WRITE, |current| {
            let mut next = current.clone();
            let fins: Vec<Value> =
                current["spec"]["finalizers"].as_array().map(|a| a.iter().filter(|f| f.as_str() != Some("kubernetes")).cloned().collect()).unwrap_or_default();
            next["spec"]["finalizers"] = Value::Array(fins);
            Ok(Some((next, vec![])))
        })
        .await;
    match done {
        Ok(w) => {
            let spec_fins = w.object["spec"]["finalizers"].as_array().is_some_and(|a| !a.is_empty());
            if spec_fins {
                return Ok(false);
            }
        }
        Err(e) if e.code == 404 => return Ok(true),
        Err(e) => return Err(e),
    }
    let key = namespaces().key(None, name);
    match reg.store.get(&key).await? {
        None => Ok(true),
        Some(kv) => {
            let obj = registry::from_kv(&kv)?;
            if crate::object::finalizers(&obj).is_empty() {
                match reg.store.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) | Err(svcnet_store::Error::NotFound { .. }) => Ok(true),
                    Err(svcnet_store::Error::Conflict { .. }) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            } else {
                Ok(false)
            }
        }
    }
}
