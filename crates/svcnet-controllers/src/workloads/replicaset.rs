//! The ReplicaSet controller (upstream's `pkg/controller/replicaset`): keeps `spec.replicas`
//! active pods that the selector selects, made from the template; adopts matching orphans and
//! releases pods that stop matching; reports what it sees in `status`.
//!
//! Left out: the slow-start batching of creations, the `ReplicaFailure` condition, pod deletion
//! cost and the co-location rank of the deletion order.

use std::cmp::Ordering;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use super::{Availability, Claim, Context, Expect, Key, Kind, Next, api_error, availability, claim, controller_ref, is_active, owners_after, selector};
use crate::{Result, pod as podutil};

/// What to do for one ReplicaSet, from its spec and the pods of its namespace.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Orphans to adopt.
    pub adopt: Vec<String>,
    /// Pods to release (they no longer match).
    pub release: Vec<String>,
    /// Pods to create from the template.
    pub create: usize,
    /// Pods to delete, in the order to delete them.
    pub delete: Vec<String>,
    /// The status to write (upstream computes it from the pods before this round's changes).
    pub status: ReplicaSetStatus,
    /// When a Ready pod becomes available (`minReadySeconds`): look again then.
    pub recheck_after: Option<std::time::Duration>,
}

/// Upstream's `syncReplicaSet` without the I/O: claim the pods, compare the active ones with
/// `spec.replicas`, compute the status.
#[doc(alias = "syncReplicaSet")]
pub fn plan(rs: &ReplicaSet, pods: &[&Pod], now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let spec = rs.spec.clone().unwrap_or_default();
    let mut owned: Vec<&Pod> = Vec::new();
    for &p in pods {
        match claim(&rs.metadata, &p.metadata, selector::matches(&spec.selector, p.labels())) {
            Claim::Owned => owned.push(p),
            Claim::Adopt => {
                plan.adopt.push(p.name_any());
                owned.push(p);
            }
            Claim::Release => plan.release.push(p.name_any()),
            Claim::Ignore => {}
        }
    }
    let mut active: Vec<&Pod> = owned.into_iter().filter(|p| is_active(p)).collect();
    let (status, recheck) = status(rs, &active, now);
    plan.status = status;
    plan.recheck_after = recheck;

    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if active.len() < want {
        plan.create = want - active.len();
    } else if active.len() > want {
        active.sort_by(|a, b| deletion_order(a, b, now));
        plan.delete = active[..active.len() - want].iter().map(|p| p.name_any()).collect();
    }
    plan
}

/// Upstream's `ActivePodsWithRanks` order: the pod to delete first sorts first. Unassigned
/// before assigned, Pending before Unknown before Running, not Ready before Ready, Ready for a
/// shorter time first, more restarts first, newer first.
pub fn deletion_order(a: &Pod, b: &Pod, _now: Timestamp) -> Ordering {
    let assigned = |p: &Pod| podutil::node_name(p).is_some();
    let phase = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    };
    let ready = |p: &Pod| podutil::is_ready(p);
    let restarts = |p: &Pod| -> i32 { p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()).map(|c| c.restart_count).sum() };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    assigned(a)
        .cmp(&assigned(b))
        .then(phase(a).cmp(&phase(b)))
        .then(ready(a).cmp(&ready(b)))
        // Ready more recently (a later transition) sorts first.
        .then_with(|| if ready(a) && ready(b) { super::ready_since(b).cmp(&super::ready_since(a)) } else { Ordering::Equal })
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

/// Upstream's `calculateStatus` over the active pods the ReplicaSet owns; also, when some
/// Ready pod is not yet available, how long until it is.
#[doc(alias = "calculateStatus")]
pub fn status(rs: &ReplicaSet, active: &[&Pod], now: Timestamp) -> (ReplicaSetStatus, Option<std::time::Duration>) {
    let spec = rs.spec.clone().unwrap_or_default();
    let template_labels = spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut s = ReplicaSetStatus {
        replicas: i32::try_from(active.len()).unwrap_or(i32::MAX),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut fully, mut ready, mut available) = (0, 0, 0);
    let mut recheck: Option<std::time::Duration> = None;
    for p in active {
        if template_labels.iter().all(|(k, v)| p.labels().get(k) == Some(v)) {
            fully += 1;
        }
        match availability(p, min_ready, now) {
            Availability::NotReady => {}
            Availability::ReadyFor(d) => {
                ready += 1;
                recheck = Some(recheck.map_or(d, |r| r.min(d)));
            }
            Availability::Available => {
                ready += 1;
                available += 1;
            }
        }
    }
    s.fully_labeled_replicas = Some(fully);
    s.ready_replicas = Some(ready);
    s.available_replicas = Some(available);
    (s, recheck)
}

/// Whether `current` says the same as `want` (absent counts as zero).
fn same_status(current: Option<&ReplicaSetStatus>, want: &ReplicaSetStatus) -> bool {
    let Some(c) = current else { return false };
    c.replicas == want.replicas
        && c.fully_labeled_replicas.unwrap_or(0) == want.fully_labeled_replicas.unwrap_or(0)
        && c.ready_replicas.unwrap_or(0) == want.ready_replicas.unwrap_or(0)
        && c.available_replicas.unwrap_or(0) == want.available_replicas.unwrap_or(0)
        && c.observed_generation == want.observed_generation
}

/// A new pod from the ReplicaSet's template (upstream's `GetPodFromTemplate`).
#[doc(alias = "GetPodFromTemplate")]
pub fn new_pod(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref("ReplicaSet", &rs.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

pub(super) async fn reconcile(ctx: &Context, key: &Key) -> Result<Next> {
    let Some(rs) = ctx.replicasets.get(&key.object_ref()) else { return Ok(Next::Done) };
    let pods = ctx.pods_in(&key.namespace);
    let pods: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
    let plan = plan(&rs, &pods, Timestamp::now());
    let uid = rs.uid().unwrap_or_default();

    for name in &plan.adopt {
        if let Some(p) = pods.iter().find(|p| p.name_any() == *name) {
            let owners = owners_after(&p.metadata, &uid, Some(controller_ref("ReplicaSet", &rs.metadata)));
            ctx.set_owners(key, Kind::Pod, *p, owners).await?;
            tracing::info!(%key, pod = %name, "adopted pod");
        }
    }
    for name in &plan.release {
        if let Some(p) = pods.iter().find(|p| p.name_any() == *name) {
            ctx.set_owners(key, Kind::Pod, *p, owners_after(&p.metadata, &uid, None)).await?;
            tracing::info!(%key, pod = %name, "released pod");
        }
    }
    if rs.metadata.deletion_timestamp.is_none() {
        if plan.create > 0 {
            let pod = new_pod(&rs);
            for _ in 0..plan.create {
                ctx.create_pod(key, &pod).await?;
            }
            tracing::info!(%key, count = plan.create, "created pods");
        }
        for name in &plan.delete {
            ctx.delete_pod(key, name).await?;
        }
        if !plan.delete.is_empty() {
            tracing::info!(%key, count = plan.delete.len(), "deleted pods");
        }
    }
    if !same_status(rs.status.as_ref(), &plan.status) {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let mut next = (*rs).clone();
        next.status = Some(plan.status);
        let written =
            api.replace_status(&key.name, &PostParams::default(), &next).await.map_err(|e| api_error("update status of", "ReplicaSet", key, &key.name, e))?;
        ctx.expect(key, Kind::ReplicaSet, &key.name, Expect::Updated(written.resource_version().unwrap_or_default()));
    }
    Ok(plan.recheck_after.map_or(Next::Done, Next::After))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::fixtures::pod;
    use serde_json::json;

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "rs-uid", "generation": 3},
            "spec": {"replicas": replicas, "minReadySeconds": min_ready, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web", "tier": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }))
        .unwrap()
    }

    fn epoch_plus(secs: i64) -> Timestamp {
        Timestamp::from_second(1_704_067_200 + secs).unwrap()
    }

    #[test]
    fn creates_the_missing_pods_and_reports_status() {
        let mine = pod("a", json!({"app": "web", "tier": "x"}), Some(("ReplicaSet", "rs-uid")), Some("n1"), true);
        let plan = plan(&rs(3, 0), &[&mine], epoch_plus(1));
        assert_eq!(plan.create, 2);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.status.replicas, 1);
        assert_eq!(plan.status.fully_labeled_replicas, Some(1));
        assert_eq!(plan.status.ready_replicas, Some(1));
        assert_eq!(plan.status.available_replicas, Some(1));
        assert_eq!(plan.status.observed_generation, Some(3));
    }

    #[test]
    fn adopts_orphans_releases_strays_ignores_others_and_terminating() {
        let orphan = pod("orphan", json!({"app": "web"}), None, None, false);
        let stray = pod("stray", json!({"app": "other"}), Some(("ReplicaSet", "rs-uid")), None, false);
        let theirs = pod("theirs", json!({"app": "web"}), Some(("ReplicaSet", "x")), None, false);
        let mut dying = pod("dying", json!({"app": "web"}), Some(("ReplicaSet", "rs-uid")), Some("n1"), true);
        dying.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(epoch_plus(0)));
        let plan = plan(&rs(2, 0), &[&orphan, &stray, &theirs, &dying], epoch_plus(1));
        assert_eq!(plan.adopt, vec!["orphan"]);
        assert_eq!(plan.release, vec!["stray"]);
        // The terminating pod does not count: one adopted, one to create.
        assert_eq!(plan.create, 1);
        assert_eq!(plan.status.replicas, 1);
        assert_eq!(plan.status.fully_labeled_replicas, Some(0));
    }

    #[test]
    fn deletes_unscheduled_then_unready_then_newest() {
        let owner = Some(("ReplicaSet", "rs-uid"));
        let labels = json!({"app": "web", "tier": "x"});
        let old_ready = pod("old-ready", labels.clone(), owner, Some("n1"), true);
        let mut new_ready = pod("new-ready", labels.clone(), owner, Some("n1"), true);
        new_ready.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(epoch_plus(5)));
        let unready = pod("unready", labels.clone(), owner, Some("n1"), false);
        let unscheduled = pod("unscheduled", labels, owner, None, false);
        let all = [&old_ready, &unready, &new_ready, &unscheduled];
        assert_eq!(plan(&rs(1, 0), &all, epoch_plus(10)).delete, vec!["unscheduled", "unready", "new-ready"]);
        assert_eq!(plan(&rs(3, 0), &all, epoch_plus(10)).delete, vec!["unscheduled"]);
    }

    #[test]
    fn min_ready_seconds_delays_availability() {
        let p = pod("a", json!({"app": "web", "tier": "x"}), Some(("ReplicaSet", "rs-uid")), Some("n1"), true);
        let plan = plan(&rs(1, 30), &[&p], epoch_plus(10));
        assert_eq!(plan.status.ready_replicas, Some(1));
        assert_eq!(plan.status.available_replicas, Some(0));
        assert_eq!(plan.recheck_after, Some(std::time::Duration::from_secs(20)));
    }

    #[test]
    fn new_pods_come_from_the_template_with_a_controller_reference() {
        let p = new_pod(&rs(1, 0));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.labels().get("tier").map(String::as_str), Some("x"));
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller, owner.block_owner_deletion), ("ReplicaSet", "rs-uid", Some(true), Some(true)));
    }
}
