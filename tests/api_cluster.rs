//! Cluster tests of the REST facade: `antenna-operator run` as a real process, real
//! ServiceAccount tokens, TokenReview, SubjectAccessReview and RBAC.

mod common;
mod operator_support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};

use antenna_operator::crd::{CaptureJob, JobState};
use common::{sim, wait_for, ClusterTest};
use operator_support::{http, install_crd, Operator};

const LONG: Duration = Duration::from_secs(90);

async fn role(t: &ClusterTest, name: &str, verbs: &[&str]) -> String {
    let roles: Api<Role> = t.api();
    let r: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "rules": [{"apiGroups": ["antenna.insectai.org"], "resources": ["capturejobs"], "verbs": verbs}]
    }))
    .unwrap();
    roles.create(&PostParams::default(), &r).await.unwrap();
    let sas: Api<ServiceAccount> = t.api();
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let rbs: Api<RoleBinding> = t.api();
    let rb: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": t.ns}]
    }))
    .unwrap();
    rbs.create(&PostParams::default(), &rb).await.unwrap();
    common::service_account_token(&t.client, &t.ns, name).await
}

fn by_id(id: i64) -> impl Fn(Option<&CaptureJob>) -> bool {
    move |j: Option<&CaptureJob>| j.is_some_and(|j| j.job_id() == Some(id))
}

async fn name_of(jobs: &Api<CaptureJob>, id: i64) -> String {
    let list = jobs.list(&Default::default()).await.unwrap();
    list.items
        .into_iter()
        .find(|j| j.job_id() == Some(id))
        .and_then(|j| j.metadata.name)
        .unwrap_or_else(|| panic!("no CaptureJob with id {id}"))
}

async fn wait_facade_state(port: u16, id: i64, want: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let (code, body) = http(port, "GET", &format!("/api/v2/jobs/{id}/"), None, None).await;
        if code == 200 && body["status"] == want {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} never {want} in the facade: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn facade_creates_runs_cancels_and_authorizes_for_real() {
    let t = ClusterTest::new("facade").await;
    install_crd(&t.client).await;
    let op = Operator::start("run", &t.ns, &[]).await;
    let port = op.api_port;
    let operator = role(
        &t,
        "jobs-operator",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete", "run", "cancel",
        ],
    )
    .await;
    let reader = role(&t, "jobs-reader", &["get", "list", "watch"]).await;
    let jobs: Api<CaptureJob> = t.api();

    // No token: 401 on writes; a bad token: 401 Invalid token.
    let body = serde_json::json!({"name": "Sync via REST", "delay": 0, "project_id": 45, "job_type_key": "data_storage_sync", "limit": 20});
    let (code, err) = http(port, "POST", "/api/v2/jobs/?start_now", None, Some(&body)).await;
    assert_eq!(
        (code, err["detail"].as_str()),
        (401, Some("Authentication credentials were not provided."))
    );
    let (code, err) = http(
        port,
        "POST",
        "/api/v2/jobs/",
        Some("not-a-token"),
        Some(&body),
    )
    .await;
    assert_eq!(
        (code, err["detail"].as_str()),
        (401, Some("Invalid token."))
    );
    // The reader may not create.
    let (code, _) = http(port, "POST", "/api/v2/jobs/", Some(&reader), Some(&body)).await;
    assert_eq!(code, 403);

    // Create and start: a CaptureJob appears and runs to SUCCESS, visible with its stages.
    let (code, created) = http(
        port,
        "POST",
        "/api/v2/jobs/?start_now",
        Some(&operator),
        Some(&body),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_i64().expect("an id");
    assert_eq!(created["status"], "PENDING");
    let name = name_of(&jobs, id).await;
    wait_for(&jobs, &name, "SUCCESS", LONG, |j: Option<&CaptureJob>| {
        j.is_some_and(|j| j.state() == JobState::Success)
    })
    .await;
    let done = wait_facade_state(port, id, "SUCCESS").await;
    let stages: Vec<&str> = done["progress"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["data_storage_sync", "regroup_sessions"]);
    assert_eq!(done["progress"]["summary"]["status"], "SUCCESS");
    assert_eq!(done["job_type"]["key"], "data_storage_sync");

    // user_permissions follow each caller's rights.
    let (_, as_op) = http(
        port,
        "GET",
        &format!("/api/v2/jobs/{id}/"),
        Some(&operator),
        None,
    )
    .await;
    let (_, as_reader) = http(
        port,
        "GET",
        &format!("/api/v2/jobs/{id}/"),
        Some(&reader),
        None,
    )
    .await;
    let (_, anon) = http(port, "GET", &format!("/api/v2/jobs/{id}/"), None, None).await;
    assert_eq!(
        as_op["user_permissions"],
        serde_json::json!(["update", "delete", "run"])
    );
    assert_eq!(as_reader["user_permissions"], serde_json::json!([]));
    assert_eq!(anon["user_permissions"], serde_json::json!([]));
    let (_, list_op) = http(port, "GET", "/api/v2/jobs/", Some(&operator), None).await;
    let (_, list_reader) = http(port, "GET", "/api/v2/jobs/", Some(&reader), None).await;
    assert_eq!(list_op["user_permissions"], serde_json::json!(["create"]));
    assert_eq!(list_reader["user_permissions"], serde_json::json!([]));

    // run: 403 for the reader, 200 for the operator (a final job gets a fresh attempt).
    let (code, _) = http(
        port,
        "POST",
        &format!("/api/v2/jobs/{id}/run/"),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(code, 403);
    let (code, rerun) = http(
        port,
        "POST",
        &format!("/api/v2/jobs/{id}/run/"),
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(code, 200, "{rerun}");
    wait_for(
        &jobs,
        &name,
        "attempt 2 final",
        LONG,
        |j: Option<&CaptureJob>| {
            j.is_some_and(|j| {
                j.status
                    .as_ref()
                    .is_some_and(|s| s.attempt == 2 && s.state.is_final())
            })
        },
    )
    .await;

    // A job applied with kubectl appears in the facade with an id.
    let mut applied: CaptureJob = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ml-job.yaml"))
            .unwrap(),
    )
    .unwrap();
    applied.spec.template = Some(
        serde_json::from_value(serde_json::json!({"annotations": {sim::OUTCOME: "hold"}})).unwrap(),
    );
    jobs.create(&PostParams::default(), &applied).await.unwrap();
    let j = wait_for(
        &jobs,
        "ml-moths-2024",
        "STARTED",
        LONG,
        |j: Option<&CaptureJob>| j.is_some_and(|j| j.state() == JobState::Started),
    )
    .await;
    let kid = j.job_id().unwrap();
    let started = wait_facade_state(port, kid, "STARTED").await;
    assert_eq!(started["name"], "Moth detector on the May capture set");
    assert_eq!(started["pipeline"]["slug"], "moth-detector-2024");

    // Cancel through the facade: REVOKED, and it stays so.
    let (code, canceled) = http(
        port,
        "POST",
        &format!("/api/v2/jobs/{kid}/cancel/"),
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(code, 200, "{canceled}");
    assert_eq!(canceled["status"], "CANCELING");
    wait_for(&jobs, "ml-moths-2024", "REVOKED", LONG, by_id(kid)).await;
    wait_facade_state(port, kid, "REVOKED").await;
    let (code, again) = http(
        port,
        "POST",
        &format!("/api/v2/jobs/{kid}/cancel/"),
        Some(&operator),
        None,
    )
    .await;
    assert_eq!((code, again["status"].as_str()), (200, Some("REVOKED")));
    let (_, later) = http(port, "GET", &format!("/api/v2/jobs/{kid}/"), None, None).await;
    assert_eq!(later["status"], "REVOKED");
    assert_eq!(later["progress"]["summary"]["status"], "REVOKED");
}

/// Reads come from the watch cache: 1,000 GETs add no request to the API server.
#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn a_thousand_reads_make_no_api_request() {
    let t = ClusterTest::new("facade-reads").await;
    install_crd(&t.client).await;
    let op = Operator::start("api", &t.ns, &[]).await;
    let jobs: Api<CaptureJob> = t.api();
    let mut j: CaptureJob = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/seed-sync-job.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    j.metadata.labels = Some([("antenna.insectai.org/id".to_string(), "7".to_string())].into());
    j.spec.start = false;
    jobs.create(&PostParams::default(), &j).await.unwrap();
    // Wait until the facade serves it.
    let deadline = std::time::Instant::now() + LONG;
    while http(op.api_port, "GET", "/api/v2/jobs/7/", None, None)
        .await
        .0
        != 200
    {
        assert!(std::time::Instant::now() < deadline, "job 7 never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = capturejob_reads(&t).await;
    for i in 0..1000 {
        let path = if i % 2 == 0 {
            "/api/v2/jobs/?limit=25".to_string()
        } else {
            "/api/v2/jobs/7/".to_string()
        };
        let (code, _) = http(op.api_port, "GET", &path, None, None).await;
        assert_eq!(code, 200);
    }
    let after = capturejob_reads(&t).await;
    // Other tests run beside this one and read capturejobs now and then; a facade that
    // read through would add 1,000.
    assert!(
        after - before < 50.0,
        "1,000 facade GETs added {} capturejob reads to the API server",
        after - before
    );
}

/// GET and LIST requests on capturejobs served by the API server so far (its own metric).
async fn capturejob_reads(t: &ClusterTest) -> f64 {
    let req = http_req("/metrics");
    let text = t
        .client
        .request_text(req)
        .await
        .expect("apiserver /metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{") && l.contains("resource=\"capturejobs\"")
        })
        .filter(|l| l.contains("verb=\"GET\"") || l.contains("verb=\"LIST\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn http_req(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path).body(vec![]).unwrap()
}
