//! Prometheus metrics of the operator, served on `/metrics`.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::{CaptureJob, JobState};

/// Label of an error count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error kind, e.g. `kube`, `conflict`, `id`.
    pub kind: String,
}

/// Label of a job-state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Job state.
    pub state: String,
}

/// Label of an API request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Verb, e.g. `create`, `delete`, `patch`, `replace`.
    pub verb: String,
    /// Resource, e.g. `pods`, `capturejobs/status`.
    pub resource: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconcile errors by kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile durations in seconds.
    pub duration: Histogram,
    /// Jobs in the cache by state (refreshed on scrape).
    pub jobs: Family<StateLabels, Gauge<i64, AtomicI64>>,
    /// Pods created.
    pub pods_created: Counter,
    /// Requests the controller sent to the API server, by verb and resource.
    pub api_requests: Family<RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("antenna");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]);
        let jobs = Family::<StateLabels, Gauge<i64, AtomicI64>>::default();
        let pods_created = Counter::default();
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile errors by kind",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register("jobs", "CaptureJobs in the cache by state", jobs.clone());
        registry.register("pods_created", "Pods created", pods_created.clone());
        registry.register(
            "api_requests",
            "Requests the controller sent to the API server",
            api_requests.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            jobs,
            pods_created,
            api_requests,
        }
    }
}

impl Metrics {
    /// Counts one API request.
    pub fn request(&self, verb: &str, resource: &str) {
        self.api_requests
            .get_or_create(&RequestLabels {
                verb: verb.into(),
                resource: resource.into(),
            })
            .inc();
    }

    /// Counts one reconcile error.
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels { kind: kind.into() })
            .inc();
    }

    /// Refreshes the jobs-by-state gauges from the cache.
    pub fn count_jobs<'a>(&self, jobs: impl Iterator<Item = &'a CaptureJob>) {
        let mut counts = std::collections::BTreeMap::<JobState, i64>::new();
        for j in jobs {
            *counts.entry(j.state()).or_default() += 1;
        }
        for s in [
            JobState::Created,
            JobState::Pending,
            JobState::Started,
            JobState::Success,
            JobState::Failure,
            JobState::Retry,
            JobState::Canceling,
            JobState::Revoked,
        ] {
            self.jobs
                .get_or_create(&StateLabels {
                    state: s.as_str().into(),
                })
                .set(counts.get(&s).copied().unwrap_or(0));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
