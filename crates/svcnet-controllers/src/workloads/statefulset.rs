//! The StatefulSet controller (upstream's `pkg/controller/statefulset`): pods named
//! `<set>-<ordinal>` with a stable hostname under the governing Service (`subdomain` =
//! `serviceName`), created lowest ordinal first and each only once the ones before are Running
//! and Ready (`OrderedReady`), or all at once (`Parallel`); removed highest ordinal first;
//! recreated when they go; rolled to a new template highest ordinal first, down to the
//! `partition`.
//!
//! Left out: `volumeClaimTemplates` (no PersistentVolumeClaims are made) and their retention
//! policy, ControllerRevision objects (revisions are `<set>-<template hash>` names only, so a
//! pod recreated below the partition gets the new template, where upstream restores the
//! current revision), `maxUnavailable` for rolling updates, and `OnDelete` does nothing but
//! recreate deleted pods (which it does from the new template, as upstream).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use super::{Availability, Claim, Context, Expect, Key, Kind, Next, api_error, availability, claim, controller_ref, owners_after, selector};
use crate::{Result, pod as podutil};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// One change to make.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Action {
    /// Create the pod of this ordinal.
    Create(i32),
    /// Delete this pod (to remove it, or to have it recreated).
    Delete(String),
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub adopt: Vec<String>,
    pub release: Vec<String>,
    pub actions: Vec<Action>,
    pub status: StatefulSetStatus,
    /// When a Ready pod becomes available (`minReadySeconds`): look again then.
    pub recheck_after: Option<std::time::Duration>,
}

/// The ordinal of a pod of set `set` named `name` (`<set>-<ordinal>`).
pub fn ordinal(set: &str, name: &str) -> Option<i32> {
    let n: i32 = name.strip_prefix(set)?.strip_prefix('-')?.parse().ok()?;
    (n >= 0 && format!("{set}-{n}") == name).then_some(n)
}

/// The revision name of the set's current template.
pub fn update_revision(sts: &StatefulSet) -> String {
    let template = sts.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    format!("{}-{}", sts.name_any(), super::deployment::template_hash(&template, sts.status.as_ref().and_then(|s| s.collision_count)))
}

/// Upstream's `isRunningAndReady`.
fn running_and_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && podutil::is_ready(p)
}

fn is_failed(p: &Pod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed" | "Succeeded"))
}

fn revision_of(p: &Pod) -> Option<&str> {
    p.labels().get(REVISION_LABEL).map(String::as_str)
}

/// Upstream's `updateStatefulSet` without the I/O: what to create and delete now, and the
/// status.
#[doc(alias = "updateStatefulSet")]
pub fn plan(sts: &StatefulSet, pods: &[&Pod], now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let name = sts.name_any();
    let spec = sts.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let update = update_revision(sts);
    let current = sts.status.as_ref().and_then(|s| s.current_revision.clone()).unwrap_or_else(|| update.clone());

    let mut owned: BTreeMap<i32, &Pod> = BTreeMap::new();
    let mut condemned: Vec<(i32, &Pod)> = Vec::new();
    for &p in pods {
        let ord = ordinal(&name, &p.name_any());
        match claim(&sts.metadata, &p.metadata, ord.is_some() && selector::matches(&spec.selector, p.labels())) {
            Claim::Owned => {}
            Claim::Adopt => plan.adopt.push(p.name_any()),
            Claim::Release => {
                plan.release.push(p.name_any());
                continue;
            }
            Claim::Ignore => continue,
        }
        let Some(ord) = ord else { continue };
        if (start..start + replicas).contains(&ord) {
            owned.insert(ord, p);
        } else {
            condemned.push((ord, p));
        }
    }

    // The status, from the pods as they are.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut s = StatefulSetStatus { observed_generation: sts.metadata.generation, update_revision: Some(update.clone()), ..Default::default() };
    let (mut count, mut ready, mut avail, mut cur, mut upd) = (0, 0, 0, 0, 0);
    for p in owned.values().chain(condemned.iter().map(|(_, p)| p)).filter(|p| p.metadata.deletion_timestamp.is_none()) {
        count += 1;
        if running_and_ready(p) {
            ready += 1;
            match availability(p, min_ready, now) {
                Availability::Available => avail += 1,
                Availability::ReadyFor(d) => plan.recheck_after = Some(plan.recheck_after.map_or(d, |r| r.min(d))),
                Availability::NotReady => {}
            }
        }
        if revision_of(p) == Some(current.as_str()) {
            cur += 1;
        }
        if revision_of(p) == Some(update.as_str()) {
            upd += 1;
        }
    }
    let rolling = spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    s.replicas = count;
    s.ready_replicas = Some(ready);
    s.available_replicas = Some(avail);
    s.current_replicas = Some(cur);
    s.updated_replicas = Some(upd);
    s.current_revision = Some(current);
    // `completeRollingUpdate`: every pod is at the new revision and Ready.
    if rolling && upd == count && ready == count && count == replicas {
        s.current_revision = Some(update.clone());
        s.current_replicas = Some(upd);
    }
    plan.status = s;
    if sts.metadata.deletion_timestamp.is_some() {
        return plan;
    }

    // Make the pods of [start, start + replicas) exist and be healthy, in order.
    for ord in start..start + replicas {
        match owned.get(&ord) {
            None => {
                plan.actions.push(Action::Create(ord));
                if monotonic {
                    return plan;
                }
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                if monotonic {
                    return plan;
                }
            }
            Some(p) if is_failed(p) => {
                plan.actions.push(Action::Delete(p.name_any()));
                if monotonic {
                    return plan;
                }
            }
            Some(p) if !running_and_ready(p) && monotonic => return plan,
            Some(_) => {}
        }
    }
    // Then remove the condemned, highest ordinal first.
    condemned.sort_by_key(|(ord, _)| std::cmp::Reverse(*ord));
    for (_, p) in &condemned {
        if p.metadata.deletion_timestamp.is_some() {
            if monotonic {
                return plan;
            }
            continue;
        }
        plan.actions.push(Action::Delete(p.name_any()));
        if monotonic {
            return plan;
        }
    }
    if !plan.actions.is_empty() || !rolling {
        return plan;
    }
    // Then roll the template, highest ordinal first, one pod at a time, down to the partition.
    let partition = spec.update_strategy.as_ref().and_then(|u| u.rolling_update.as_ref()).and_then(|r| r.partition).unwrap_or(0);
    for ord in (start..start + replicas).rev().filter(|o| *o - start >= partition) {
        let Some(p) = owned.get(&ord) else { return plan };
        if revision_of(p) != Some(update.as_str()) && p.metadata.deletion_timestamp.is_none() {
            plan.actions.push(Action::Delete(p.name_any()));
            return plan;
        }
        if !running_and_ready(p) || p.metadata.deletion_timestamp.is_some() {
            return plan;
        }
    }
    plan
}

/// The pod of `ordinal` (upstream's `newVersionedStatefulSetPod`).
#[doc(alias = "newVersionedStatefulSetPod")]
pub fn new_pod(sts: &StatefulSet, ordinal: i32) -> Pod {
    let spec = sts.spec.clone().unwrap_or_default();
    let template = spec.template;
    let tm = template.metadata.unwrap_or_default();
    let name = format!("{}-{ordinal}", sts.name_any());
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), update_revision(sts));
    let mut pod_spec = template.spec.unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    pod_spec.subdomain = spec.service_name.filter(|s| !s.is_empty());
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref("StatefulSet", &sts.metadata)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

fn same_status(current: Option<&StatefulSetStatus>, want: &StatefulSetStatus) -> bool {
    let Some(c) = current else { return false };
    let n = |v: Option<i32>| v.unwrap_or(0);
    c.replicas == want.replicas
        && n(c.ready_replicas) == n(want.ready_replicas)
        && n(c.available_replicas) == n(want.available_replicas)
        && n(c.current_replicas) == n(want.current_replicas)
        && n(c.updated_replicas) == n(want.updated_replicas)
        && c.current_revision == want.current_revision
        && c.update_revision == want.update_revision
        && c.observed_generation == want.observed_generation
}

pub(super) async fn reconcile(ctx: &Context, key: &Key) -> Result<Next> {
    let Some(sts) = ctx.statefulsets.get(&key.object_ref()) else { return Ok(Next::Done) };
    let pods = ctx.pods_in(&key.namespace);
    let pods: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
    let plan = plan(&sts, &pods, Timestamp::now());
    let uid = sts.uid().unwrap_or_default();
    for name in &plan.adopt {
        if let Some(p) = pods.iter().find(|p| p.name_any() == *name) {
            ctx.set_owners(key, Kind::Pod, *p, owners_after(&p.metadata, &uid, Some(controller_ref("StatefulSet", &sts.metadata)))).await?;
        }
    }
    for name in &plan.release {
        if let Some(p) = pods.iter().find(|p| p.name_any() == *name) {
            ctx.set_owners(key, Kind::Pod, *p, owners_after(&p.metadata, &uid, None)).await?;
        }
    }
    for action in &plan.actions {
        match action {
            Action::Create(ord) => {
                ctx.create_pod(key, &new_pod(&sts, *ord)).await?;
                tracing::info!(%key, ordinal = ord, "created pod");
            }
            Action::Delete(name) => {
                ctx.delete_pod(key, name).await?;
                tracing::info!(%key, pod = %name, "deleted pod");
            }
        }
    }
    if !same_status(sts.status.as_ref(), &plan.status) {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let mut next = (*sts).clone();
        next.status = Some(plan.status);
        let written =
            api.replace_status(&key.name, &PostParams::default(), &next).await.map_err(|e| api_error("update status of", "StatefulSet", key, &key.name, e))?;
        ctx.expect(key, Kind::StatefulSet, &key.name, Expect::Updated(written.resource_version().unwrap_or_default()));
    }
    Ok(plan.recheck_after.map_or(Next::Done, Next::After))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn sts(replicas: i32, policy: &str, image: &str) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "ns", "uid": "sts-uid", "generation": 1},
            "spec": {"replicas": replicas, "serviceName": "db-hl", "podManagementPolicy": policy, "selector": {"matchLabels": {"app": "db"}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                     "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": image}]}}},
        }))
        .unwrap()
    }

    /// The set's pod of `ord`, as created, with `status`.
    fn member(set: &StatefulSet, ord: i32, status: Value) -> Pod {
        let mut p = new_pod(set, ord);
        p.metadata.uid = Some(format!("uid-{ord}"));
        p.status = Some(serde_json::from_value(status).unwrap());
        p
    }

    fn running_ready() -> Value {
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    }

    #[test]
    fn ordinals_parse_only_canonical_names() {
        assert_eq!(ordinal("db", "db-0"), Some(0));
        assert_eq!(ordinal("db", "db-12"), Some(12));
        assert_eq!(ordinal("db", "db-012"), None);
        assert_eq!(ordinal("db", "db-x"), None);
        assert_eq!(ordinal("db", "dbx-1"), None);
        assert_eq!(ordinal("db", "db--1"), None);
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time() {
        let set = sts(3, "OrderedReady", "v1");
        assert_eq!(plan(&set, &[], Timestamp::UNIX_EPOCH).actions, vec![Action::Create(0)]);
        let pending = member(&set, 0, json!({"phase": "Pending"}));
        assert!(plan(&set, &[&pending], Timestamp::UNIX_EPOCH).actions.is_empty());
        let ready = member(&set, 0, running_ready());
        assert_eq!(plan(&set, &[&ready], Timestamp::UNIX_EPOCH).actions, vec![Action::Create(1)]);
    }

    #[test]
    fn parallel_creates_all() {
        let set = sts(3, "Parallel", "v1");
        assert_eq!(plan(&set, &[], Timestamp::UNIX_EPOCH).actions, vec![Action::Create(0), Action::Create(1), Action::Create(2)]);
    }

    #[test]
    fn scales_down_highest_first_and_rolls_highest_first() {
        let set = sts(1, "OrderedReady", "v1");
        let pods: Vec<Pod> = (0..3).map(|i| member(&set, i, running_ready())).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(plan(&set, &refs, Timestamp::UNIX_EPOCH).actions, vec![Action::Delete("db-2".into())]);

        let new = sts(3, "OrderedReady", "v2");
        let p = plan(&new, &refs, Timestamp::UNIX_EPOCH);
        assert_eq!(p.actions, vec![Action::Delete("db-2".into())]);
        assert_eq!(p.status.updated_replicas, Some(0));
        // Once db-2 runs the new template and is Ready, db-1 is next.
        let mut pods = pods;
        pods[2] = member(&new, 2, running_ready());
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(plan(&new, &refs, Timestamp::UNIX_EPOCH).actions, vec![Action::Delete("db-1".into())]);
    }

    #[test]
    fn new_pods_have_identity_labels_and_hostname() {
        let set = sts(3, "OrderedReady", "v1");
        let p = new_pod(&set, 2);
        assert_eq!(p.metadata.name.as_deref(), Some("db-2"));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("db-2"), Some("db-hl")));
        assert_eq!(p.labels().get(POD_NAME_LABEL).map(String::as_str), Some("db-2"));
        assert_eq!(p.labels().get(POD_INDEX_LABEL).map(String::as_str), Some("2"));
        assert_eq!(p.labels().get(REVISION_LABEL), Some(&update_revision(&set)));
    }

    #[test]
    fn status_counts_and_completes_the_revision() {
        let set = sts(2, "OrderedReady", "v1");
        let pods: Vec<Pod> = (0..2).map(|i| member(&set, i, running_ready())).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let s = plan(&set, &refs, Timestamp::UNIX_EPOCH).status;
        assert_eq!((s.replicas, s.ready_replicas, s.available_replicas, s.updated_replicas), (2, Some(2), Some(2), Some(2)));
        assert_eq!(s.current_revision, s.update_revision);
        assert_eq!(s.observed_generation, Some(1));
    }
}
