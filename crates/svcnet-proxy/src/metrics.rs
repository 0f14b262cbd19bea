//! `/metrics` and `/healthz`, with upstream's metric names (`kubeproxy_` prefix).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of `sync_proxy_rules_duration_seconds`: a full or a partial sync.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    pub kind: &'static str,
}

/// The proxy's metrics.
pub struct Metrics {
    registry: Registry,
    pub sync_duration: Family<SyncLabels, Histogram>,
    pub network_programming: Histogram,
    pub sync_errors: Counter,
    /// Unix seconds of the last successful sync (0 = never): `/healthz` is healthy once synced.
    last_sync: AtomicU64,
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("kubeproxy");
        let sync_duration = Family::<SyncLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        let network_programming = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let sync_errors = Counter::default();
        registry.register("sync_proxy_rules_duration_seconds", "Time to program the rules, by kind (full or partial)", sync_duration.clone());
        registry.register(
            "network_programming_duration_seconds",
            "From an EndpointSlice or Service change to its rules in the kernel",
            network_programming.clone(),
        );
        registry.register("sync_proxy_rules_errors", "Failed rule syncs", sync_errors.clone());
        Arc::new(Metrics { registry, sync_duration, network_programming, sync_errors, last_sync: AtomicU64::new(0) })
    }

    pub fn synced(&self, kind: &'static str, took: Duration) {
        self.sync_duration.get_or_create(&SyncLabels { kind }).observe(took.as_secs_f64());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1);
        self.last_sync.store(now, Ordering::Relaxed);
    }

    pub fn is_synced(&self) -> bool {
        self.last_sync.load(Ordering::Relaxed) != 0
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// The `/metrics` + `/healthz` router.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    let for_metrics = Arc::clone(&metrics);
    axum::Router::new().route("/metrics", get(move || async move { for_metrics.encode() })).route(
        "/healthz",
        get(move || async move { if metrics.is_synced() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "not synced") } }),
    )
}
