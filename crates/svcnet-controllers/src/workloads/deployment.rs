//! The Deployment controller (upstream's `pkg/controller/deployment`): one ReplicaSet per pod
//! template, named `<deployment>-<pod-template-hash>`, rolled from the old ones to the new one
//! by the `RollingUpdate` (bounded by `maxSurge`/`maxUnavailable`) or `Recreate` strategy;
//! revisions in the `deployment.kubernetes.io/revision` annotation (what `kubectl rollout
//! history` and `undo` read), old ReplicaSets beyond `revisionHistoryLimit` deleted, and the
//! status and conditions `kubectl rollout status` waits for.
//!
//! Left out: proportional scaling of several active ReplicaSets during a rollout (a scale
//! event moves the new ReplicaSet and lets the rollout settle the old ones), the
//! `ProgressDeadlineExceeded` condition, hash collisions (`status.collisionCount` is never
//! raised: a name clash is retried), the deprecated `rollbackTo`, and the revision annotation on
//! the Deployment itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::serde_json::json;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use super::{Claim, Context, Expect, Key, Kind, Next, api_error, claim, controller_ref, is_controlled_by, is_not_found, owners_after, selector};
use crate::Result;

/// The label that tells a Deployment's ReplicaSets (and their pods) apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

// === pure decisions ===

/// Upstream's `ComputeHash`: a stable hash of the pod template (and the collision count), as a
/// string of characters that cannot spell words (`rand.SafeEncodeString`). Ours is FNV-1a over
/// the template's JSON rather than over Go's `%#v` dump, so the values differ from upstream's.
#[doc(alias = "ComputeHash")]
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = k8s_openapi::serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string().bytes().map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char).collect()
}

/// Upstream's `GetScaledValueFromIntOrPercent`: a number, or a percentage of `total` rounded up
/// or down.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let Some(pct) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else { return 0 };
            let product = pct * i64::from(total);
            let value = if round_up { (product + 99).div_euclid(100) } else { product.div_euclid(100) };
            i32::try_from(value).unwrap_or(0)
        }
    }
}

/// Upstream's `ResolveFenceposts`: (maxSurge, maxUnavailable) in pods; surge rounds up,
/// unavailability down, and both zero would never progress, so unavailability becomes 1.
#[doc(alias = "ResolveFenceposts")]
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.strategy.unwrap_or_default();
    if strategy.type_.as_deref() == Some("Recreate") {
        return (0, 0);
    }
    let ru = strategy.rolling_update.unwrap_or_default();
    let surge = scaled_value(ru.max_surge.as_ref().unwrap_or(&IntOrString::String("25%".into())), replicas, true);
    let unavailable = scaled_value(ru.max_unavailable.as_ref().unwrap_or(&IntOrString::String("25%".into())), replicas, false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

/// Available pods of `rs`, never more than it is meant to have (its status may predate a
/// scale-down).
fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0).min(spec_replicas(rs))
}

/// The revision of a ReplicaSet (0 when it has none).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations().get(REVISION_ANNOTATION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// The template without the `pod-template-hash` label.
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
        if labels.is_empty() {
            t.metadata.as_mut().unwrap().labels = None;
        }
    }
    t
}

/// Upstream's `FindNewReplicaSet`: the (oldest) ReplicaSet whose template is the Deployment's,
/// ignoring the hash label.
#[doc(alias = "FindNewReplicaSet")]
pub fn find_new<'a>(d: &Deployment, rss: &[&'a ReplicaSet]) -> Option<&'a ReplicaSet> {
    let template = without_hash(&d.spec.as_ref()?.template);
    let mut matching: Vec<&'a ReplicaSet> =
        rss.iter().copied().filter(|rs| rs.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| without_hash(t) == template)).collect();
    matching.sort_by_key(|rs| (rs.metadata.creation_timestamp.clone(), rs.name_any()));
    matching.first().copied()
}

/// The annotations a ReplicaSet of `d` carries: the Deployment's own (but not those the
/// controller or kubectl keep), plus revision, desired and max replicas.
pub fn rs_annotations(d: &Deployment, revision: i64) -> BTreeMap<String, String> {
    let mut a: BTreeMap<String, String> = d
        .annotations()
        .iter()
        .filter(|(k, _)| {
            ![LAST_APPLIED_ANNOTATION, REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION, DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION]
                .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    a.insert(REVISION_ANNOTATION.into(), revision.to_string());
    a.extend(replicas_annotations(d));
    a
}

fn replicas_annotations(d: &Deployment) -> [(String, String); 2] {
    let (surge, _) = fenceposts(d);
    [(DESIRED_REPLICAS_ANNOTATION.into(), replicas_of(d).to_string()), (MAX_REPLICAS_ANNOTATION.into(), (replicas_of(d) + surge).to_string())]
}

/// The new ReplicaSet for `d`'s current template.
pub fn new_replicaset(d: &Deployment, revision: i64, replicas: i32) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let hash = template_hash(&spec.template, d.status.as_ref().and_then(|s| s.collision_count));
    let mut template = spec.template.clone();
    template.metadata.get_or_insert_default().labels.get_or_insert_default().insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
    let mut selector = spec.selector.clone();
    selector.match_labels.get_or_insert_default().insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.metadata.namespace.clone(),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(rs_annotations(d, revision)),
            owner_references: Some(vec![controller_ref("Deployment", &d.metadata)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec { replicas: Some(replicas), min_ready_seconds: spec.min_ready_seconds, selector, template: Some(template) }),
        status: None,
    }
}

/// Upstream's `NewRSNewReplicas`: how many pods the new ReplicaSet may have now. Every
/// ReplicaSet counts with the larger of its spec and its status, so that pods an old one has
/// not deleted yet still count against `maxSurge`.
#[doc(alias = "NewRSNewReplicas")]
pub fn new_rs_replicas(d: &Deployment, new_spec: i32, all: &[&ReplicaSet]) -> i32 {
    let replicas = replicas_of(d);
    let (surge, _) = fenceposts(d);
    if is_recreate(d) {
        return replicas;
    }
    let current: i32 = all.iter().map(|rs| spec_replicas(rs).max(status_replicas(rs))).sum();
    let max_total = replicas + surge;
    if current >= max_total {
        return new_spec;
    }
    new_spec + (max_total - current).min(replicas - new_spec).max(0)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// One step of a rolling update (upstream's `reconcileNewReplicaSet`, then, when that has
/// nothing to do, `reconcileOldReplicaSets`): the ReplicaSets to scale, with their new sizes.
/// `olds` must be oldest first.
#[doc(alias = "rolloutRolling")]
pub fn rolling_step(d: &Deployment, new: &ReplicaSet, olds: &[&ReplicaSet]) -> Vec<(String, i32)> {
    let replicas = replicas_of(d);
    let new_spec = spec_replicas(new);
    let all: Vec<&ReplicaSet> = std::iter::once(new).chain(olds.iter().copied()).collect();
    if new_spec > replicas {
        return vec![(new.name_any(), replicas)];
    }
    let grown = new_rs_replicas(d, new_spec, &all);
    if grown != new_spec {
        return vec![(new.name_any(), grown)];
    }

    let old_pods: i32 = olds.iter().map(|rs| spec_replicas(rs)).sum();
    if old_pods == 0 {
        return Vec::new();
    }
    let (_, unavailable) = fenceposts(d);
    let all_pods: i32 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let min_available = replicas - unavailable;
    let new_unavailable = new_spec - available(new);
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut sizes: Vec<(String, i32)> = olds.iter().map(|rs| (rs.name_any(), spec_replicas(rs))).collect();
    // `cleanupUnhealthyReplicas`: first the old pods that are not available anyway.
    let mut cleaned = 0;
    for (rs, size) in olds.iter().zip(sizes.iter_mut()) {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = size.1 - available(rs);
        if size.1 == 0 || unhealthy <= 0 {
            continue;
        }
        let down = unhealthy.min(max_scaled_down - cleaned);
        size.1 -= down;
        cleaned += down;
    }
    // `scaleDownOldReplicaSetsForRollingUpdate`: then available ones, down to minAvailable.
    let available_now: i32 = all.iter().map(|rs| available(rs)).sum();
    if available_now > min_available {
        let mut budget = available_now - min_available;
        for size in sizes.iter_mut() {
            if budget == 0 {
                break;
            }
            let down = size.1.min(budget);
            size.1 -= down;
            budget -= down;
        }
    }
    sizes.into_iter().zip(olds).filter(|((_, size), rs)| *size != spec_replicas(rs)).map(|(s, _)| s).collect()
}

/// Upstream's `cleanupDeployment`: old ReplicaSets that have nothing left, oldest revision
/// first, beyond `revisionHistoryLimit`.
#[doc(alias = "cleanupDeployment")]
pub fn history_to_delete(d: &Deployment, olds: &[&ReplicaSet]) -> Vec<String> {
    let limit = usize::try_from(d.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0)).unwrap_or(0);
    let mut empty: Vec<&ReplicaSet> = olds
        .iter()
        .copied()
        .filter(|rs| {
            spec_replicas(rs) == 0
                && status_replicas(rs) == 0
                && rs.metadata.deletion_timestamp.is_none()
                && rs.status.as_ref().and_then(|s| s.observed_generation) == rs.metadata.generation
        })
        .collect();
    if empty.len() <= limit {
        return Vec::new();
    }
    empty.sort_by_key(|rs| (revision(rs), rs.metadata.creation_timestamp.clone()));
    empty[..empty.len() - limit].iter().map(|rs| rs.name_any()).collect()
}

/// Upstream's `calculateStatus` and `syncRolloutStatus`: counts from the ReplicaSets, and the
/// `Available` and `Progressing` conditions.
#[doc(alias = "calculateStatus")]
pub fn status(d: &Deployment, new: Option<&ReplicaSet>, all: &[&ReplicaSet], now: Timestamp) -> DeploymentStatus {
    let replicas = replicas_of(d);
    let (_, max_unavailable) = fenceposts(d);
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let available = sum(&|rs| rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0));
    let mut s = DeploymentStatus {
        replicas: Some(sum(&status_replicas)),
        updated_replicas: Some(new.map_or(0, status_replicas)),
        ready_replicas: Some(sum(&|rs| rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0))),
        available_replicas: Some(available),
        unavailable_replicas: Some((sum(&spec_replicas) - available).max(0)),
        observed_generation: d.metadata.generation,
        collision_count: d.status.as_ref().and_then(|s| s.collision_count),
        conditions: d.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (status, reason, message) = if available >= replicas - max_unavailable {
        ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    } else {
        ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    };
    set_condition(&mut s, "Available", status, reason, message.to_string(), now);

    let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
    let complete = s.updated_replicas == Some(replicas) && s.replicas == Some(replicas) && s.available_replicas == Some(replicas);
    let new_name = new.map(|rs| rs.name_any()).unwrap_or_default();
    if paused {
        set_condition(&mut s, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into(), now);
    } else if complete && new.is_some() {
        set_condition(&mut s, "Progressing", "True", "NewReplicaSetAvailable", format!("ReplicaSet {new_name:?} has successfully progressed."), now);
    } else if new.is_some() {
        set_condition(&mut s, "Progressing", "True", "ReplicaSetUpdated", format!("ReplicaSet {new_name:?} is progressing."), now);
    }
    s
}

/// Upstream's `SetDeploymentCondition`: a condition with the same status and reason is left
/// as it is; a changed one keeps its transition time when only the reason changed.
fn set_condition(s: &mut DeploymentStatus, type_: &str, status: &str, reason: &str, message: String, now: Timestamp) {
    let conditions = s.conditions.get_or_insert_default();
    let current = conditions.iter().find(|c| c.type_ == type_);
    if current.is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason)) {
        return;
    }
    let transition = current.filter(|c| c.status == status).and_then(|c| c.last_transition_time.clone()).unwrap_or(Time(now));
    let condition = DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(transition),
    };
    conditions.retain(|c| c.type_ != type_);
    conditions.push(condition);
}

/// Whether `current` says the same as `want`.
fn same_status(current: Option<&DeploymentStatus>, want: &DeploymentStatus) -> bool {
    let Some(c) = current else { return false };
    let n = |v: Option<i32>| v.unwrap_or(0);
    n(c.replicas) == n(want.replicas)
        && n(c.updated_replicas) == n(want.updated_replicas)
        && n(c.ready_replicas) == n(want.ready_replicas)
        && n(c.available_replicas) == n(want.available_replicas)
        && n(c.unavailable_replicas) == n(want.unavailable_replicas)
        && c.observed_generation == want.observed_generation
        && c.conditions == want.conditions
}

// === reconcile ===

pub(super) async fn reconcile(ctx: &Context, key: &Key) -> Result<Next> {
    let Some(d) = ctx.deployments.get(&key.object_ref()) else { return Ok(Next::Done) };
    let spec = d.spec.clone().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &key.namespace);

    // Claim the ReplicaSets.
    let candidates = ctx.replicasets.state_filter(|rs| rs.namespace().as_deref() == Some(key.namespace.as_str()));
    let mut wrote = false;
    for rs in &candidates {
        match claim(&d.metadata, &rs.metadata, selector::matches(&spec.selector, rs.labels())) {
            Claim::Adopt => {
                ctx.set_owners(key, Kind::ReplicaSet, rs.as_ref(), owners_after(&rs.metadata, &uid, Some(controller_ref("Deployment", &d.metadata)))).await?;
                wrote = true;
            }
            Claim::Release => {
                ctx.set_owners(key, Kind::ReplicaSet, rs.as_ref(), owners_after(&rs.metadata, &uid, None)).await?;
                wrote = true;
            }
            Claim::Owned | Claim::Ignore => {}
        }
    }
    if wrote {
        return Ok(Next::WaitForCache);
    }
    let owned: Vec<&ReplicaSet> = candidates.iter().map(Arc::as_ref).filter(|rs| is_controlled_by(&rs.metadata, Some(uid.as_str()))).collect();
    let new = find_new(&d, &owned);
    let mut olds: Vec<&ReplicaSet> = owned.iter().copied().filter(|rs| new.is_none_or(|n| n.uid() != rs.uid())).collect();
    olds.sort_by_key(|rs| (rs.metadata.creation_timestamp.clone(), rs.name_any()));
    let next_revision = olds.iter().map(|rs| revision(rs)).max().unwrap_or(0) + 1;

    if d.metadata.deletion_timestamp.is_some() || spec.paused == Some(true) {
        return write_status(ctx, key, &d, new, &owned).await;
    }

    let Some(new) = new else {
        if is_recreate(&d) {
            let mut scaled = false;
            for rs in olds.iter().filter(|rs| spec_replicas(rs) > 0) {
                scale(ctx, key, &rs_api, rs, Some(0), &BTreeMap::new(), None).await?;
                scaled = true;
            }
            if scaled || recreate_waits(ctx, key, &olds) {
                return write_status(ctx, key, &d, None, &owned).await;
            }
        }
        let replicas = new_rs_replicas(&d, 0, &owned);
        let rs = new_replicaset(&d, next_revision, replicas);
        return match rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                tracing::info!(%key, replicaset = %created.name_any(), replicas, "created new ReplicaSet");
                ctx.expect(key, Kind::ReplicaSet, &created.name_any(), Expect::Created(created.resource_version().unwrap_or_default()));
                Ok(Next::WaitForCache)
            }
            // An AlreadyExists is ours not cached yet, or someone else's of that name (a hash
            // collision): retried either way.
            Err(e) => Err(api_error("create", "ReplicaSet", key, rs.metadata.name.as_deref().unwrap_or(""), e)),
        };
    };

    // The new ReplicaSet's revision (after an undo it comes back as the newest), annotations
    // and minReadySeconds.
    let mut want_annotations = BTreeMap::new();
    if revision(new) < next_revision {
        want_annotations.insert(REVISION_ANNOTATION.to_string(), next_revision.to_string());
    }
    if new.spec.as_ref().and_then(|s| s.min_ready_seconds) != spec.min_ready_seconds {
        scale(ctx, key, &rs_api, new, None, &want_annotations, spec.min_ready_seconds).await?;
        return Ok(Next::WaitForCache);
    }

    let steps = if is_recreate(&d) {
        let mut steps: Vec<(String, i32)> = olds.iter().filter(|rs| spec_replicas(rs) > 0).map(|rs| (rs.name_any(), 0)).collect();
        if steps.is_empty() && !recreate_waits(ctx, key, &olds) && spec_replicas(new) != replicas_of(&d) {
            steps.push((new.name_any(), replicas_of(&d)));
        }
        steps
    } else {
        rolling_step(&d, new, &olds)
    };
    let annotations_stale = replicas_annotations(&d).iter().any(|(k, v)| new.annotations().get(k) != Some(v));
    if !want_annotations.is_empty() || (annotations_stale && !steps.iter().any(|(name, _)| *name == new.name_any())) {
        scale(ctx, key, &rs_api, new, None, &want_annotations, None).await?;
    }
    for (name, replicas) in &steps {
        let Some(rs) = owned.iter().find(|rs| rs.name_any() == *name) else { continue };
        let extra = if *name == new.name_any() { want_annotations.clone() } else { BTreeMap::new() };
        scale(ctx, key, &rs_api, rs, Some(*replicas), &extra, None).await?;
        tracing::info!(%key, replicaset = %name, replicas, "scaled ReplicaSet");
    }

    let status = status(&d, Some(new), &owned, Timestamp::now());
    let complete = status.conditions.iter().flatten().any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable"));
    if complete && steps.is_empty() {
        for name in history_to_delete(&d, &olds) {
            match rs_api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => tracing::info!(%key, replicaset = %name, "deleted old ReplicaSet beyond revisionHistoryLimit"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_error("delete", "ReplicaSet", key, &name, e)),
            }
            ctx.expect(key, Kind::ReplicaSet, &name, Expect::Deleted);
        }
    }
    write_status(ctx, key, &d, Some(new), &owned).await
}

/// Whether a `Recreate` rollout must still wait for old pods to go (upstream's
/// `oldPodsRunning`).
fn recreate_waits(ctx: &Context, key: &Key, olds: &[&ReplicaSet]) -> bool {
    if olds.iter().any(|rs| status_replicas(rs) > 0 || spec_replicas(rs) > 0) {
        return true;
    }
    let uids: Vec<String> = olds.iter().filter_map(|rs| rs.uid()).collect();
    ctx.pods_in(&key.namespace).iter().any(|p: &Arc<Pod>| {
        let finished = matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        !finished && uids.iter().any(|uid| is_controlled_by(&p.metadata, Some(uid)))
    })
}

/// Scales a ReplicaSet (and stamps the desired/max annotations), or only sets annotations or
/// `minReadySeconds`.
async fn scale(
    ctx: &Context,
    key: &Key,
    api: &Api<ReplicaSet>,
    rs: &ReplicaSet,
    replicas: Option<i32>,
    annotations: &BTreeMap<String, String>,
    min_ready_seconds: Option<i32>,
) -> Result<()> {
    let d = ctx.deployments.get(&key.object_ref());
    let mut all = annotations.clone();
    if let Some(d) = d.as_deref() {
        all.extend(replicas_annotations(d));
    }
    let mut patch = json!({"metadata": {"annotations": all}});
    if let Some(r) = replicas {
        patch["spec"]["replicas"] = r.into();
    }
    if let Some(m) = min_ready_seconds {
        patch["spec"]["minReadySeconds"] = m.into();
    }
    let name = rs.name_any();
    let written = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| api_error("patch", "ReplicaSet", key, &name, e))?;
    ctx.expect(key, Kind::ReplicaSet, &name, Expect::Updated(written.resource_version().unwrap_or_default()));
    Ok(())
}

async fn write_status(ctx: &Context, key: &Key, d: &Deployment, new: Option<&ReplicaSet>, all: &[&ReplicaSet]) -> Result<Next> {
    let want = status(d, new, all, Timestamp::now());
    if same_status(d.status.as_ref(), &want) {
        return Ok(Next::Done);
    }
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let mut next = d.clone();
    next.status = Some(want);
    let written =
        api.replace_status(&key.name, &PostParams::default(), &next).await.map_err(|e| api_error("update status of", "Deployment", key, &key.name, e))?;
    ctx.expect(key, Kind::Deployment, &key.name, Expect::Updated(written.resource_version().unwrap_or_default()));
    Ok(Next::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn deployment(replicas: i32, strategy: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": 2, "annotations": {"kubernetes.io/change-cause": "v2", LAST_APPLIED_ANNOTATION: "{}"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "strategy": strategy,
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v2"}]}}},
        }))
        .unwrap()
    }

    /// A ReplicaSet `name` with `spec` replicas of which `available` are available.
    fn rs(name: &str, spec: i32, available: i32, created: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "creationTimestamp": created, "generation": 1, "annotations": {REVISION_ANNOTATION: "1"}},
            "spec": {"replicas": spec, "selector": {}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}},
            "status": {"replicas": spec, "availableReplicas": available, "readyReplicas": available, "observedGeneration": 1},
        }))
        .unwrap()
    }

    fn rolling(surge: Value, unavailable: Value) -> Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        assert_eq!(fenceposts(&deployment(10, rolling(json!("25%"), json!("25%")))), (3, 2));
        assert_eq!(fenceposts(&deployment(3, rolling(json!("25%"), json!("25%")))), (1, 0));
        assert_eq!(fenceposts(&deployment(3, rolling(json!(0), json!("10%")))), (0, 1));
        assert_eq!(fenceposts(&deployment(3, rolling(json!(2), json!(1)))), (2, 1));
        assert_eq!(fenceposts(&deployment(3, json!({"type": "Recreate"}))), (0, 0));
    }

    #[test]
    fn hash_is_stable_safe_and_template_dependent() {
        let d = deployment(3, rolling(json!(1), json!(0)));
        let t = &d.spec.as_ref().unwrap().template;
        let h = template_hash(t, None);
        assert_eq!(h, template_hash(t, None));
        assert!(h.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)), "{h}");
        assert_ne!(h, template_hash(t, Some(1)));
        let mut other = t.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("v3".into());
        assert_ne!(h, template_hash(&other, None));
    }

    #[test]
    fn new_replicaset_carries_hash_revision_and_annotations() {
        let d = deployment(3, rolling(json!(1), json!(0)));
        let rs = new_replicaset(&d, 4, 1);
        let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
        assert_eq!(rs.metadata.name, Some(format!("web-{hash}")));
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(spec.selector.match_labels.as_ref().unwrap().get(POD_TEMPLATE_HASH_LABEL), Some(&hash));
        assert_eq!(spec.template.as_ref().unwrap().metadata.as_ref().unwrap().labels.as_ref().unwrap().get(POD_TEMPLATE_HASH_LABEL), Some(&hash));
        let a = rs.annotations();
        assert_eq!(a.get(REVISION_ANNOTATION).map(String::as_str), Some("4"));
        assert_eq!(a.get(DESIRED_REPLICAS_ANNOTATION).map(String::as_str), Some("3"));
        assert_eq!(a.get(MAX_REPLICAS_ANNOTATION).map(String::as_str), Some("4"));
        assert_eq!(a.get("kubernetes.io/change-cause").map(String::as_str), Some("v2"));
        assert!(!a.contains_key(LAST_APPLIED_ANNOTATION));
        // It is found again as the new one, the hash label notwithstanding.
        assert!(find_new(&d, &[&rs]).is_some());
        assert!(find_new(&d, &[&super::tests::rs("old", 3, 3, "2024-01-01T00:00:00Z")]).is_none());
    }

    #[test]
    fn rolling_update_respects_surge_and_unavailability() {
        let d = deployment(3, rolling(json!(1), json!(0)));
        let old = rs("old", 3, 3, "2024-01-01T00:00:00Z");
        // The new ReplicaSet starts with the surge.
        assert_eq!(new_rs_replicas(&d, 0, &[&old]), 1);
        let new = rs("new", 1, 0, "2024-01-02T00:00:00Z");
        // Nothing may go while the new pod is not available.
        assert!(rolling_step(&d, &new, &[&old]).is_empty());
        let new = rs("new", 1, 1, "2024-01-02T00:00:00Z");
        assert_eq!(rolling_step(&d, &new, &[&old]), vec![("old".to_string(), 2)]);
        // Old pods not yet deleted still count against the surge.
        let mut lagging = rs("old", 2, 2, "2024-01-01T00:00:00Z");
        lagging.status.as_mut().unwrap().replicas = 3;
        assert!(rolling_step(&d, &new, &[&lagging]).is_empty());
        let old = rs("old", 2, 2, "2024-01-01T00:00:00Z");
        assert_eq!(rolling_step(&d, &new, &[&old]), vec![("new".to_string(), 2)]);
    }

    #[test]
    fn rolling_update_with_unavailability_scales_down_first() {
        let d = deployment(4, rolling(json!(0), json!(1)));
        let old = rs("old", 4, 4, "2024-01-01T00:00:00Z");
        let new = rs("new", 0, 0, "2024-01-02T00:00:00Z");
        assert_eq!(new_rs_replicas(&d, 0, &[&old]), 0);
        assert_eq!(rolling_step(&d, &new, &[&old]), vec![("old".to_string(), 3)]);
        // Unavailable old pods go first, beyond maxUnavailable's budget for available ones.
        let sick = rs("old", 4, 2, "2024-01-01T00:00:00Z");
        assert_eq!(rolling_step(&d, &new, &[&sick]), vec![("old".to_string(), 3)]);
    }

    #[test]
    fn scaling_moves_the_new_replicaset() {
        let d = deployment(0, rolling(json!("25%"), json!("25%")));
        let new = rs("new", 3, 3, "2024-01-02T00:00:00Z");
        assert_eq!(rolling_step(&d, &new, &[]), vec![("new".to_string(), 0)]);
        let d = deployment(3, rolling(json!("25%"), json!("25%")));
        let new = rs("new", 0, 0, "2024-01-02T00:00:00Z");
        assert_eq!(rolling_step(&d, &new, &[]), vec![("new".to_string(), 3)]);
    }

    #[test]
    fn status_and_conditions() {
        let d = deployment(3, rolling(json!(1), json!(0)));
        let old = rs("old", 1, 1, "2024-01-01T00:00:00Z");
        let new = rs("new", 3, 2, "2024-01-02T00:00:00Z");
        let now = Timestamp::from_second(1_704_067_200).unwrap();
        let s = status(&d, Some(&new), &[&new, &old], now);
        assert_eq!((s.replicas, s.updated_replicas, s.available_replicas, s.unavailable_replicas), (Some(4), Some(3), Some(3), Some(1)));
        assert_eq!(s.observed_generation, Some(2));
        let cond = |s: &DeploymentStatus, t: &str| s.conditions.iter().flatten().find(|c| c.type_ == t).map(|c| (c.status.clone(), c.reason.clone().unwrap()));
        assert_eq!(cond(&s, "Available"), Some(("True".into(), "MinimumReplicasAvailable".into())));
        assert_eq!(cond(&s, "Progressing"), Some(("True".into(), "ReplicaSetUpdated".into())));
        let done = rs("new", 3, 3, "2024-01-02T00:00:00Z");
        let s = status(&d, Some(&done), &[&done], now);
        assert_eq!(cond(&s, "Progressing"), Some(("True".into(), "NewReplicaSetAvailable".into())));
        let none = rs("new", 3, 1, "2024-01-02T00:00:00Z");
        let s = status(&d, Some(&none), &[&none], now);
        assert_eq!(cond(&s, "Available"), Some(("False".into(), "MinimumReplicasUnavailable".into())));
    }

    #[test]
    fn history_beyond_the_limit_goes_oldest_revision_first() {
        let mut d = deployment(3, rolling(json!(1), json!(0)));
        d.spec.as_mut().unwrap().revision_history_limit = Some(1);
        let mut a = rs("a", 0, 0, "2024-01-01T00:00:00Z");
        a.annotations_mut().insert(REVISION_ANNOTATION.into(), "2".into());
        let mut b = rs("b", 0, 0, "2024-01-02T00:00:00Z");
        b.annotations_mut().insert(REVISION_ANNOTATION.into(), "1".into());
        let busy = rs("busy", 1, 1, "2024-01-03T00:00:00Z");
        assert_eq!(history_to_delete(&d, &[&a, &b, &busy]), vec!["b".to_string()]);
    }
}
