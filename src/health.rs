//! `/metrics`, `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use kube::runtime::reflector::Store;

use crate::api::ApiState;
use crate::crd::CaptureJob;
use crate::metrics::Metrics;

#[derive(Clone)]
struct HealthState {
    metrics: Arc<Metrics>,
    jobs: Store<CaptureJob>,
    synced: tokio::sync::watch::Receiver<bool>,
    facade: Option<ApiState>,
}

/// The router: `/metrics` (Prometheus text), `/healthz` (the process serves), `/readyz`
/// (the job cache, and the facade's namespace cache where it runs, hold their first list; a replica waiting for the lease is ready too,
/// as it serves the facade from its cache).
pub fn router(
    metrics: Arc<Metrics>,
    jobs: Store<CaptureJob>,
    synced: tokio::sync::watch::Receiver<bool>,
    facade: Option<ApiState>,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(HealthState {
            metrics,
            jobs,
            synced,
            facade,
        })
}

async fn metrics_text(State(s): State<HealthState>) -> impl IntoResponse {
    s.metrics
        .count_jobs(s.jobs.state().iter().map(|j| j.as_ref()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<HealthState>) -> impl IntoResponse {
    // A follower (waiting for the lease) is ready: it serves the facade from its cache.
    let cache_ready = *s.synced.borrow() && s.facade.as_ref().is_none_or(|f| f.is_ready());
    if cache_ready {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "job cache not synced yet")
    }
}
