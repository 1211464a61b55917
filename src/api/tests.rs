//! Handler tests over a seeded watch cache, with a fake backend (writes applied to the
//! store) and a fake authorizer: no cluster. Run with `cargo test --lib api::`.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::ObjectMeta;
use kube::core::PartialObjectMetaExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::actions::{plan, Action};
use super::auth::{AuthError, Authorizer, User, Verb};
use super::backend::{BackendError, JobBackend};
use super::query::LIST_PARAMS;
use super::serialize::{self, DETAIL_KEYS};
use super::*;
use crate::crd::{CaptureJob, JobState, LABEL_ID, LABEL_PROJECT_ID};

// ---------------------------------------------------------------------------------------
// Fakes
// ---------------------------------------------------------------------------------------

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[derive(Default)]
struct FakeBackend {
    writer: Mutex<Option<Writer<CaptureJob>>>,
    store: Mutex<Option<Store<CaptureJob>>>,
    next_id: AtomicI64,
    calls: Mutex<Vec<(String, Value)>>,
    fail: Mutex<Option<&'static str>>,
}

impl FakeBackend {
    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, what: String, v: Value) {
        self.calls.lock().unwrap().push((what, v));
    }

    fn failure(&self) -> Option<BackendError> {
        match *self.fail.lock().unwrap() {
            Some("conflict") => Some(BackendError::Conflict("already exists".into())),
            Some("invalid") => Some(BackendError::Invalid("spec.delay: bad".into())),
            Some("down") => Some(BackendError::Unavailable("connection refused".into())),
            Some("gone") => Some(BackendError::NotFound),
            _ => None,
        }
    }

    fn apply(&self, event: Event<CaptureJob>) {
        if let Some(w) = self.writer.lock().unwrap().as_mut() {
            w.apply_watcher_event(&event);
        }
    }

    fn get(&self, ns: &str, name: &str) -> Option<CaptureJob> {
        let store = self.store.lock().unwrap();
        store
            .as_ref()?
            .get(&ObjectRef::new(name).within(ns))
            .map(|j| (*j).clone())
    }
}

impl JobBackend for FakeBackend {
    fn allocate_id(&self) -> BoxFuture<'_, Result<i64, BackendError>> {
        Box::pin(async move {
            if *self.fail.lock().unwrap() == Some("ids") {
                return Err(BackendError::Unavailable("allocator down".into()));
            }
            Ok(self.next_id.fetch_add(1, Ordering::SeqCst))
        })
    }

    fn create<'a>(
        &'a self,
        job: &'a CaptureJob,
    ) -> BoxFuture<'a, Result<CaptureJob, BackendError>> {
        Box::pin(async move {
            self.record(
                format!(
                    "create {}/{}",
                    job.metadata.namespace.as_deref().unwrap_or(""),
                    job.metadata.name.as_deref().unwrap_or("")
                ),
                serde_json::to_value(job).unwrap(),
            );
            if let Some(e) = self.failure() {
                return Err(e);
            }
            let mut stored = job.clone();
            stored.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
            stored.metadata.uid = Some("uid-new".into());
            stored.metadata.resource_version = Some("100".into());
            self.apply(Event::Apply(stored.clone()));
            Ok(stored)
        })
    }

    fn patch_spec<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        spec_patch: &'a Value,
    ) -> BoxFuture<'a, Result<CaptureJob, BackendError>> {
        Box::pin(async move {
            self.record(format!("patch {namespace}/{name}"), spec_patch.clone());
            if let Some(e) = self.failure() {
                return Err(e);
            }
            let current = self.get(namespace, name).ok_or(BackendError::NotFound)?;
            let mut v = serde_json::to_value(&current).unwrap();
            merge(&mut v, &json!({ "spec": spec_patch }));
            let updated: CaptureJob =
                serde_json::from_value(v).map_err(|e| BackendError::Invalid(e.to_string()))?;
            self.apply(Event::Apply(updated.clone()));
            Ok(updated)
        })
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            self.record(format!("delete {namespace}/{name}"), Value::Null);
            if let Some(e) = self.failure() {
                return Err(e);
            }
            let current = self.get(namespace, name).ok_or(BackendError::NotFound)?;
            self.apply(Event::Delete(current));
            Ok(())
        })
    }
}

/// Tokens: `admin` (everything), `viewer` (get, list), `editor45` (everything in proj-45),
/// `runner` (run but not cancel, everywhere), `lister45` (list/get in proj-45 only), `boom`
/// (the authorizer fails). Anything else is invalid.
#[derive(Default)]
struct FakeAuth {
    calls: AtomicUsize,
}

impl Authorizer for FakeAuth {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, AuthError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match token {
                "boom" => Err(AuthError("TokenReview: connection refused".into())),
                "admin" | "viewer" | "editor45" | "runner" | "lister45" => Ok(Some(User {
                    username: token.to_string(),
                    ..Default::default()
                })),
                _ => Ok(None),
            }
        })
    }

    fn allowed<'a>(
        &'a self,
        user: &'a User,
        verb: Verb,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let read = matches!(verb, Verb::Get | Verb::List);
            Ok(match user.username.as_str() {
                "admin" => true,
                "viewer" => read,
                "editor45" => namespace == "proj-45",
                "runner" => read || verb == Verb::Run,
                "lister45" => read && namespace == "proj-45",
                _ => false,
            })
        })
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

fn job(
    id: Option<i64>,
    ns: &str,
    name: &str,
    created: &str,
    spec: Value,
    status: Option<Value>,
) -> CaptureJob {
    let mut v = json!({
        "apiVersion": "antenna.insectai.org/v1alpha1",
        "kind": "CaptureJob",
        "metadata": {
            "name": name, "namespace": ns, "creationTimestamp": created,
            "uid": format!("uid-{name}"), "resourceVersion": "1",
        },
        "spec": { "name": name, "project": { "id": 7 } },
    });
    merge(&mut v["spec"], &spec);
    if let Some(id) = id {
        v["metadata"]["labels"] = json!({ LABEL_ID: id.to_string() });
    }
    if let Some(s) = status {
        v["status"] = s;
    }
    serde_json::from_value(v).expect("fixture job")
}

fn seed_630() -> CaptureJob {
    job(
        Some(630),
        "proj-45",
        "sync-118",
        "2024-04-30T04:18:48Z",
        json!({
            "name": "Sync captures for deployment 118",
            "jobType": "data_storage_sync",
            "project": { "id": 45, "name": "AMBER - Costa Rica" },
            "deployment": { "id": 118, "name": "Costa Rica - Dry Forest" },
            "limit": 100,
        }),
        Some(json!({
            "id": 630, "state": "FAILURE", "attempt": 1,
            "progressAt": "2024-11-13T17:15:34.230506Z",
            "finishedAt": "2025-10-10T00:37:57.723893Z",
            "progress": {
                "summary": { "status": "STARTED", "progress": 0.0 },
                "stages": [
                    { "key": "data_storage_sync", "name": "Data storage sync", "status": "FAILURE", "progress": 0.25,
                      "params": [ { "key": "total_files", "name": "Total files", "category": "default", "value": 12 },
                                  { "key": "failed", "name": "Failed", "category": "default", "value": 3 } ] },
                    { "key": "data_storage_sync", "name": "data_storage_sync", "status": "CREATED", "progress": 0.0, "params": [] },
                    { "key": "regroup_sessions", "name": "Regroup sessions", "status": "CREATED", "progress": 0.0, "params": [] },
                ],
                "errors": ["pending for 10 minutes"],
            },
            "logs": {
                "stdout": [
                    "[2025-10-10 00:37:58] ERROR Job 630 has been pending, marking as failed",
                    "[2025-10-10 00:37:58] WARNING Job 630 has been waiting",
                ],
                "stderr": ["[2025-10-10 00:37:58] ERROR Job 630 has been pending, marking as failed"],
            },
        })),
    )
}

fn seeded_jobs() -> Vec<CaptureJob> {
    vec![
        seed_630(),
        job(
            Some(631),
            "proj-45",
            "job-631",
            "2025-01-02T00:00:00Z",
            json!({
                "name": "Detect moths in June",
                "project": { "id": 45, "name": "AMBER - Costa Rica" },
                "pipeline": { "id": 3, "name": "Moth Detector v2", "slug": "moth-v2" },
                "sourceImageCollection": { "id": 12, "name": "June" },
            }),
            Some(json!({ "id": 631, "state": "STARTED", "attempt": 1,
                         "startedAt": "2025-01-02T00:01:00Z" })),
        ),
        job(
            Some(632),
            "antenna",
            "job-632",
            "2025-01-03T00:00:00Z",
            json!({ "name": "Created later", "start": false, "delay": 5,
                    "sourceImageSingle": { "id": 99 } }),
            None,
        ),
        job(
            Some(633),
            "antenna",
            "job-633",
            "2025-01-01T00:00:00Z",
            json!({ "name": "Export all", "jobType": "data_export",
                    "pipeline": { "id": 4, "name": "Tracker", "slug": "tracker" } }),
            Some(json!({ "id": 633, "state": "SUCCESS", "attempt": 1,
                         "startedAt": "2025-01-01T00:00:10Z",
                         "finishedAt": "2025-01-01T00:00:22.5Z",
                         "progress": { "summary": { "status": "SUCCESS", "progress": 1.0 } } })),
        ),
        job(
            Some(634),
            "proj-45",
            "job-634",
            "2025-01-04T00:00:00Z",
            json!({ "name": "Queued ml", "project": { "id": 45 },
                    "deployment": { "id": 5, "name": "Station 5" } }),
            Some(json!({ "id": 634, "state": "PENDING", "attempt": 1 })),
        ),
        job(
            Some(635),
            "proj-9",
            "job-635",
            "2024-12-31T00:00:00Z",
            json!({ "name": "Revoked regroup", "jobType": "regroup_events", "project": { "id": 9 } }),
            Some(
                json!({ "id": 635, "state": "REVOKED", "attempt": 1, "finishedAt": "2025-01-01T00:00:00Z" }),
            ),
        ),
        job(
            Some(636),
            "proj-45",
            "job-636",
            "2025-01-05T00:00:00Z",
            json!({ "name": "Canceling sync", "project": { "id": 45 }, "cancel": true }),
            Some(json!({ "id": 636, "state": "CANCELING", "attempt": 1 })),
        ),
        // No id at all: never served.
        job(
            None,
            "antenna",
            "no-id",
            "2025-01-06T00:00:00Z",
            json!({}),
            None,
        ),
        // A malformed id label: never served.
        job(
            None,
            "antenna",
            "bad-label",
            "2025-01-06T00:00:00Z",
            json!({}),
            None,
        )
        .tap_label("abc"),
    ]
}

trait TapLabel {
    fn tap_label(self, v: &str) -> Self;
}

impl TapLabel for CaptureJob {
    fn tap_label(mut self, v: &str) -> Self {
        self.metadata.labels = Some([(LABEL_ID.to_string(), v.to_string())].into());
        self
    }
}

fn namespaces() -> Vec<NamespaceMeta> {
    let ns = |name: &str, project: &str, project_name: Option<&str>| {
        ObjectMeta {
            name: Some(name.into()),
            labels: Some([(LABEL_PROJECT_ID.to_string(), project.to_string())].into()),
            annotations: project_name
                .map(|n| [(ANNOTATION_PROJECT_NAME.to_string(), n.to_string())].into()),
            ..Default::default()
        }
        .into_response_partial::<Namespace>()
    };
    vec![
        ns("proj-45", "45", Some("AMBER - Costa Rica")),
        ns("proj-9", "9", None),
        ns("zz-proj-45", "45", None),
    ]
}

struct H {
    app: Router,
    state: ApiState,
    backend: Arc<FakeBackend>,
    auth: Arc<FakeAuth>,
}

fn config() -> ApiConfig {
    ApiConfig {
        default_namespace: Some("antenna".into()),
        ..ApiConfig::default()
    }
}

fn harness_with(config: ApiConfig, jobs: Vec<CaptureJob>, ready: bool) -> H {
    let mut writer: Writer<CaptureJob> = Writer::default();
    let reader = writer.as_reader();
    let mut ns_writer: Writer<NamespaceMeta> = Writer::default();
    let ns_reader = ns_writer.as_reader();
    if ready {
        writer.apply_watcher_event(&Event::Init);
        for j in jobs {
            writer.apply_watcher_event(&Event::InitApply(j));
        }
        writer.apply_watcher_event(&Event::InitDone);
        ns_writer.apply_watcher_event(&Event::Init);
        for n in namespaces() {
            ns_writer.apply_watcher_event(&Event::InitApply(n));
        }
        ns_writer.apply_watcher_event(&Event::InitDone);
    }
    let backend = Arc::new(FakeBackend {
        next_id: AtomicI64::new(1000),
        ..Default::default()
    });
    *backend.writer.lock().unwrap() = Some(writer);
    *backend.store.lock().unwrap() = Some(reader.clone());
    let auth = Arc::new(FakeAuth::default());
    // Keep the namespace writer alive (a dropped writer would not matter once ready, but an
    // unready store must stay unready rather than fail).
    std::mem::forget(ns_writer);
    let state = ApiState::new(config, reader, ns_reader, backend.clone(), auth.clone());
    H {
        app: router(state.clone()),
        state,
        backend,
        auth,
    }
}

fn harness() -> H {
    harness_with(config(), seeded_jobs(), true)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header(header::HOST, "testserver");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Resp {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &Router, uri: &str) -> Resp {
    send(app, "GET", uri, &[], None).await
}

async fn get_as(app: &Router, uri: &str, token: &str) -> Resp {
    let auth = format!("Token {token}");
    send(app, "GET", uri, &[("authorization", &auth)], None).await
}

async fn post_json(app: &Router, uri: &str, token: Option<&str>, body: Value) -> Resp {
    write_json(app, "POST", uri, token, body).await
}

async fn write_json(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Value,
) -> Resp {
    let auth = token.map(|t| format!("Token {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    send(
        app,
        method,
        uri,
        &headers,
        Some(body.to_string().into_bytes()),
    )
    .await
}

async fn action(app: &Router, id: i64, what: &str, token: Option<&str>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    send(
        app,
        "POST",
        &format!("/api/v2/jobs/{id}/{what}/"),
        &headers,
        None,
    )
    .await
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn ids(v: &Value) -> Vec<i64> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

fn detail_of(error: &Resp) -> String {
    error.json()["detail"].as_str().unwrap_or("").to_string()
}

fn is_iso_micros_z(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[26] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 26].contains(&i) || c.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------
// Detail
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn detail_keys_follow_the_seed_record() {
    let h = harness();
    let seed: Value = serde_json::from_str(include_str!("testdata/job-630.json")).unwrap();
    let r = get(&h.app, "/api/v2/jobs/630/").await;
    assert_eq!(r.status, StatusCode::OK);
    let got = r.json();
    assert_eq!(keys(&got), keys(&seed));
    assert_eq!(keys(&got), DETAIL_KEYS.to_vec());
    for nested in ["project", "deployment", "progress", "logs", "job_type"] {
        assert_eq!(keys(&got[nested]), keys(&seed[nested]), "{nested}");
    }
    assert_eq!(
        keys(&got["progress"]["summary"]),
        keys(&seed["progress"]["summary"])
    );
    assert_eq!(
        keys(&got["progress"]["stages"][0]),
        keys(&seed["progress"]["stages"][0])
    );
    assert_eq!(
        keys(&got["progress"]["stages"][0]["params"][0]),
        keys(&seed["progress"]["stages"][0]["params"][0])
    );
    // The values the seed and the fixture share.
    for k in [
        "id",
        "name",
        "delay",
        "limit",
        "shuffle",
        "status",
        "started_at",
        "duration",
        "data_export",
        "dispatch_mode",
        "result",
    ] {
        assert_eq!(got[k], seed[k], "{k}");
    }
    assert_eq!(got["project"]["id"], seed["project"]["id"]);
    assert_eq!(got["project"]["name"], seed["project"]["name"]);
    assert_eq!(got["deployment"]["name"], seed["deployment"]["name"]);
    assert_eq!(got["finished_at"], json!("2025-10-10T00:37:57.723893Z"));
    assert_eq!(got["created_at"], json!("2024-04-30T04:18:48.000000Z"));
    assert_eq!(got["updated_at"], json!("2025-10-10T00:37:57.723893Z"));
    assert_eq!(got["details"], json!("http://testserver/api/v2/jobs/630/"));
    assert_eq!(
        got["project"]["details"],
        json!("http://testserver/api/v2/projects/45/")
    );
    assert_eq!(got["project"]["user_permissions"], json!([]));
    assert_eq!(
        got["job_type"],
        json!({ "name": "Data storage sync", "key": "data_storage_sync" })
    );
    assert_eq!(got["user_permissions"], json!([]));
    assert_eq!(got["pipeline"], Value::Null);
    assert_eq!(got["source_image_collection"], Value::Null);
}

#[tokio::test]
async fn detail_fixes_the_old_bugs() {
    let h = harness();
    let got = get(&h.app, "/api/v2/jobs/630/").await.json();
    // status and summary.status agree even when the stored summary does not.
    assert_eq!(got["status"], json!("FAILURE"));
    assert_eq!(got["progress"]["summary"]["status"], json!("FAILURE"));
    // A repeated stage key is shown once.
    let stage_keys: Vec<&str> = got["progress"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(stage_keys, ["data_storage_sync", "regroup_sessions"]);
    assert_eq!(
        got["progress"]["stages"][0]["params"][0]["value"],
        json!(12)
    );
    assert_eq!(got["progress"]["errors"], json!(["pending for 10 minutes"]));
}

#[tokio::test]
async fn every_job_has_equal_status_and_summary_and_iso_times() {
    let h = harness();
    let list = get(&h.app, "/api/v2/jobs/?limit=100").await.json();
    assert_eq!(list["count"], json!(7));
    for item in list["results"].as_array().unwrap() {
        assert_eq!(item["status"], item["progress"]["summary"]["status"]);
        assert!(item.get("result").is_none());
        for k in ["created_at", "updated_at", "started_at", "finished_at"] {
            if let Some(s) = item[k].as_str() {
                assert!(is_iso_micros_z(s), "{k} = {s}");
            }
        }
    }
}

#[tokio::test]
async fn duration_and_nested_references() {
    let h = harness();
    let d = get(&h.app, "/api/v2/jobs/633/").await.json();
    assert_eq!(d["duration"], json!("12.500000"));
    assert_eq!(d["started_at"], json!("2025-01-01T00:00:10.000000Z"));
    assert_eq!(
        d["pipeline"],
        json!({ "id": 4, "name": "Tracker", "slug": "tracker",
                "details": "http://testserver/api/v2/ml/pipelines/4/", "user_permissions": [] })
    );
    assert_eq!(
        d["job_type"],
        json!({ "name": "Data Export", "key": "data_export" })
    );
    let c = get(&h.app, "/api/v2/jobs/632/").await.json();
    assert_eq!(c["status"], json!("CREATED"));
    assert_eq!(
        c["progress"]["summary"],
        json!({ "status": "CREATED", "progress": 0.0 })
    );
    assert_eq!(c["duration"], Value::Null);
    assert_eq!(c["logs"], json!({ "stdout": [], "stderr": [] }));
    assert_eq!(
        c["source_image_single"],
        json!({ "id": 99, "name": null, "details": "http://testserver/api/v2/captures/99/",
                "user_permissions": [] })
    );
    let s = get(&h.app, "/api/v2/jobs/631/").await.json();
    assert_eq!(
        s["source_image_collection"]["details"],
        json!("http://testserver/api/v2/captures/collections/12/")
    );
}

#[tokio::test]
async fn unknown_and_non_numeric_ids_are_404() {
    let h = harness();
    for uri in [
        "/api/v2/jobs/999/",
        "/api/v2/jobs/abc/",
        "/api/v2/jobs/-1/",
        "/api/v2/jobs/0/",
        "/api/v2/jobs/1e3/",
        "/api/v2/jobs/99999999999999999999999/",
        "/api/v2/jobs/%FF/",
        "/api/v2/jobs/630x/",
        "/api/v2/jobs/630/unknown/",
        "/api/v2/unknown/",
        "/api/v2/",
    ] {
        let r = get(&h.app, uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(r.json(), json!({ "detail": "Not found." }), "{uri}");
    }
    for (m, uri) in [
        ("POST", "/api/v2/jobs/999/run/"),
        ("DELETE", "/api/v2/jobs/abc/"),
    ] {
        let r = send(&h.app, m, uri, &[("authorization", "Token admin")], None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {uri}");
    }
}

#[tokio::test]
async fn logs_limit_caps_and_validates() {
    let h = harness();
    let d = get(&h.app, "/api/v2/jobs/630/?logs_limit=1").await.json();
    assert_eq!(d["logs"]["stdout"].as_array().unwrap().len(), 1);
    assert_eq!(d["logs"]["stderr"].as_array().unwrap().len(), 1);
    let d = get(&h.app, "/api/v2/jobs/630/?logs_limit=5000")
        .await
        .json();
    assert_eq!(d["logs"]["stdout"].as_array().unwrap().len(), 2);
    for (v, msg) in [
        ("0", "Ensure this value is greater than or equal to 1."),
        ("-3", "Ensure this value is greater than or equal to 1."),
        ("5001", "Ensure this value is less than or equal to 5000."),
        ("abc", "A valid integer is required."),
        ("", "A valid integer is required."),
        ("1.5", "A valid integer is required."),
    ] {
        let r = get(&h.app, &format!("/api/v2/jobs/630/?logs_limit={v}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(r.json(), json!({ "logs_limit": [msg] }), "{v}");
    }
    let r = get(&h.app, "/api/v2/jobs/?logs_limit=9999").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&h.app, "/api/v2/jobs/?logs_limit=1").await.json();
    let j630 = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == 630)
        .unwrap()
        .clone();
    assert_eq!(j630["logs"]["stdout"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn absolute_urls_from_public_url_or_host() {
    let h = harness_with(
        ApiConfig {
            public_url: Some("https://api.example.org/antenna/".into()),
            ..config()
        },
        seeded_jobs(),
        true,
    );
    let d = get(&h.app, "/api/v2/jobs/630/").await.json();
    assert_eq!(
        d["details"],
        json!("https://api.example.org/antenna/api/v2/jobs/630/")
    );
    let h = harness();
    let r = send(
        &h.app,
        "GET",
        "/api/v2/jobs/630/",
        &[("host", "jobs.local:8080"), ("x-forwarded-proto", "https")],
        None,
    )
    .await;
    assert_eq!(
        r.json()["details"],
        json!("https://jobs.local:8080/api/v2/jobs/630/")
    );
    let r = send(
        &h.app,
        "GET",
        "/api/v2/jobs/630/",
        &[("host", "evil\"><script>")],
        None,
    )
    .await;
    assert_eq!(
        r.json()["details"],
        json!("http://localhost/api/v2/jobs/630/")
    );
    // ?format=json is kept in links, as DRF does.
    let d = get(&h.app, "/api/v2/jobs/630/?format=json").await.json();
    assert_eq!(
        d["details"],
        json!("http://testserver/api/v2/jobs/630/?format=json")
    );
    assert_eq!(
        d["deployment"]["details"],
        json!("http://testserver/api/v2/deployments/118/?format=json")
    );
}

// ---------------------------------------------------------------------------------------
// Routes, methods, formats
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn options_on_every_route() {
    let h = harness();
    for (uri, allow, name) in [
        ("/api/v2/jobs/", "GET, POST, HEAD, OPTIONS", "Job List"),
        (
            "/api/v2/jobs/630/",
            "GET, PUT, PATCH, DELETE, HEAD, OPTIONS",
            "Job Instance",
        ),
        ("/api/v2/jobs/630/run/", "POST, OPTIONS", "Run"),
        ("/api/v2/jobs/630/retry/", "POST, OPTIONS", "Retry"),
        ("/api/v2/jobs/630/cancel/", "POST, OPTIONS", "Cancel"),
        ("/api/v2/schema/", "GET, HEAD, OPTIONS", "Schema"),
    ] {
        let r = send(&h.app, "OPTIONS", uri, &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert_eq!(r.header("allow"), allow, "{uri}");
        assert_eq!(r.json()["name"], json!(name));
        assert!(r.json()["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
        // Every response of the route carries Allow, as DRF's do.
        let g = get(&h.app, uri).await;
        assert_eq!(g.header("allow"), allow, "GET {uri}");
        assert_eq!(g.header("vary"), "Accept");
    }
}

#[tokio::test]
async fn wrong_methods_are_405_with_drf_body() {
    let h = harness();
    for (m, uri, allow) in [
        ("GET", "/api/v2/jobs/630/run/", "POST, OPTIONS"),
        ("PUT", "/api/v2/jobs/630/cancel/", "POST, OPTIONS"),
        ("DELETE", "/api/v2/jobs/630/retry/", "POST, OPTIONS"),
        ("DELETE", "/api/v2/jobs/", "GET, POST, HEAD, OPTIONS"),
        ("PUT", "/api/v2/jobs/", "GET, POST, HEAD, OPTIONS"),
        (
            "POST",
            "/api/v2/jobs/630/",
            "GET, PUT, PATCH, DELETE, HEAD, OPTIONS",
        ),
        ("POST", "/api/v2/schema/", "GET, HEAD, OPTIONS"),
        ("TRACE", "/api/v2/jobs/", "GET, POST, HEAD, OPTIONS"),
    ] {
        let r = send(&h.app, m, uri, &[("authorization", "Token admin")], None).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}");
        assert_eq!(
            r.json(),
            json!({ "detail": format!("Method \"{m}\" not allowed.") })
        );
        assert_eq!(r.header("allow"), allow);
    }
    assert!(h.backend.calls().is_empty());
}

#[tokio::test]
async fn trailing_slash_rules() {
    let h = harness();
    let r = get(&h.app, "/api/v2/jobs?status=FAILURE").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), "/api/v2/jobs/?status=FAILURE");
    let r = get(&h.app, "/api/v2/jobs/630").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), "/api/v2/jobs/630/");
    let r = send(&h.app, "HEAD", "/api/v2/schema", &[], None).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    // Never a redirect for POST (or any write).
    for (m, uri) in [
        ("POST", "/api/v2/jobs"),
        ("POST", "/api/v2/jobs/630/run"),
        ("PATCH", "/api/v2/jobs/630"),
        ("DELETE", "/api/v2/jobs/630"),
    ] {
        let r = send(&h.app, m, uri, &[("authorization", "Token admin")], None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {uri}");
        assert_eq!(r.json(), json!({ "detail": "Not found." }));
    }
    assert!(h.backend.calls().is_empty());
}

#[tokio::test]
async fn formats_json_api_and_browsers() {
    let h = harness();
    let r = get(&h.app, "/api/v2/jobs/630/?format=json").await;
    assert!(r.header("content-type").starts_with("application/json"));
    let r = get(&h.app, "/api/v2/jobs/630/?format=api").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").starts_with("text/html"));
    assert!(r.text.contains("Job Instance"));
    assert!(r
        .text
        .contains("<a href=\"http://testserver/api/v2/jobs/630/?format=api\">"));
    assert!(r.text.contains("Sync captures for deployment 118"));
    assert!(r.text.contains("GET, PUT, PATCH, DELETE, HEAD, OPTIONS"));
    for bad in ["xml", "", "JSON", "html"] {
        let r = get(&h.app, &format!("/api/v2/jobs/630/?format={bad}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "format={bad}");
        assert_eq!(r.json(), json!({ "detail": "Not found." }));
    }
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let r = send(&h.app, "GET", "/api/v2/jobs/", &[("accept", browser)], None).await;
    assert!(r.header("content-type").starts_with("text/html"));
    assert!(r.text.contains("Job List"));
    for accept in [
        "*/*",
        "application/json",
        "application/json, text/html;q=0.5",
    ] {
        let r = send(&h.app, "GET", "/api/v2/jobs/", &[("accept", accept)], None).await;
        assert!(
            r.header("content-type").starts_with("application/json"),
            "{accept}"
        );
    }
    // A browser explicitly asking for JSON gets JSON.
    let r = send(
        &h.app,
        "GET",
        "/api/v2/jobs/?format=json",
        &[("accept", browser)],
        None,
    )
    .await;
    assert!(r.header("content-type").starts_with("application/json"));
    // Errors render as pages too, with their status.
    let r = get(&h.app, "/api/v2/jobs/999/?format=api").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text.contains("HTTP 404 Not Found"));
    // The page escapes what it shows.
    let h = harness_with(
        config(),
        vec![job(
            Some(1),
            "antenna",
            "x",
            "2025-01-01T00:00:00Z",
            json!({ "name": "<script>alert(1)</script>" }),
            None,
        )],
        true,
    );
    let r = get(&h.app, "/api/v2/jobs/1/?format=api").await;
    assert!(!r.text.contains("<script>alert"));
    assert!(r.text.contains("&lt;script&gt;"));
}

#[tokio::test]
async fn head_requests_have_no_body() {
    let h = harness();
    let r = send(&h.app, "HEAD", "/api/v2/jobs/", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.is_empty());
}

#[tokio::test]
async fn not_ready_is_503_but_schema_and_options_answer() {
    let h = harness_with(config(), seeded_jobs(), false);
    assert!(!h.state.is_ready());
    let r = get(&h.app, "/api/v2/jobs/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json(),
        json!({ "detail": "Service temporarily unavailable, try again later." })
    );
    assert_eq!(
        get(&h.app, "/api/v2/jobs/630/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&h.app, "/api/v2/schema/").await.status, StatusCode::OK);
    assert_eq!(
        send(&h.app, "OPTIONS", "/api/v2/jobs/", &[], None)
            .await
            .status,
        StatusCode::OK
    );
    assert!(harness().state.is_ready());
}

// ---------------------------------------------------------------------------------------
// List: pagination
// ---------------------------------------------------------------------------------------

fn many(n: i64) -> Vec<CaptureJob> {
    (1..=n)
        .map(|i| {
            job(
                Some(i),
                "antenna",
                &format!("job-{i}"),
                &format!("2025-02-{:02}T{:02}:00:00Z", 1 + i / 24, i % 24),
                json!({ "name": format!("Job {i}"), "project": { "id": 7 } }),
                Some(json!({ "id": i, "state": if i % 2 == 0 { "SUCCESS" } else { "STARTED" }, "attempt": 1 })),
            )
        })
        .collect()
}

#[tokio::test]
async fn pagination_defaults_and_links() {
    let h = harness_with(config(), many(45), true);
    let p = get(&h.app, "/api/v2/jobs/").await.json();
    assert_eq!(
        keys(&p),
        ["count", "next", "previous", "results", "user_permissions"]
    );
    assert_eq!(p["count"], json!(45));
    assert_eq!(ids(&p), (26..=45).rev().collect::<Vec<_>>());
    assert_eq!(
        p["next"],
        json!("http://testserver/api/v2/jobs/?limit=20&offset=20")
    );
    assert_eq!(p["previous"], Value::Null);
    assert_eq!(p["user_permissions"], json!([]));

    // Non-numeric, zero and negative limits fall back to 20; the links carry 20.
    for bad in ["0", "-5", "abc", "", "1.5"] {
        let p = get(&h.app, &format!("/api/v2/jobs/?limit={bad}"))
            .await
            .json();
        assert_eq!(p["results"].as_array().unwrap().len(), 20, "limit={bad}");
        assert_eq!(
            p["next"],
            json!("http://testserver/api/v2/jobs/?limit=20&offset=20"),
            "limit={bad}"
        );
    }
    // Huge limits: everything, no next.
    for huge in ["1000", "99999999999999999999999999"] {
        let p = get(&h.app, &format!("/api/v2/jobs/?limit={huge}"))
            .await
            .json();
        assert_eq!(p["results"].as_array().unwrap().len(), 45);
        assert_eq!(p["next"], Value::Null);
    }
    // Offset past the end: empty page, count kept, next null, previous one page back.
    let p = get(&h.app, "/api/v2/jobs/?offset=100").await.json();
    assert_eq!(p["count"], json!(45));
    assert_eq!(p["results"], json!([]));
    assert_eq!(p["next"], Value::Null);
    assert_eq!(
        p["previous"],
        json!("http://testserver/api/v2/jobs/?offset=80&limit=20")
    );
    // Negative or non-numeric offsets are 0.
    for bad in ["-1", "x"] {
        let p = get(&h.app, &format!("/api/v2/jobs/?offset={bad}"))
            .await
            .json();
        assert_eq!(ids(&p)[0], 45);
        assert_eq!(p["previous"], Value::Null);
    }
    // The last partial page.
    let p = get(&h.app, "/api/v2/jobs/?limit=20&offset=40").await.json();
    assert_eq!(ids(&p), vec![5, 4, 3, 2, 1]);
    assert_eq!(p["next"], Value::Null);
    assert_eq!(
        p["previous"],
        json!("http://testserver/api/v2/jobs/?limit=20&offset=20")
    );
    // previous drops offset when it would be 0 or less.
    let p = get(&h.app, "/api/v2/jobs/?limit=20&offset=15").await.json();
    assert_eq!(
        p["previous"],
        json!("http://testserver/api/v2/jobs/?limit=20")
    );
    assert_eq!(
        p["next"],
        json!("http://testserver/api/v2/jobs/?limit=20&offset=35")
    );
    // Other parameters are kept; page and page_size are ignored.
    let p = get(
        &h.app,
        "/api/v2/jobs/?status=STARTED&limit=5&page=3&page_size=2&offset=5",
    )
    .await
    .json();
    assert_eq!(p["count"], json!(23));
    assert_eq!(p["results"].as_array().unwrap().len(), 5);
    assert_eq!(
        p["next"],
        json!("http://testserver/api/v2/jobs/?status=STARTED&limit=5&page=3&page_size=2&offset=10")
    );
    assert_eq!(
        p["previous"],
        json!("http://testserver/api/v2/jobs/?status=STARTED&limit=5&page=3&page_size=2")
    );
}

#[tokio::test]
async fn pagination_count_an_exact_multiple_of_limit() {
    let h = harness_with(config(), many(40), true);
    let p = get(&h.app, "/api/v2/jobs/?limit=20&offset=20").await.json();
    assert_eq!(p["results"].as_array().unwrap().len(), 20);
    assert_eq!(p["next"], Value::Null);
    let p = get(&h.app, "/api/v2/jobs/?limit=20").await.json();
    assert_eq!(
        p["next"],
        json!("http://testserver/api/v2/jobs/?limit=20&offset=20")
    );
    let p = get(&h.app, "/api/v2/jobs/?limit=40").await.json();
    assert_eq!(p["next"], Value::Null);
    let h = harness_with(config(), Vec::new(), true);
    let p = get(&h.app, "/api/v2/jobs/").await.json();
    assert_eq!(
        p,
        json!({ "count": 0, "next": null, "previous": null, "results": [], "user_permissions": [] })
    );
}

// ---------------------------------------------------------------------------------------
// List: filters, search, ordering
// ---------------------------------------------------------------------------------------

async fn list_ids(app: &Router, query: &str) -> Vec<i64> {
    let r = get(app, &format!("/api/v2/jobs/?limit=100&{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text);
    ids(&r.json())
}

#[tokio::test]
async fn filters_match_exactly() {
    let h = harness();
    let a = &h.app;
    let sorted = |mut v: Vec<i64>| {
        v.sort();
        v
    };
    assert_eq!(sorted(list_ids(a, "status=FAILURE").await), [630]);
    assert_eq!(sorted(list_ids(a, "status=CREATED").await), [632]);
    assert_eq!(
        sorted(list_ids(a, "project=45").await),
        [630, 631, 634, 636]
    );
    assert_eq!(
        sorted(list_ids(a, "project_id=45").await),
        [630, 631, 634, 636]
    );
    assert_eq!(
        sorted(list_ids(a, "project_id=45&project=9").await),
        Vec::<i64>::new()
    );
    assert_eq!(
        sorted(list_ids(a, "project_id=123456").await),
        Vec::<i64>::new()
    );
    assert_eq!(sorted(list_ids(a, "deployment=118").await), [630]);
    assert_eq!(
        sorted(list_ids(a, "source_image_collection=12").await),
        [631]
    );
    assert_eq!(sorted(list_ids(a, "source_image_single=99").await), [632]);
    assert_eq!(sorted(list_ids(a, "pipeline=3").await), [631]);
    assert_eq!(sorted(list_ids(a, "job_type_key=data_export").await), [633]);
    assert_eq!(
        sorted(list_ids(a, "job_type_key=ml").await),
        [631, 632, 634, 636]
    );
    assert_eq!(list_ids(a, "dispatch_mode=internal").await.len(), 7);
    assert_eq!(list_ids(a, "dispatch_mode=async_api").await.len(), 0);
    assert_eq!(sorted(list_ids(a, "pipeline__slug=moth-v2").await), [631]);
    assert_eq!(
        sorted(list_ids(a, "pipeline__slug__in=moth-v2,tracker,nope").await),
        [631, 633]
    );
    assert_eq!(
        sorted(list_ids(a, "incomplete_only").await),
        [631, 632, 634, 636]
    );
    assert_eq!(
        sorted(list_ids(a, "incomplete_only=true").await),
        [631, 632, 634, 636]
    );
    assert_eq!(list_ids(a, "incomplete_only=false").await.len(), 7);
    // Empty values and unknown parameters are ignored.
    assert_eq!(
        list_ids(a, "status=&project=&pipeline__slug=&foo=bar")
            .await
            .len(),
        7
    );
    // Filters combine.
    assert_eq!(
        sorted(list_ids(a, "project=45&status=STARTED").await),
        [631]
    );
}

#[tokio::test]
async fn invalid_filter_values_are_400_on_the_param() {
    let h = harness();
    let choice = "Select a valid choice. That choice is not one of the available choices.";
    for (q, key, msg) in [
        (
            "status=BOGUS",
            "status",
            "Select a valid choice. BOGUS is not one of the available choices.".to_string(),
        ),
        (
            "status=failure",
            "status",
            "Select a valid choice. failure is not one of the available choices.".to_string(),
        ),
        ("project=abc", "project", choice.to_string()),
        ("deployment=1.5", "deployment", choice.to_string()),
        (
            "source_image_collection=x",
            "source_image_collection",
            choice.to_string(),
        ),
        (
            "source_image_single=-2",
            "source_image_single",
            choice.to_string(),
        ),
        ("pipeline=[]", "pipeline", choice.to_string()),
        (
            "job_type_key=bogus",
            "job_type_key",
            "Select a valid choice. bogus is not one of the available choices.".to_string(),
        ),
        (
            "dispatch_mode=remote",
            "dispatch_mode",
            "Select a valid choice. remote is not one of the available choices.".to_string(),
        ),
        (
            "project_id=abc",
            "project_id",
            "A valid integer is required.".to_string(),
        ),
        (
            "project_id=",
            "project_id",
            "A valid integer is required.".to_string(),
        ),
        (
            "cutoff_hours=-1",
            "cutoff_hours",
            "Ensure this value is greater than or equal to 0.".to_string(),
        ),
        (
            "cutoff_hours=soon",
            "cutoff_hours",
            "A valid integer is required.".to_string(),
        ),
    ] {
        let r = get(&h.app, &format!("/api/v2/jobs/?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(r.json(), json!({ key: [msg] }), "{q}");
    }
    let r = get(&h.app, "/api/v2/jobs/?status=X&project_id=Y&cutoff_hours=Z").await;
    assert_eq!(keys(&r.json()), ["status", "project_id", "cutoff_hours"]);
}

#[tokio::test]
async fn search_all_words_in_name_or_pipeline() {
    let h = harness();
    let a = &h.app;
    assert_eq!(list_ids(a, "search=sync%20DEPLOYMENT").await, [630]);
    assert_eq!(list_ids(a, "search=moth").await, [631]);
    assert_eq!(list_ids(a, "search=june,moth").await, [631]);
    assert_eq!(list_ids(a, "search=detector%20june").await, [631]);
    assert_eq!(list_ids(a, "search=sync%20moth").await, Vec::<i64>::new());
    let mut sync = list_ids(a, "search=sync").await;
    sync.sort();
    assert_eq!(sync, [630, 636]);
    assert_eq!(list_ids(a, "search=").await.len(), 7);
    assert_eq!(list_ids(a, "search=%20%20").await.len(), 7);
}

#[tokio::test]
async fn ordering_terms_nulls_last_unknown_ignored() {
    let h = harness();
    let a = &h.app;
    // Default: -created_at.
    assert_eq!(list_ids(a, "").await, [636, 634, 632, 631, 633, 635, 630]);
    assert_eq!(list_ids(a, "ordering=bogus").await, list_ids(a, "").await);
    assert_eq!(list_ids(a, "ordering=,,").await, list_ids(a, "").await);
    assert_eq!(
        list_ids(a, "ordering=created_at").await,
        [630, 635, 633, 631, 632, 634, 636]
    );
    // Names, case-insensitive.
    assert_eq!(
        list_ids(a, "ordering=name").await,
        [636, 632, 631, 633, 634, 635, 630]
    );
    assert_eq!(
        list_ids(a, "ordering=bogus,-name").await,
        [630, 635, 634, 633, 631, 632, 636]
    );
    // A repeated term: the first one decides.
    assert_eq!(
        list_ids(a, "ordering=name,-name").await,
        list_ids(a, "ordering=name").await
    );
    assert_eq!(
        list_ids(a, "ordering=%20-name%20,name").await,
        list_ids(a, "ordering=-name").await
    );
    // Nulls last in both directions.
    assert_eq!(list_ids(a, "ordering=started_at").await[..2], [633, 631]);
    assert_eq!(list_ids(a, "ordering=-started_at").await[..2], [631, 633]);
    let fin = list_ids(a, "ordering=finished_at").await;
    assert_eq!(fin[..3], [635, 633, 630]);
    let fin = list_ids(a, "ordering=-finished_at").await;
    assert_eq!(fin[..3], [630, 633, 635]);
    assert_eq!(list_ids(a, "ordering=-deployment").await[..2], [630, 634]);
    assert_eq!(list_ids(a, "ordering=pipeline").await[..2], [631, 633]);
    assert_eq!(
        list_ids(a, "ordering=source_image_collection").await[0],
        631
    );
    // Several terms: status, then -created_at within a status.
    assert_eq!(
        list_ids(a, "ordering=status,-created_at").await,
        [636, 632, 630, 634, 635, 631, 633]
    );
    assert_eq!(
        list_ids(a, "ordering=project,created_at").await,
        [633, 632, 635, 630, 631, 634, 636]
    );
    let upd = list_ids(a, "ordering=-updated_at").await;
    assert_eq!(upd[0], 630);
}

#[tokio::test]
async fn ids_only_and_cutoff_hours() {
    let h = harness();
    let p = get(&h.app, "/api/v2/jobs/?ids_only").await.json();
    assert_eq!(p["results"].as_array().unwrap().len(), 1);
    assert_eq!(
        p["results"][0],
        json!({ "id": 636, "pipeline_slug": null, "user_permissions": [] })
    );
    assert_eq!(
        p["next"],
        json!("http://testserver/api/v2/jobs/?ids_only=&limit=1&offset=1")
    );
    let p = get(
        &h.app,
        "/api/v2/jobs/?ids_only=1&limit=10&pipeline__slug__in=moth-v2",
    )
    .await
    .json();
    assert_eq!(
        p["results"],
        json!([{ "id": 631, "pipeline_slug": "moth-v2", "user_permissions": [] }])
    );
    let p = get(&h.app, "/api/v2/jobs/?ids_only=1&limit=abc")
        .await
        .json();
    assert_eq!(p["results"].as_array().unwrap().len(), 7);

    // cutoff_hours hides FAILURE jobs not updated for that long (job 630: last update 2025-10).
    let all = list_ids(&h.app, "").await;
    assert!(all.contains(&630));
    assert!(!list_ids(&h.app, "cutoff_hours=1").await.contains(&630));
    assert!(!list_ids(&h.app, "cutoff_hours=0").await.contains(&630));
    assert!(list_ids(&h.app, "cutoff_hours=10000000")
        .await
        .contains(&630));
    // Other final states are not hidden.
    assert!(list_ids(&h.app, "cutoff_hours=0").await.contains(&635));
}

// ---------------------------------------------------------------------------------------
// Authentication and authorization
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn credentials_401_rules() {
    let h = harness();
    let body = json!({ "name": "x", "delay": 0, "project_id": 45 });
    let r = post_json(&h.app, "/api/v2/jobs/", None, body.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        detail_of(&r),
        "Authentication credentials were not provided."
    );
    assert_eq!(r.header("www-authenticate"), "Token");
    let r = post_json(&h.app, "/api/v2/jobs/", Some("nope"), body.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(detail_of(&r), "Invalid token.");
    // A bad token is refused on reads too; Basic is ignored (anonymous).
    let r = get_as(&h.app, "/api/v2/jobs/", "nope").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(detail_of(&r), "Invalid token.");
    let r = send(
        &h.app,
        "GET",
        "/api/v2/jobs/",
        &[("authorization", "Basic YTpi")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    for (header, msg) in [
        ("Token", "Invalid token header. No credentials provided."),
        (
            "Bearer a b",
            "Invalid token header. Token string should not contain spaces.",
        ),
    ] {
        let r = send(
            &h.app,
            "GET",
            "/api/v2/jobs/",
            &[("authorization", header)],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(detail_of(&r), msg);
    }
    for what in ["run", "retry", "cancel"] {
        let r = action(&h.app, 631, what, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
    }
    let r = send(&h.app, "DELETE", "/api/v2/jobs/631/", &[], None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = write_json(
        &h.app,
        "PATCH",
        "/api/v2/jobs/631/",
        None,
        json!({"name": "x"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The authorizer failing is 503, never 500.
    let r = get_as(&h.app, "/api/v2/jobs/", "boom").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.backend.calls().is_empty());
}

#[tokio::test]
async fn permissions_403_rules() {
    let h = harness();
    let forbidden = "You do not have permission to perform this action.";
    let r = action(&h.app, 631, "run", Some("viewer")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(detail_of(&r), forbidden);
    // editor45 may act in proj-45 only.
    assert_eq!(
        action(&h.app, 631, "cancel", Some("editor45")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        action(&h.app, 633, "retry", Some("editor45")).await.status,
        StatusCode::FORBIDDEN
    );
    // run and cancel are distinct verbs.
    assert_eq!(
        action(&h.app, 632, "run", Some("runner")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        action(&h.app, 634, "cancel", Some("runner")).await.status,
        StatusCode::FORBIDDEN
    );
    let r = send(
        &h.app,
        "DELETE",
        "/api/v2/jobs/633/",
        &[("authorization", "Token viewer")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = write_json(
        &h.app,
        "PATCH",
        "/api/v2/jobs/633/",
        Some("viewer"),
        json!({"name": "x"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post_json(
        &h.app,
        "/api/v2/jobs/",
        Some("viewer"),
        json!({ "name": "x", "delay": 0, "project_id": 45 }),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // editor45 may create in proj-45 but not in the default namespace.
    let r = post_json(
        &h.app,
        "/api/v2/jobs/",
        Some("editor45"),
        json!({ "name": "x", "delay": 0, "project_id": 7 }),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // start_now needs run too: a creator without it creates nothing.
    let calls_before = h.backend.calls().len();
    let r = post_json(
        &h.app,
        "/api/v2/jobs/?start_now",
        Some("runner"),
        json!({ "name": "x", "delay": 0, "project_id": 45 }),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(h.backend.calls().len(), calls_before);
}

#[tokio::test]
async fn user_permissions_follow_the_checks() {
    let h = harness();
    let perms = |v: &Value, id: i64| {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .map(|j| j["user_permissions"].clone())
            .unwrap()
    };
    let anon = get(&h.app, "/api/v2/jobs/").await.json();
    assert_eq!(perms(&anon, 631), json!([]));
    assert_eq!(anon["user_permissions"], json!([]));
    let admin = get_as(&h.app, "/api/v2/jobs/", "admin").await.json();
    assert_eq!(perms(&admin, 631), json!(["update", "delete", "run"]));
    assert_eq!(admin["user_permissions"], json!(["create"]));
    let editor = get_as(&h.app, "/api/v2/jobs/", "editor45").await.json();
    assert_eq!(perms(&editor, 631), json!(["update", "delete", "run"]));
    assert_eq!(perms(&editor, 633), json!([]));
    assert_eq!(editor["user_permissions"], json!([]));
    let editor = get_as(&h.app, "/api/v2/jobs/?project_id=45", "editor45")
        .await
        .json();
    assert_eq!(editor["user_permissions"], json!(["create"]));
    let editor = get_as(&h.app, "/api/v2/jobs/?project_id=9", "editor45")
        .await
        .json();
    assert_eq!(editor["user_permissions"], json!([]));
    let runner = get_as(&h.app, "/api/v2/jobs/", "runner").await.json();
    assert_eq!(perms(&runner, 633), json!(["run"]));
    let viewer = get_as(&h.app, "/api/v2/jobs/630/", "viewer").await.json();
    assert_eq!(viewer["user_permissions"], json!([]));
    let d = get_as(&h.app, "/api/v2/jobs/630/", "admin").await.json();
    assert_eq!(d["user_permissions"], json!(["update", "delete", "run"]));
    let ids_only = get_as(&h.app, "/api/v2/jobs/?ids_only&project_id=45", "editor45")
        .await
        .json();
    assert_eq!(
        ids_only["results"][0]["user_permissions"],
        json!(["update", "delete", "run"])
    );
}

#[tokio::test]
async fn anonymous_reads_can_be_switched_off() {
    let h = harness_with(
        ApiConfig {
            anonymous_reads: false,
            ..config()
        },
        seeded_jobs(),
        true,
    );
    for uri in ["/api/v2/jobs/", "/api/v2/jobs/630/"] {
        let r = get(&h.app, uri).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(
            detail_of(&r),
            "Authentication credentials were not provided."
        );
    }
    assert_eq!(
        get_as(&h.app, "/api/v2/jobs/", "viewer").await.json()["count"],
        json!(7)
    );
    // A token that may list only proj-45 sees only its jobs.
    let mut seen = ids(&get_as(&h.app, "/api/v2/jobs/?limit=50", "lister45")
        .await
        .json());
    seen.sort();
    assert_eq!(seen, [630, 631, 634, 636]);
    assert_eq!(
        get_as(&h.app, "/api/v2/jobs/630/", "lister45").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_as(&h.app, "/api/v2/jobs/633/", "lister45").await.status,
        StatusCode::NOT_FOUND
    );
    // The schema stays public.
    assert_eq!(get(&h.app, "/api/v2/schema/").await.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn create_writes_the_capturejob() {
    let h = harness();
    let r = post_json(
        &h.app,
        "/api/v2/jobs/",
        Some("admin"),
        json!({
            "name": "  New sync  ", "delay": "5", "project_id": "45", "limit": "10",
            "shuffle": "false", "job_type_key": "data_storage_sync", "deployment_id": 118,
            "pipeline_id": "3", "source_image_collection_id": null,
            "id": 5, "status": "SUCCESS", "progress": {}, "details": "x",
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let d = r.json();
    assert_eq!(keys(&d), DETAIL_KEYS.to_vec());
    assert_eq!(d["id"], json!(1000));
    assert_eq!(d["status"], json!("CREATED"));
    assert_eq!(d["name"], json!("New sync"));
    assert_eq!(d["project"]["name"], json!("AMBER - Costa Rica"));
    assert_eq!(d["deployment"]["id"], json!(118));
    assert_eq!(d["pipeline"]["id"], json!(3));
    assert_eq!(d["details"], json!("http://testserver/api/v2/jobs/1000/"));
    assert_eq!(d["user_permissions"], json!(["update", "delete", "run"]));
    assert!(d["created_at"].as_str().is_some_and(is_iso_micros_z));
    let calls = h.backend.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "create proj-45/job-1000");
    let obj = &calls[0].1;
    assert_eq!(obj["metadata"]["labels"], json!({ LABEL_ID: "1000" }));
    assert_eq!(obj["spec"]["start"], json!(false));
    assert_eq!(obj["spec"]["attempt"], json!(1));
    assert_eq!(obj["spec"]["cancel"], json!(false));
    assert_eq!(obj["spec"]["delay"], json!(5));
    assert_eq!(obj["spec"]["limit"], json!(10));
    assert_eq!(obj["spec"]["shuffle"], json!(false));
    assert_eq!(obj["spec"]["jobType"], json!("data_storage_sync"));
    assert_eq!(
        obj["spec"]["project"],
        json!({ "id": 45, "name": "AMBER - Costa Rica" })
    );
    assert_eq!(obj["spec"]["deployment"], json!({ "id": 118 }));
    assert!(obj["spec"].get("sourceImageCollection").is_none());
    assert!(obj.get("status").is_none());
    // The new job is served from the cache, by its label id.
    let g = get(&h.app, "/api/v2/jobs/1000/").await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.json()["name"], json!("New sync"));
}

#[tokio::test]
async fn create_with_start_now() {
    let h = harness();
    let body = json!({ "name": "x", "delay": 0, "project_id": 45 });
    for (q, start) in [
        ("start_now", true),
        ("start_now=true", true),
        ("start_now=1", true),
        ("start_now=yes", true),
        ("start_now=false", false),
        ("start_now=0", false),
        ("other=1", false),
    ] {
        let r = post_json(
            &h.app,
            &format!("/api/v2/jobs/?{q}"),
            Some("admin"),
            body.clone(),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{q}");
        assert_eq!(
            r.json()["status"],
            json!(if start { "PENDING" } else { "CREATED" }),
            "{q}"
        );
        assert_eq!(
            r.json()["progress"]["summary"]["status"],
            r.json()["status"]
        );
        let calls = h.backend.calls();
        assert_eq!(
            calls.last().unwrap().1["spec"]["start"],
            json!(start),
            "{q}"
        );
    }
    // start_now in the body does nothing.
    let r = post_json(
        &h.app,
        "/api/v2/jobs/",
        Some("admin"),
        json!({ "name": "x", "delay": 0, "project_id": 45, "start_now": true }),
    )
    .await;
    assert_eq!(r.json()["status"], json!("CREATED"));
}

#[tokio::test]
async fn create_places_projects_in_namespaces() {
    let h = harness();
    let body = |p: Value| json!({ "name": "x", "delay": 0, "project_id": p });
    // Labelled: proj-9 (no project-name annotation: name null).
    let r = post_json(&h.app, "/api/v2/jobs/", Some("admin"), body(json!(9))).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.json()["project"],
        json!({ "id": 9, "name": null,
        "details": "http://testserver/api/v2/projects/9/", "user_permissions": [] })
    );
    assert_eq!(
        h.backend.calls().last().unwrap().0,
        "create proj-9/job-1000"
    );
    // Two namespaces labelled 45: the first by name.
    post_json(&h.app, "/api/v2/jobs/", Some("admin"), body(json!(45))).await;
    assert_eq!(
        h.backend.calls().last().unwrap().0,
        "create proj-45/job-1001"
    );
    // Not labelled: the default namespace.
    post_json(&h.app, "/api/v2/jobs/", Some("admin"), body(json!(777))).await;
    assert_eq!(
        h.backend.calls().last().unwrap().0,
        "create antenna/job-1002"
    );
    // Without a default namespace: 400 on project_id.
    let h = harness_with(ApiConfig::default(), seeded_jobs(), true);
    let r = post_json(&h.app, "/api/v2/jobs/", Some("admin"), body(json!(999999))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json(),
        json!({ "project_id": ["Invalid pk \"999999\" - object does not exist."] })
    );
    assert!(h.backend.calls().is_empty());
}

#[tokio::test]
async fn create_validation_errors() {
    let h = harness();
    let post = |b: Value| post_json(&h.app, "/api/v2/jobs/", Some("admin"), b);
    let r = post(json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json(),
        json!({
            "name": ["This field is required."],
            "delay": ["This field is required."],
            "project_id": ["This field is required."],
        })
    );
    let base = json!({ "name": "x", "delay": 0, "project_id": 45 });
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (k, v, msg) in [
        ("delay", json!("abc"), "A valid integer is required."),
        ("delay", json!(1.5), "A valid integer is required."),
        ("delay", json!(true), "A valid integer is required."),
        (
            "delay",
            json!(-1),
            "Ensure this value is greater than or equal to 0.",
        ),
        (
            "delay",
            json!(604801),
            "Ensure this value is less than or equal to 604800.",
        ),
        ("delay", json!(null), "This field may not be null."),
        (
            "limit",
            json!(0),
            "Ensure this value is greater than or equal to 1.",
        ),
        (
            "limit",
            json!("-4"),
            "Ensure this value is greater than or equal to 1.",
        ),
        ("limit", json!([1]), "A valid integer is required."),
        // Found by a new user: a limit this large once crashed the operator.
        (
            "limit",
            json!("9223372036854775807"),
            "Ensure this value is less than or equal to 1000000000.",
        ),
        ("shuffle", json!("maybe"), "Must be a valid boolean."),
        ("shuffle", json!(2), "Must be a valid boolean."),
        ("name", json!(""), "This field may not be blank."),
        ("name", json!("   "), "This field may not be blank."),
        ("name", json!(null), "This field may not be null."),
        ("name", json!({"a": 1}), "Not a valid string."),
        (
            "name",
            json!("x".repeat(256)),
            "Ensure this field has no more than 255 characters.",
        ),
        (
            "job_type_key",
            json!("bogus"),
            "\"bogus\" is not a valid choice.",
        ),
        ("job_type_key", json!(5), "\"5\" is not a valid choice."),
        (
            "project_id",
            json!(true),
            "Incorrect type. Expected pk value, received bool.",
        ),
        (
            "project_id",
            json!("abc"),
            "Incorrect type. Expected pk value, received str.",
        ),
        (
            "project_id",
            json!(0),
            "Invalid pk \"0\" - object does not exist.",
        ),
        ("project_id", json!(null), "This field may not be null."),
        (
            "deployment_id",
            json!({}),
            "Incorrect type. Expected pk value, received dict.",
        ),
        (
            "pipeline_id",
            json!(-3),
            "Invalid pk \"-3\" - object does not exist.",
        ),
    ] {
        let r = post(with(k, v.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{k}={v}");
        assert_eq!(r.json(), json!({ k: [msg] }), "{k}={v}");
    }
    // All errors at once.
    let r = post(
        json!({ "name": "", "delay": -1, "limit": 0, "shuffle": "x", "project_id": 45,
                         "job_type_key": "nope" }),
    )
    .await;
    assert_eq!(
        keys(&r.json()),
        ["name", "delay", "limit", "shuffle", "job_type_key"]
    );
    // Numeric strings and integral floats are numbers; nullable fields take null.
    let r = post(
        json!({ "name": 12, "delay": "7.0", "project_id": 45.0, "limit": null,
                         "deployment_id": null, "shuffle": 1 }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["name"], json!("12"));
    assert_eq!(r.json()["delay"], json!(7));
    assert_eq!(r.json()["limit"], Value::Null);
    // The defaults.
    let r = post(base.clone()).await;
    let d = r.json();
    assert_eq!(
        (d["shuffle"].clone(), d["job_type"]["key"].clone()),
        (json!(true), json!("ml"))
    );
}

#[tokio::test]
async fn create_body_errors_parse_media_size() {
    let h = harness();
    let auth = ("authorization", "Token admin");
    let r = send(
        &h.app,
        "POST",
        "/api/v2/jobs/",
        &[auth, ("content-type", "application/json")],
        Some(b"{\"name\": ".to_vec()),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        detail_of(&r).starts_with("JSON parse error - "),
        "{}",
        r.text
    );
    let r = send(
        &h.app,
        "POST",
        "/api/v2/jobs/",
        &[auth, ("content-type", "application/json")],
        Some(b"[1, 2]".to_vec()),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json(),
        json!({ "non_field_errors": ["Invalid data. Expected a dictionary, but got list."] })
    );
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let r = send(
            &h.app,
            "POST",
            "/api/v2/jobs/",
            &[auth, ("content-type", ct)],
            Some(b"name=x&delay=0&project_id=45".to_vec()),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
        assert_eq!(
            r.json(),
            json!({ "detail": format!("Unsupported media type \"{ct}\" in request.") })
        );
    }
    let r = send(
        &h.app,
        "POST",
        "/api/v2/jobs/",
        &[auth],
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(detail_of(&r), "Unsupported media type \"\" in request.");
    let r = send(
        &h.app,
        "POST",
        "/api/v2/jobs/",
        &[auth, ("content-type", "application/json; charset=utf-8")],
        Some(br#"{"name":"x","delay":0,"project_id":45}"#.to_vec()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Over 1 MiB: 413, whether or not the length is declared.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(MAX_BODY_BYTES));
    let r = send(
        &h.app,
        "POST",
        "/api/v2/jobs/",
        &[auth, ("content-type", "application/json")],
        Some(big.clone().into_bytes()),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(detail_of(&r).contains("1048576"));
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let req = Request::builder()
        .method("PATCH")
        .uri("/api/v2/jobs/631/")
        .header("authorization", "Token admin")
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Only the one successful create reached the backend.
    assert_eq!(h.backend.calls().len(), 1);
}

#[tokio::test]
async fn backend_failures_are_never_500() {
    let h = harness();
    let body = json!({ "name": "x", "delay": 0, "project_id": 45 });
    for (fail, status) in [
        ("ids", StatusCode::SERVICE_UNAVAILABLE),
        ("conflict", StatusCode::CONFLICT),
        ("invalid", StatusCode::BAD_REQUEST),
        ("down", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        *h.backend.fail.lock().unwrap() = Some(fail);
        let r = post_json(&h.app, "/api/v2/jobs/", Some("admin"), body.clone()).await;
        assert_eq!(r.status, status, "{fail}");
        assert!(r.json()["detail"].is_string());
    }
    *h.backend.fail.lock().unwrap() = Some("gone");
    assert_eq!(
        action(&h.app, 632, "run", Some("admin")).await.status,
        StatusCode::NOT_FOUND
    );
    *h.backend.fail.lock().unwrap() = Some("down");
    let r = send(
        &h.app,
        "DELETE",
        "/api/v2/jobs/632/",
        &[("authorization", "Token admin")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), "1");
}

// ---------------------------------------------------------------------------------------
// Update and delete
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn patch_and_put_write_merge_patches() {
    let h = harness();
    async fn patch_job(app: &Router, id: i64, b: Value) -> Resp {
        write_json(
            app,
            "PATCH",
            &format!("/api/v2/jobs/{id}/"),
            Some("admin"),
            b,
        )
        .await
    }
    let patch = |id: i64, b: Value| patch_job(&h.app, id, b);
    let r = patch(631, json!({ "name": "Renamed", "delay": "3" })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["name"], json!("Renamed"));
    assert_eq!(r.json()["delay"], json!(3));
    assert_eq!(keys(&r.json()), DETAIL_KEYS.to_vec());
    assert_eq!(
        h.backend.calls().last().unwrap().clone(),
        (
            "patch proj-45/job-631".to_string(),
            json!({ "name": "Renamed", "delay": 3 })
        )
    );
    assert_eq!(
        get(&h.app, "/api/v2/jobs/631/").await.json()["name"],
        json!("Renamed")
    );

    // Read-only fields are ignored: nothing to write.
    let n = h.backend.calls().len();
    let r = patch(
        631,
        json!({ "status": "SUCCESS", "progress": {}, "id": 1, "name": "Renamed",
                               "finished_at": "2020-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], json!("STARTED"));
    assert_eq!(h.backend.calls().len(), n);

    // References: a new id replaces the object; null removes it.
    patch(
        630,
        json!({ "deployment_id": 5, "pipeline_id": 8, "source_image_single_id": null,
                       "job_type_key": "ml", "limit": null, "shuffle": false }),
    )
    .await;
    assert_eq!(
        h.backend.calls().last().unwrap().1,
        json!({
            "limit": null, "shuffle": false, "jobType": "ml",
            "deployment": { "id": 5, "name": null },
            "pipeline": { "id": 8, "name": null, "slug": null },
        })
    );
    let d = get(&h.app, "/api/v2/jobs/630/").await.json();
    assert_eq!(d["deployment"]["id"], json!(5));
    assert_eq!(d["deployment"]["name"], Value::Null);
    assert_eq!(d["limit"], Value::Null);
    patch(630, json!({ "deployment_id": null })).await;
    assert_eq!(
        get(&h.app, "/api/v2/jobs/630/").await.json()["deployment"],
        Value::Null
    );

    // project_id: only the job's own.
    let r = patch(631, json!({ "project_id": 45 })).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = patch(631, json!({ "project_id": 9 })).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(keys(&r.json()), ["project_id"]);
    let r = patch(631, json!({ "delay": -1 })).await;
    assert_eq!(
        r.json(),
        json!({ "delay": ["Ensure this value is greater than or equal to 0."] })
    );

    // PUT needs the required fields.
    let put = |b: Value| write_json(&h.app, "PUT", "/api/v2/jobs/631/", Some("admin"), b);
    let r = put(json!({ "name": "Full" })).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(keys(&r.json()), ["delay", "project_id"]);
    let r = put(json!({ "name": "Full", "delay": 0, "project_id": 45 })).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["name"], json!("Full"));
    let r = write_json(
        &h.app,
        "PATCH",
        "/api/v2/jobs/31337/",
        Some("admin"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(
        &h.app,
        "PATCH",
        "/api/v2/jobs/631/",
        &[
            ("authorization", "Token admin"),
            ("content-type", "text/plain"),
        ],
        Some(b"x".to_vec()),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn delete_removes_the_job() {
    let h = harness();
    let r = send(
        &h.app,
        "DELETE",
        "/api/v2/jobs/633/",
        &[("authorization", "Token admin")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.text.is_empty());
    assert_eq!(
        h.backend.calls().last().unwrap().0,
        "delete antenna/job-633"
    );
    assert_eq!(
        get(&h.app, "/api/v2/jobs/633/").await.status,
        StatusCode::NOT_FOUND
    );
    let r = send(
        &h.app,
        "DELETE",
        "/api/v2/jobs/633/",
        &[("authorization", "Token admin")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn run_semantics() {
    let h = harness();
    // CREATED: start.
    let r = action(&h.app, 632, "run", Some("admin")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], json!("PENDING"));
    assert_eq!(r.json()["progress"]["summary"]["status"], json!("PENDING"));
    assert_eq!(
        h.backend.calls().last().unwrap().1,
        json!({ "start": true })
    );
    // Running: nothing written, the job unchanged.
    let n = h.backend.calls().len();
    for id in [631, 634, 636] {
        let before = get(&h.app, &format!("/api/v2/jobs/{id}/")).await.json();
        let r = action(&h.app, id, "run", Some("admin")).await;
        assert_eq!(r.status, StatusCode::OK);
        let mut after = r.json();
        after["user_permissions"] = json!([]);
        assert_eq!(after, before, "run on {id}");
    }
    assert_eq!(h.backend.calls().len(), n);
    // Final: a new attempt, shown queued with reset progress.
    let r = action(&h.app, 630, "run", Some("admin")).await.json();
    assert_eq!(
        h.backend.calls().last().unwrap().1,
        json!({ "attempt": 2, "start": true, "cancel": false })
    );
    assert_eq!(r["status"], json!("PENDING"));
    assert_eq!(r["finished_at"], Value::Null);
    assert_eq!(
        r["progress"]["summary"],
        json!({ "status": "PENDING", "progress": 0.0 })
    );
    for s in r["progress"]["stages"].as_array().unwrap() {
        assert_eq!(
            (s["status"].clone(), s["progress"].clone()),
            (json!("CREATED"), json!(0.0))
        );
    }
    assert_eq!(r["progress"]["stages"][0]["params"][0]["value"], json!(""));
    // Again before the controller reacted: no second attempt.
    let n = h.backend.calls().len();
    let r = action(&h.app, 630, "run", Some("admin")).await.json();
    assert_eq!(r["status"], json!("PENDING"));
    assert_eq!(h.backend.calls().len(), n);
    // What GET shows is the cache (the controller has not moved the status yet).
    assert_eq!(
        get(&h.app, "/api/v2/jobs/630/").await.json()["status"],
        json!("FAILURE")
    );
}

#[tokio::test]
async fn retry_semantics() {
    let h = harness();
    let n = h.backend.calls().len();
    assert_eq!(
        action(&h.app, 631, "retry", Some("admin")).await.json()["status"],
        json!("STARTED")
    );
    assert_eq!(h.backend.calls().len(), n);
    let r = action(&h.app, 633, "retry", Some("admin")).await.json();
    assert_eq!(r["status"], json!("PENDING"));
    assert_eq!(r["duration"], Value::Null);
    assert_eq!(
        h.backend.calls().last().unwrap().1,
        json!({ "attempt": 2, "start": true, "cancel": false })
    );
    let r = action(&h.app, 635, "retry", Some("admin")).await.json();
    assert_eq!(r["status"], json!("PENDING"));
    let r = action(&h.app, 632, "retry", Some("admin")).await.json();
    assert_eq!(r["status"], json!("PENDING"));
    assert_eq!(
        h.backend.calls().last().unwrap().1,
        json!({ "attempt": 2, "start": true, "cancel": false })
    );
}

#[tokio::test]
async fn cancel_semantics() {
    let h = harness();
    // CREATED: REVOKED at once.
    let r = action(&h.app, 632, "cancel", Some("admin")).await.json();
    assert_eq!(r["status"], json!("REVOKED"));
    assert_eq!(
        h.backend.calls().last().unwrap().1,
        json!({ "cancel": true })
    );
    // Running: CANCELING.
    let r = action(&h.app, 631, "cancel", Some("admin")).await.json();
    assert_eq!(r["status"], json!("CANCELING"));
    assert_eq!(r["progress"]["summary"]["status"], json!("CANCELING"));
    // Sticky: a second cancel writes nothing and still shows CANCELING.
    let n = h.backend.calls().len();
    let r = action(&h.app, 631, "cancel", Some("admin")).await.json();
    assert_eq!(r["status"], json!("CANCELING"));
    // Already canceling, or final: nothing.
    assert_eq!(
        action(&h.app, 636, "cancel", Some("admin")).await.json()["status"],
        json!("CANCELING")
    );
    assert_eq!(
        action(&h.app, 633, "cancel", Some("admin")).await.json()["status"],
        json!("SUCCESS")
    );
    assert_eq!(
        action(&h.app, 635, "cancel", Some("admin")).await.json()["status"],
        json!("REVOKED")
    );
    assert_eq!(h.backend.calls().len(), n);
    // run on a canceling job does not restart it.
    assert_eq!(
        action(&h.app, 631, "run", Some("admin")).await.json()["status"],
        json!("CANCELING")
    );
    assert_eq!(h.backend.calls().len(), n);
}

// ---------------------------------------------------------------------------------------
// Reads never touch the API server; no input is a 500
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn reads_never_call_the_backend() {
    let h = harness();
    for i in 0..1000 {
        let uri = match i % 4 {
            0 => "/api/v2/jobs/".to_string(),
            1 => format!("/api/v2/jobs/{}/", 630 + i % 8),
            2 => "/api/v2/jobs/?search=sync&ordering=-name&limit=2".to_string(),
            _ => "/api/v2/jobs/?ids_only&format=api".to_string(),
        };
        let r = get_as(&h.app, &uri, if i % 2 == 0 { "admin" } else { "viewer" }).await;
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::NOT_FOUND,
            "{uri}"
        );
    }
    assert!(h.backend.calls().is_empty());
    assert!(h.auth.calls.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn odd_inputs_never_yield_500() {
    let h = harness();
    let uris = [
        "/api/v2/jobs/?limit=%zz&offset=%FF%FE",
        "/api/v2/jobs/?ordering=-,--name,%00",
        "/api/v2/jobs/?search=%00%01",
        "/api/v2/jobs/?limit=18446744073709551616&offset=18446744073709551615",
        "/api/v2/jobs/?offset=9223372036854775807&limit=9223372036854775807",
        "/api/v2/jobs/?cutoff_hours=9223372036854775807",
        "/api/v2/jobs/?project_id=-9223372036854775808",
        "/api/v2/jobs/?logs_limit=99999999999999999999",
        "/api/v2/jobs/?status=%E2%9C%93",
        "/api/v2/jobs/630/?logs_limit=%20",
        "/api/v2/jobs/%20/",
        "/api/v2/jobs//",
        "/api/v2/jobs/630//",
        "/api/v2/jobs/630/run/extra/",
        "/api/v2/schema/?format=api",
        "/api/v2/jobs/?format=api&search=%3Cb%3E",
    ];
    for uri in uris {
        for m in ["GET", "POST", "PATCH", "DELETE", "OPTIONS"] {
            let r = send(
                &h.app,
                m,
                uri,
                &[
                    ("authorization", "Token admin"),
                    ("content-type", "application/json"),
                ],
                Some(b"{\"name\": 1e999}".to_vec()),
            )
            .await;
            assert!(r.status.as_u16() < 500, "{m} {uri}: {}", r.status);
        }
    }
    let bodies: [&[u8]; 8] = [
        b"\xff\xfe",
        b"{\"name\": \"\\ud800\"}",
        b"{\"delay\": 1e400, \"name\": \"x\", \"project_id\": 45}",
        b"{\"delay\": 99999999999999999999999, \"name\": \"x\", \"project_id\": 45}",
        b"{\"project_id\": 9223372036854775807, \"name\": \"x\", \"delay\": 0}",
        b"null",
        b"\"text\"",
        b"{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
    ];
    for b in bodies {
        for (m, uri) in [
            ("POST", "/api/v2/jobs/"),
            ("PUT", "/api/v2/jobs/631/"),
            ("PATCH", "/api/v2/jobs/631/"),
        ] {
            let r = send(
                &h.app,
                m,
                uri,
                &[
                    ("authorization", "Token admin"),
                    ("content-type", "application/json"),
                ],
                Some(b.to_vec()),
            )
            .await;
            assert!(
                r.status.as_u16() < 500,
                "{m} {uri} {:?}: {}",
                String::from_utf8_lossy(b),
                r.text
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// OpenAPI
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn openapi_is_true_to_the_server() {
    let h = harness();
    let r = get(&h.app, "/api/v2/schema/").await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert_eq!(doc["openapi"], json!("3.0.3"));
    assert_eq!(doc["servers"][0]["url"], json!("http://testserver"));
    let paths: Vec<String> = keys(&doc["paths"]);
    let routes: Vec<String> = RouteKind::ALL
        .iter()
        .map(|k| k.path().to_string())
        .collect();
    assert_eq!(paths, routes);
    for kind in RouteKind::ALL {
        let mut documented: Vec<String> = keys(&doc["paths"][kind.path()]);
        documented.sort();
        let mut allowed: Vec<String> = kind.allow().split(", ").map(str::to_lowercase).collect();
        allowed.sort();
        assert_eq!(documented, allowed, "{}", kind.path());
        // Each documented method answers something other than 404/405 on the server.
        for m in kind.allow().split(", ") {
            let id = if m == "DELETE" { "634" } else { "631" };
            let path = kind.path().replace("{id}", id);
            let r = send(
                &h.app,
                m,
                &path,
                &[
                    ("authorization", "Token admin"),
                    ("content-type", "application/json"),
                ],
                Some(b"{}".to_vec()),
            )
            .await;
            assert!(
                r.status != StatusCode::METHOD_NOT_ALLOWED && r.status != StatusCode::NOT_FOUND,
                "{m} {path}: {}",
                r.status
            );
        }
    }
    let job = &doc["components"]["schemas"]["Job"]["properties"];
    assert_eq!(keys(job), DETAIL_KEYS.to_vec());
    let item = &doc["components"]["schemas"]["JobListItem"]["properties"];
    let expected: Vec<&str> = DETAIL_KEYS
        .iter()
        .copied()
        .filter(|k| *k != "result")
        .collect();
    assert_eq!(keys(item), expected);
    let params: Vec<&str> = doc["paths"]["/api/v2/jobs/"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let names: Vec<&str> = LIST_PARAMS.iter().map(|p| p.0).collect();
    assert_eq!(params, names);
    // Every documented list parameter is read by the server: an invalid value of each typed
    // one is refused, or changes nothing for strings and flags.
    for (name, kind, _) in LIST_PARAMS {
        let r = get(&h.app, &format!("/api/v2/jobs/?{name}=%21bad")).await;
        assert!(r.status.as_u16() < 500, "{name}");
        if kind == "integer" && !["limit", "offset"].contains(&name) {
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}");
        }
    }
    // The write schema lists exactly the writable fields.
    let write = keys(&doc["components"]["schemas"]["JobWrite"]["properties"]);
    let mut write_sorted = write.clone();
    write_sorted.sort();
    let mut fields: Vec<String> = body::WRITABLE_FIELDS
        .iter()
        .map(|s| s.to_string())
        .collect();
    fields.sort();
    assert_eq!(write_sorted, fields);
    // The HTML view of the schema.
    let r = get(&h.app, "/api/v2/schema/?format=api").await;
    assert!(r.header("content-type").starts_with("text/html"));
}

// ---------------------------------------------------------------------------------------
// Pure functions
// ---------------------------------------------------------------------------------------

#[test]
fn action_plans() {
    let with = |state: Option<&str>, spec: Value, attempt: i64| {
        job(
            Some(1),
            "antenna",
            "j",
            "2025-01-01T00:00:00Z",
            spec,
            state.map(|s| json!({ "id": 1, "state": s, "attempt": attempt })),
        )
    };
    let created = with(None, json!({ "start": false }), 0);
    assert_eq!(plan(Action::Run, &created), Some(json!({ "start": true })));
    assert_eq!(
        plan(Action::Cancel, &created),
        Some(json!({ "cancel": true }))
    );
    assert_eq!(
        plan(Action::Retry, &created),
        Some(json!({ "attempt": 2, "start": true, "cancel": false }))
    );
    // Queued but not yet picked up (start already true): run is a no-op.
    let queued = with(None, json!({}), 0);
    assert_eq!(serialize::projected_state(&queued), JobState::Pending);
    assert_eq!(plan(Action::Run, &queued), None);
    for s in ["PENDING", "STARTED", "RETRY"] {
        let j = with(Some(s), json!({}), 1);
        assert_eq!(plan(Action::Run, &j), None, "{s}");
        assert_eq!(plan(Action::Retry, &j), None, "{s}");
        assert_eq!(
            plan(Action::Cancel, &j),
            Some(json!({ "cancel": true })),
            "{s}"
        );
    }
    let canceling = with(Some("CANCELING"), json!({ "cancel": true }), 1);
    for a in [Action::Run, Action::Retry, Action::Cancel] {
        assert_eq!(plan(a, &canceling), None);
    }
    for s in ["SUCCESS", "FAILURE", "REVOKED"] {
        let j = with(Some(s), json!({ "attempt": 3 }), 3);
        let fresh = Some(json!({ "attempt": 4, "start": true, "cancel": false }));
        assert_eq!(plan(Action::Run, &j), fresh, "{s}");
        assert_eq!(plan(Action::Retry, &j), fresh, "{s}");
        assert_eq!(plan(Action::Cancel, &j), None, "{s}");
        // Once the new attempt is asked for, nothing more to do until the controller acts.
        let asked = with(Some(s), json!({ "attempt": 4 }), 3);
        assert_eq!(serialize::projected_state(&asked), JobState::Pending);
        assert_eq!(plan(Action::Run, &asked), None, "{s}");
        // ...but it can still be canceled.
        assert_eq!(
            plan(Action::Cancel, &asked),
            Some(json!({ "cancel": true }))
        );
    }
    // The status's attempt counts when it is ahead of the spec's.
    let ahead = with(Some("FAILURE"), json!({ "attempt": 1 }), 5);
    assert_eq!(
        plan(Action::Run, &ahead),
        Some(json!({ "attempt": 6, "start": true, "cancel": false }))
    );
}

#[test]
fn time_formats() {
    assert_eq!(
        serialize::iso_micros(0).as_deref(),
        Some("1970-01-01T00:00:00.000000Z")
    );
    assert_eq!(
        serialize::iso_micros(1_714_450_728_365_585).as_deref(),
        Some("2024-04-30T04:18:48.365585Z")
    );
    assert_eq!(serialize::duration_string(0, 1_442_684), "1.442684");
    assert_eq!(serialize::duration_string(5, 3), "0.000000");
    assert_eq!(serialize::duration_string(0, 90_000_000), "90.000000");
}

#[test]
fn page_links_keep_other_params() {
    let q = query::Query::parse(Some("a=1&limit=x&b=2&offset=3&a=4"));
    assert_eq!(q.with_page(20, Some(40)), "a=1&limit=20&b=2&offset=40&a=4");
    assert_eq!(q.with_page(20, None), "a=1&limit=20&b=2&a=4");
    assert_eq!(
        query::Query::parse(None).with_page(5, Some(5)),
        "limit=5&offset=5"
    );
    assert_eq!(q.get("a"), Some("4"));
    assert!(!q.flag("absent"));
    let q = query::Query::parse(Some("x&y=YES&z=no&w=%20"));
    assert!(q.flag("x") && q.flag("y") && !q.flag("z") && q.flag("w"));
}

#[test]
fn project_placement_prefers_labels_then_default() {
    let h = harness();
    assert_eq!(
        h.state.place(45),
        Some(("proj-45".into(), Some("AMBER - Costa Rica".into())))
    );
    assert_eq!(h.state.place(9), Some(("proj-9".into(), None)));
    assert_eq!(h.state.place(1), Some(("antenna".into(), None)));
    let h = harness_with(ApiConfig::default(), Vec::new(), true);
    assert_eq!(h.state.place(1), None);
}

#[test]
fn config_validation() {
    assert!(ApiConfig::default().validate().is_ok());
    for ok in ["https://api.example.org", "http://localhost:8000/antenna/"] {
        let c = ApiConfig {
            public_url: Some(ok.into()),
            ..ApiConfig::default()
        };
        assert!(c.validate().is_ok(), "{ok}");
    }
    for bad in ["api.example.org", "https://", "ftp://x", "https://x/?a=1"] {
        let c = ApiConfig {
            public_url: Some(bad.into()),
            ..ApiConfig::default()
        };
        assert!(c.validate().is_err(), "{bad}");
    }
}
