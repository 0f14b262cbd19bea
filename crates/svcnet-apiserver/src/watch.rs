//! Watch: a chunked stream of `{"type", "object"}` lines from the store's events, filtered by
//! the request's selectors, with bookmarks, `sendInitialEvents`, and the in-stream 410 that
//! clients rely on to relist.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use svcnet_api::selector::{FieldSelector, LabelSelector};
use svcnet_store::{EventKind, Revision};
use tokio::sync::mpsc;

use crate::{
    error::ApiError,
    negotiate::Output,
    object::meta_mut,
    registry::{self, Registry},
    request::Target,
    table,
};

/// What a watch request asked for.
pub struct WatchRequest {
    pub target: Target,
    pub label_selector: Option<LabelSelector>,
    pub field_selector: Option<FieldSelector>,
    /// `resourceVersion`; `None` or 0 means "current state first, then changes".
    pub resource_version: Option<Revision>,
    pub send_initial_events: bool,
    pub allow_bookmarks: bool,
    pub timeout: Duration,
    pub output: Output,
}

/// How often a bookmark is sent to watchers that allow them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// Starts the watch and returns the stream of encoded lines.
pub async fn start(registry: Registry, req: WatchRequest) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let prefix = Registry::list_prefix(&req.target);
    let info = req.target.info;
    // A named watch (`.../services/x?watch=1`) is a watch of one key.
    let field_selector = match (&req.target.name, req.field_selector.clone()) {
        (Some(name), sel) => {
            let mut s = sel.unwrap_or_default();
            s.requirements.push(("metadata.name".into(), name.clone(), true));
            Some(s)
        }
        (None, sel) => sel,
    };
    let matches = move |obj: &Value| registry::matches(info, obj, req.label_selector.as_ref(), field_selector.as_ref());

    // The starting point: replay from the requested revision, or list now and go on from there.
    let initial = req.resource_version.filter(|rv| *rv > 0).is_none() || req.send_initial_events;
    let (initial_objects, start_rev) = if initial {
        let mut objs = Vec::new();
        let mut start_after: Option<String> = None;
        let mut rev = None;
        loop {
            let page = registry.store.list(&prefix, start_after.as_deref(), Some(1000)).await?;
            rev.get_or_insert(page.revision);
            for kv in &page.items {
                let obj = registry::from_kv(kv)?;
                if matches(&obj) {
                    objs.push(obj);
                }
            }
            if !page.more || page.items.is_empty() {
                break;
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
        }
        // Listing in pages is not one snapshot: events between pages are replayed from the
        // first page's revision, so nothing is missed (at worst an object arrives twice).
        (objs, rev.unwrap_or(0))
    } else {
        (Vec::new(), req.resource_version.unwrap_or(0))
    };

    let mut events = match registry.store.watch(&prefix, start_rev).await {
        Ok(s) => s,
        Err(svcnet_store::Error::Compacted { requested, oldest }) => {
            // In-stream 410: kube-rs and client-go relist on it; an HTTP 410 would loop.
            let status = ApiError::expired(format!("too old resource version: {requested} ({oldest})")).to_status();
            let _ = tx.send(line("ERROR", &status)).await;
            return Ok(rx);
        }
        Err(e) => return Err(e.into()),
    };

    let output = req.output;
    let kind = info.kind;
    let api_version = info.api_version();
    tokio::spawn(async move {
        let mut first_table = true;
        let mut encode = |ty: &str, obj: &Value| -> Bytes {
            match output {
                Output::Table => {
                    let t = table::to_table(kind, std::slice::from_ref(obj), None, first_table);
                    first_table = false;
                    line(ty, &t)
                }
                Output::PartialMetadata => line(ty, &table::partial_metadata(obj)),
                _ => line(ty, obj),
            }
        };
        let mut last_rev = start_rev;
        for obj in &initial_objects {
            if tx.send(encode("ADDED", obj)).await.is_err() {
                return;
            }
        }
        if req.send_initial_events {
            let bm = json!({"kind": kind, "apiVersion": api_version, "metadata": {
                "resourceVersion": last_rev.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(line("BOOKMARK", &bm)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmarks.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = bookmarks.tick(), if req.allow_bookmarks => {
                    let bm = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": last_rev.to_string()}});
                    if tx.send(line("BOOKMARK", &bm)).await.is_err() { return; }
                }
                ev = events.next() => {
                    let Some(ev) = ev else { return };
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => {
                            // Cut off (too slow, shutdown): end the stream; the client re-watches
                            // from its last resourceVersion.
                            tracing::debug!(error = %e, "watch ended by the store");
                            return;
                        }
                    };
                    last_rev = ev.revision();
                    let Ok(mut obj) = registry::from_kv(&ev.kv) else { continue };
                    let now = matches(&obj);
                    let before = ev.prev.as_ref().and_then(|p| registry::from_kv(p).ok()).map(|p| matches(&p));
                    let ty = match (ev.kind, before, now) {
                        (EventKind::Created, _, true) => "ADDED",
                        (EventKind::Deleted, _, true) => "DELETED",
                        (EventKind::Modified, Some(false), true) => "ADDED",
                        (EventKind::Modified, Some(true), false) => "DELETED",
                        (EventKind::Modified, _, true) => "MODIFIED",
                        _ => continue,
                    };
                    meta_mut(&mut obj).insert("resourceVersion".into(), ev.revision().to_string().into());
                    if tx.send(encode(ty, &obj)).await.is_err() { return; }
                }
            }
        }
    });
    Ok(rx)
}

fn line(ty: &str, obj: &Value) -> Bytes {
    let mut s = serde_json::to_vec(&json!({"type": ty, "object": obj})).expect("serializable");
    s.push(b'\n');
    Bytes::from(s)
}
