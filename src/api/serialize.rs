//! Pure serializers: a CaptureJob (from the watch cache) to the old API's JSON, with the keys
//! in the contract's order (serde_json's `preserve_order` keeps insertion order).

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Map, Value};

use crate::crd::{CaptureJob, JobState, NamedRef, PipelineRef};

/// The keys of the detail object, in order. List items are the same without `result`.
pub const DETAIL_KEYS: [&str; 24] = [
    "id",
    "details",
    "name",
    "delay",
    "limit",
    "shuffle",
    "project",
    "deployment",
    "source_image_collection",
    "source_image_single",
    "pipeline",
    "status",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "duration",
    "progress",
    "logs",
    "job_type",
    "data_export",
    "dispatch_mode",
    "result",
    "user_permissions",
];

/// Default of `?logs_limit`.
pub const LOGS_LIMIT_DEFAULT: usize = 1000;
/// Largest accepted `?logs_limit`.
pub const LOGS_LIMIT_MAX: i64 = 5000;

/// The two response formats of `?format=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `?format=json`.
    Json,
    /// `?format=api`: the readable HTML page.
    Api,
}

impl Format {
    /// Parses a `format` value; `None` for anything but `json` and `api`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "api" => Some(Format::Api),
            _ => None,
        }
    }

    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Api => "api",
        }
    }
}

/// How to build absolute URLs: the public base (`https://host[/prefix]`, no trailing slash)
/// and the `format` of the request, which links keep (as DRF's `reverse` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    base: String,
    format: Option<Format>,
}

impl Links {
    /// Links under `base`; a trailing `/` is dropped.
    pub fn new(base: &str, format: Option<Format>) -> Self {
        Links {
            base: base.trim_end_matches('/').to_string(),
            format,
        }
    }

    /// The base, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The absolute URL of `path` (which starts with `/`), with `?format=` if the request had it.
    pub fn object(&self, path: &str) -> String {
        match self.format {
            Some(f) => format!("{}{}?format={}", self.base, path, f.as_str()),
            None => format!("{}{}", self.base, path),
        }
    }
}

/// Everything a job's JSON depends on besides the job: links, the log cap, the caller's
/// permissions on it.
#[derive(Debug, Clone, Copy)]
pub struct RenderCtx<'a> {
    /// URL builder.
    pub links: &'a Links,
    /// Most log lines shown per stream.
    pub logs_limit: usize,
    /// `user_permissions` of the job (a subset of update, delete, run).
    pub permissions: &'a [&'static str],
}

/// Microseconds since the epoch of a Kubernetes timestamp.
pub fn micros(t: &Time) -> i64 {
    let ts = t.0;
    ts.as_microsecond()
}

/// ISO 8601, UTC, microseconds, trailing `Z`: `2024-04-30T04:18:48.365585Z`.
pub fn iso_micros(us: i64) -> Option<String> {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

fn time_value(t: Option<&Time>) -> Value {
    t.map(micros)
        .and_then(iso_micros)
        .map_or(Value::Null, Value::String)
}

/// Seconds between two instants as the old API's string, `"1.442684"`.
pub fn duration_string(from_us: i64, to_us: i64) -> String {
    let d = to_us.saturating_sub(from_us).max(0);
    format!("{}.{:06}", d / 1_000_000, d % 1_000_000)
}

/// `metadata.creationTimestamp` in microseconds.
pub fn created_at(job: &CaptureJob) -> Option<i64> {
    job.metadata.creation_timestamp.as_ref().map(micros)
}

/// `updated_at`: the latest of the creation time and the times in the status (scheduled,
/// started, progress clock, finished, condition transitions). Spec edits do not move it: the
/// watch cache drops `metadata.managedFields`, the only record of their time.
pub fn updated_at(job: &CaptureJob) -> Option<i64> {
    let mut times: Vec<i64> = Vec::new();
    times.extend(created_at(job));
    if let Some(s) = &job.status {
        for t in [
            &s.scheduled_at,
            &s.started_at,
            &s.progress_at,
            &s.finished_at,
        ]
        .into_iter()
        .flatten()
        {
            times.push(micros(t));
        }
        times.extend(s.conditions.iter().map(|c| micros(&c.last_transition_time)));
    }
    times.into_iter().max()
}

/// `started_at` in microseconds.
pub fn started_at(job: &CaptureJob) -> Option<i64> {
    job.status.as_ref()?.started_at.as_ref().map(micros)
}

/// `finished_at` in microseconds.
pub fn finished_at(job: &CaptureJob) -> Option<i64> {
    job.status.as_ref()?.finished_at.as_ref().map(micros)
}

fn clamp_progress(p: f64) -> f64 {
    if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn named_ref(links: &Links, collection: &str, r: Option<&NamedRef>) -> Value {
    match r {
        None => Value::Null,
        Some(r) => json!({
            "id": r.id,
            "name": r.name,
            "details": links.object(&format!("/api/v2/{collection}/{}/", r.id)),
            "user_permissions": [],
        }),
    }
}

fn pipeline_ref(links: &Links, r: Option<&PipelineRef>) -> Value {
    match r {
        None => Value::Null,
        Some(r) => json!({
            "id": r.id,
            "name": r.name,
            "slug": r.slug,
            "details": links.object(&format!("/api/v2/ml/pipelines/{}/", r.id)),
            "user_permissions": [],
        }),
    }
}

/// `progress`: stages straight from `status.progress` (a repeated stage key is shown once,
/// the first), `summary.status` always equal to the job's `status`.
fn progress_value(job: &CaptureJob) -> Value {
    let state = job.state();
    let progress = job.status.as_ref().map(|s| &s.progress);
    let mut seen = HashSet::new();
    let stages: Vec<Value> = progress
        .map(|p| p.stages.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|s| seen.insert(s.key.as_str()))
        .map(|s| {
            let params: Vec<Value> = s
                .params
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "key": p.key,
                        "category": if p.category.is_empty() { "default" } else { p.category.as_str() },
                        "value": p.value,
                    })
                })
                .collect();
            json!({
                "status": s.status.as_str(),
                "progress": clamp_progress(s.progress),
                "key": s.key,
                "name": s.name,
                "params": params,
            })
        })
        .collect();
    json!({
        "summary": {
            "status": state.as_str(),
            "progress": clamp_progress(progress.map_or(0.0, |p| p.summary.progress)),
        },
        "stages": stages,
        "errors": progress.map(|p| p.errors.clone()).unwrap_or_default(),
        "logs": [],
    })
}

fn logs_value(job: &CaptureJob, limit: usize) -> Value {
    let (stdout, stderr) = match &job.status {
        Some(s) => (
            s.logs.stdout.iter().take(limit).collect::<Vec<_>>(),
            s.logs.stderr.iter().take(limit).collect::<Vec<_>>(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    json!({ "stdout": stdout, "stderr": stderr })
}

/// The job object of the old API. `with_result` adds `result` (detail responses; list items
/// omit it). `id` is the job's REST id (see [`CaptureJob::job_id`]).
pub fn job_value(job: &CaptureJob, id: i64, ctx: RenderCtx<'_>, with_result: bool) -> Value {
    let spec = &job.spec;
    let links = ctx.links;
    let duration = match (started_at(job), finished_at(job)) {
        (Some(s), Some(f)) => Value::String(duration_string(s, f)),
        _ => Value::Null,
    };
    let status = job.status.as_ref();
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    o.insert(
        "details".into(),
        json!(links.object(&format!("/api/v2/jobs/{id}/"))),
    );
    o.insert("name".into(), json!(spec.name));
    o.insert("delay".into(), json!(spec.delay));
    o.insert("limit".into(), json!(spec.limit));
    o.insert("shuffle".into(), json!(spec.shuffle));
    o.insert(
        "project".into(),
        json!({
            "id": spec.project.id,
            "name": spec.project.name,
            "details": links.object(&format!("/api/v2/projects/{}/", spec.project.id)),
            "user_permissions": [],
        }),
    );
    o.insert(
        "deployment".into(),
        named_ref(links, "deployments", spec.deployment.as_ref()),
    );
    o.insert(
        "source_image_collection".into(),
        named_ref(
            links,
            "captures/collections",
            spec.source_image_collection.as_ref(),
        ),
    );
    o.insert(
        "source_image_single".into(),
        named_ref(links, "captures", spec.source_image_single.as_ref()),
    );
    o.insert(
        "pipeline".into(),
        pipeline_ref(links, spec.pipeline.as_ref()),
    );
    o.insert("status".into(), json!(job.state().as_str()));
    o.insert(
        "created_at".into(),
        time_value(job.metadata.creation_timestamp.as_ref()),
    );
    o.insert(
        "updated_at".into(),
        updated_at(job)
            .and_then(iso_micros)
            .map_or(Value::Null, Value::String),
    );
    o.insert(
        "started_at".into(),
        time_value(status.and_then(|s| s.started_at.as_ref())),
    );
    o.insert(
        "finished_at".into(),
        time_value(status.and_then(|s| s.finished_at.as_ref())),
    );
    o.insert("duration".into(), duration);
    o.insert("progress".into(), progress_value(job));
    o.insert("logs".into(), logs_value(job, ctx.logs_limit));
    o.insert(
        "job_type".into(),
        json!({ "name": spec.job_type.display_name(), "key": spec.job_type.key() }),
    );
    o.insert("data_export".into(), Value::Null);
    o.insert("dispatch_mode".into(), json!("internal"));
    if with_result {
        o.insert("result".into(), Value::Null);
    }
    o.insert("user_permissions".into(), json!(ctx.permissions));
    Value::Object(o)
}

/// The `?ids_only` list item: `{id, pipeline_slug, user_permissions}`.
pub fn ids_only_value(job: &CaptureJob, id: i64, permissions: &[&'static str]) -> Value {
    json!({
        "id": id,
        "pipeline_slug": job.spec.pipeline.as_ref().and_then(|p| p.slug.clone()),
        "user_permissions": permissions,
    })
}

/// The list envelope, keys in the old order.
pub fn envelope(
    count: usize,
    next: Option<String>,
    previous: Option<String>,
    results: Vec<Value>,
    permissions: &[&'static str],
) -> Value {
    json!({
        "count": count,
        "next": next,
        "previous": previous,
        "results": results,
        "user_permissions": permissions,
    })
}

/// The state the job is heading to given its spec, as the controller will decide it: what
/// an action's response shows. A final state whose spec asks for a newer attempt is a new
/// attempt (queued, or created when `start` is false); a cancel of a CREATED job revokes it
/// at once; a cancel of a running job is CANCELING until its Pods are gone.
pub fn projected_state(job: &CaptureJob) -> JobState {
    let state = job.state();
    let base = if awaits_new_attempt(job) {
        JobState::Created
    } else {
        state
    };
    match base {
        JobState::Created if job.spec.cancel => JobState::Revoked,
        JobState::Created if job.spec.start => JobState::Pending,
        JobState::Pending | JobState::Started | JobState::Retry if job.spec.cancel => {
            JobState::Canceling
        }
        other => other,
    }
}

/// Whether the spec asks for an attempt newer than the (final) one the status describes.
pub fn awaits_new_attempt(job: &CaptureJob) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| s.state.is_final() && s.attempt >= 1 && job.spec.attempt > s.attempt)
}

/// A copy of `job` showing [`projected_state`]; a projected new attempt shows reset progress
/// (stages CREATED at 0 with unknown values, no errors, no start or finish time), as the
/// controller will write it.
pub fn project(job: &CaptureJob) -> CaptureJob {
    let state = projected_state(job);
    let fresh = awaits_new_attempt(job);
    let mut out = job.clone();
    if state == job.state() && !fresh {
        return out;
    }
    let status = out.status.get_or_insert_with(Default::default);
    if fresh {
        status.attempt = job.spec.attempt;
        status.started_at = None;
        status.finished_at = None;
        status.progress.summary.progress = 0.0;
        status.progress.errors.clear();
        for stage in &mut status.progress.stages {
            stage.status = JobState::Created;
            stage.progress = 0.0;
            for p in &mut stage.params {
                p.value = Value::String(String::new());
            }
        }
    }
    status.state = state;
    status.progress.summary.status = state;
    out
}
