//! Namespaces, Pods and NetworkPolicies read from YAML or JSON files (for `svcnet policy matrix
//! --offline`): multi-document YAML, `kind: List`, other kinds ignored.

use std::path::Path;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as netv1;
use serde_json::Value;

use crate::engine::Cluster;
use crate::{Error, Result};

/// The objects policies care about.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub namespaces: Vec<corev1::Namespace>,
    pub pods: Vec<corev1::Pod>,
    pub policies: Vec<netv1::NetworkPolicy>,
}

impl Objects {
    /// Adds the objects of one YAML (multi-document) or JSON text.
    pub fn add_text(&mut self, text: &str, origin: &str) -> Result<()> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| Error::Decode(format!("{origin}: {e}")))?;
        for doc in docs {
            self.add_value(doc, origin)?;
        }
        Ok(())
    }

    fn add_value(&mut self, v: Value, origin: &str) -> Result<()> {
        let decode = |e: serde_json::Error| Error::Decode(format!("{origin}: {e}"));
        match v.get("kind").and_then(Value::as_str) {
            Some("List" | "NamespaceList" | "PodList" | "NetworkPolicyList") => {
                for item in v.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
                    let mut item = item;
                    // Items of typed lists may lack `kind`.
                    if item.get("kind").is_none()
                        && let Some(kind) = v.get("kind").and_then(Value::as_str).and_then(|k| k.strip_suffix("List")).filter(|k| !k.is_empty())
                    {
                        item["kind"] = Value::String(kind.to_owned());
                    }
                    self.add_value(item, origin)?;
                }
            }
            Some("Namespace") => self.namespaces.push(serde_json::from_value(v).map_err(decode)?),
            Some("Pod") => self.pods.push(serde_json::from_value(v).map_err(decode)?),
            Some("NetworkPolicy") => self.policies.push(serde_json::from_value(v).map_err(decode)?),
            _ => {}
        }
        Ok(())
    }

    /// Every `.yaml`, `.yml` and `.json` file of `dir` (not recursive), in name order; or `dir`
    /// itself when it is a file.
    pub fn read_dir(dir: &Path) -> Result<Objects> {
        let io = |context: String| move |source| Error::Io { context, source };
        let mut objects = Objects::default();
        let mut files = Vec::new();
        if dir.is_file() {
            files.push(dir.to_path_buf());
        } else {
            for entry in std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))? {
                let path = entry.map_err(io(format!("reading {}", dir.display())))?.path();
                if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
                    files.push(path);
                }
            }
            files.sort();
        }
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(io(format!("reading {}", f.display())))?;
            objects.add_text(&text, &f.display().to_string())?;
        }
        Ok(objects)
    }

    /// Lists the objects from the API.
    pub async fn list(client: &kube::Client) -> Result<Objects> {
        use kube::api::{Api, ListParams};
        let lp = ListParams::default();
        Ok(Objects {
            namespaces: Api::<corev1::Namespace>::all(client.clone()).list(&lp).await?.items,
            pods: Api::<corev1::Pod>::all(client.clone()).list(&lp).await?.items,
            policies: Api::<netv1::NetworkPolicy>::all(client.clone()).list(&lp).await?.items,
        })
    }

    /// The cluster these objects make, and the policies that could not be compiled.
    pub fn cluster(&self) -> (Cluster, Vec<Error>) {
        Cluster::from_objects(&self.namespaces, &self.pods, &self.policies)
    }
}
