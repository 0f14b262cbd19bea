//! A minimal scheduler: binds each pod that has no node and asks for `default-scheduler` to a
//! node that fits (Ready, schedulable, its taints tolerated, its labels matching the pod's
//! `nodeSelector`), preferring the node with the fewest pods; through the `pods/binding`
//! subresource, as kube-scheduler does. A pod that fits nowhere stays Pending until a node
//! changes.
//!
//! Left out: affinity, topology spread, resources and ports (no node reports capacity), and
//! `FailedScheduling` Events (the reason is logged instead).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::serde_json::json;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use super::{Context, Key, Next, api_error, is_not_found};
use crate::{Result, pod as podutil};

/// The scheduler this one is (`spec.schedulerName`).
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// How long a binding may take to show up in the pod cache before it no longer counts.
const ASSUMED_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the pod waits for this scheduler: no node, not being deleted, not finished.
pub fn wants_scheduling(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    podutil::node_name(pod).is_none() && spec.and_then(|s| s.scheduler_name.as_deref()).unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME && super::is_active(pod)
}

/// Why a node does not fit a pod (for the log, as upstream's `FailedScheduling` message).
#[derive(Debug, PartialEq, Eq)]
pub enum Unfit {
    NotReady,
    Unschedulable,
    Taint(String),
    NodeSelector,
}

/// Whether `pod` may run on `node`.
pub fn fits(pod: &Pod, node: &Node) -> Result<(), Unfit> {
    let ready = node.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        return Err(Unfit::NotReady);
    }
    let spec = node.spec.clone().unwrap_or_default();
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    if spec.unschedulable == Some(true) {
        // Upstream turns this into the `node.kubernetes.io/unschedulable:NoSchedule` taint.
        let taint = Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Default::default() };
        if !tolerations.iter().any(|t| tolerates(t, &taint)) {
            return Err(Unfit::Unschedulable);
        }
    }
    for taint in spec.taints.iter().flatten().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute") {
        if !tolerations.iter().any(|t| tolerates(t, taint)) {
            return Err(Unfit::Taint(taint.key.clone()));
        }
    }
    let selector = pod.spec.as_ref().and_then(|s| s.node_selector.clone()).unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return Err(Unfit::NodeSelector);
    }
    Ok(())
}

/// Upstream's `Toleration.ToleratesTaint`.
#[doc(alias = "ToleratesTaint")]
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists tolerates everything.
        "Exists" => true,
        "Equal" => !key.is_empty() && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The node for `pod`: among those it fits, the one with the fewest pods (`pods_per_node`),
/// then the first by name. `Err` holds why each node does not fit.
pub fn choose(pod: &Pod, nodes: &[&Node], pods_per_node: &HashMap<String, usize>) -> Result<String, BTreeMap<String, Unfit>> {
    let mut unfit = BTreeMap::new();
    let mut best: Option<(usize, String)> = None;
    for node in nodes {
        let name = node.name_any();
        match fits(pod, node) {
            Ok(()) => {
                let candidate = (pods_per_node.get(&name).copied().unwrap_or(0), name);
                if best.as_ref().is_none_or(|b| candidate < *b) {
                    best = Some(candidate);
                }
            }
            Err(why) => {
                unfit.insert(name, why);
            }
        }
    }
    best.map(|(_, name)| name).ok_or(unfit)
}

pub(super) async fn reconcile(ctx: &Context, key: &Key) -> Result<Next> {
    let Some(pod) = ctx.pods.get(&key.object_ref()) else { return Ok(Next::Done) };
    if !wants_scheduling(&pod) {
        return Ok(Next::Done);
    }
    let id = (key.namespace.clone(), key.name.clone());
    if ctx.assumed.lock().unwrap().get(&id).is_some_and(|(_, at)| at.elapsed() < ASSUMED_TIMEOUT) {
        // Bound already; the cache has not caught up.
        return Ok(Next::Done);
    }
    let nodes = ctx.nodes.state();
    let nodes: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
    // Choose and assume at once, so that workers scheduling pods side by side see each other's
    // choices (kube-scheduler schedules one pod at a time for the same reason).
    let chosen = {
        let mut assumed = ctx.assumed.lock().unwrap();
        let counts = pods_per_node(ctx, &mut assumed);
        let chosen = choose(&pod, &nodes, &counts);
        if let Ok(node) = &chosen {
            assumed.insert(id.clone(), (node.clone(), Instant::now()));
        }
        chosen
    };
    let node = match chosen {
        Ok(node) => node,
        Err(unfit) => {
            tracing::info!(pod = %key, nodes = nodes.len(), ?unfit, "FailedScheduling: no node fits the pod");
            return Ok(Next::Done);
        }
    };
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": key.name, "namespace": key.namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let result = api.create_subresource::<_, k8s_openapi::serde_json::Value>("binding", &key.name, &PostParams::default(), &binding).await;
    if result.is_err() {
        ctx.assumed.lock().unwrap().remove(&id);
    }
    match result {
        Ok(_) => {
            tracing::info!(pod = %key, %node, "bound pod");
            Ok(Next::Done)
        }
        Err(e) if is_not_found(&e) => Ok(Next::Done),
        // Bound or being deleted meanwhile: the pod's next event tells.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Next::Done),
        Err(e) => Err(api_error("bind", "Pod", key, &key.name, e)),
    }
}

/// Pods per node: the bound, unfinished pods in the cache, and the bindings it does not show
/// yet.
fn pods_per_node(ctx: &Context, assumed: &mut HashMap<(String, String), (String, Instant)>) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let pods = ctx.pods.state();
    // An assumed binding counts until the cache shows it (or the pod is gone).
    assumed.retain(|(namespace, name), (_, at)| {
        let pending = pods.iter().any(|p| p.namespace().as_deref() == Some(namespace) && p.name_any() == *name && podutil::node_name(p).is_none());
        pending && at.elapsed() < ASSUMED_TIMEOUT
    });
    for p in pods.iter() {
        let finished = matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        if let Some(node) = podutil::node_name(p).filter(|_| !finished) {
            *counts.entry(node).or_default() += 1;
        }
    }
    for (node, _) in assumed.values() {
        *counts.entry(node.clone()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: bool, spec: serde_json::Value, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn pending(spec: serde_json::Value) -> Pod {
        let mut full = json!({"containers": [{"name": "c", "image": "i"}]});
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": full})).unwrap()
    }

    #[test]
    fn picks_the_ready_node_with_fewest_pods() {
        let a = node("a", true, json!({}), json!({}));
        let b = node("b", true, json!({}), json!({}));
        let down = node("down", false, json!({}), json!({}));
        let counts = HashMap::from([("a".to_string(), 2), ("b".to_string(), 1)]);
        assert_eq!(choose(&pending(json!({})), &[&a, &b, &down], &counts), Ok("b".to_string()));
        assert_eq!(choose(&pending(json!({})), &[&a, &b], &HashMap::new()), Ok("a".to_string()));
        let err = choose(&pending(json!({})), &[&down], &HashMap::new()).unwrap_err();
        assert_eq!(err.get("down"), Some(&Unfit::NotReady));
    }

    #[test]
    fn honours_node_selector_taints_and_cordons() {
        let ssd = node("ssd", true, json!({}), json!({"disk": "ssd"}));
        let tainted = node("tainted", true, json!({"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}), json!({}));
        let soft = node("soft", true, json!({"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}), json!({}));
        let cordoned = node("cordoned", true, json!({"unschedulable": true}), json!({}));
        let plain = pending(json!({}));
        assert_eq!(fits(&plain, &ssd), Ok(()));
        assert_eq!(fits(&plain, &tainted), Err(Unfit::Taint("gpu".into())));
        assert_eq!(fits(&plain, &soft), Ok(()));
        assert_eq!(fits(&plain, &cordoned), Err(Unfit::Unschedulable));
        assert_eq!(fits(&pending(json!({"nodeSelector": {"disk": "hdd"}})), &ssd), Err(Unfit::NodeSelector));
        assert_eq!(fits(&pending(json!({"nodeSelector": {"disk": "ssd"}})), &ssd), Ok(()));
        let tolerant = pending(json!({"tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]}));
        assert_eq!(fits(&tolerant, &tainted), Ok(()));
        let wrong_value = pending(json!({"tolerations": [{"key": "gpu", "value": "no"}]}));
        assert_eq!(fits(&wrong_value, &tainted), Err(Unfit::Taint("gpu".into())));
        let everything = pending(json!({"tolerations": [{"operator": "Exists"}]}));
        assert_eq!(fits(&everything, &tainted), Ok(()));
        assert_eq!(fits(&everything, &cordoned), Ok(()));
    }

    #[test]
    fn only_unbound_default_scheduler_pods_are_scheduled() {
        assert!(wants_scheduling(&pending(json!({}))));
        assert!(wants_scheduling(&pending(json!({"schedulerName": "default-scheduler"}))));
        assert!(!wants_scheduling(&pending(json!({"schedulerName": "other"}))));
        assert!(!wants_scheduling(&pending(json!({"nodeName": "a"}))));
    }
}
