//! Smoke tests of the local control plane itself (scripts/dev-cluster.sh): the real
//! API server, controller-manager and scheduler, and the KWOK Pod stages the operator's
//! tests rely on. Run with `make test` (or `cargo test -- --include-ignored` with the
//! cluster up).

mod common;

use std::time::Duration;

use common::{batch_pod, pod_phase_is, sim, wait_for, wait_gone, ClusterTest, TIMEOUT};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ConfigMap, ContainerStateTerminated, Pod},
};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::wait::{conditions, Condition},
    Api,
};
use serde_json::json;

fn terminated(pod: &Pod) -> ContainerStateTerminated {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .unwrap_or_else(|| panic!("no terminated container state in {:?}", pod.status))
}

/// Seconds from the Pod's start to its first container's finish (second precision).
fn run_seconds(pod: &Pod) -> i64 {
    let t = terminated(pod);
    let start = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .expect("startTime");
    t.finished_at.expect("finishedAt").0.as_second() - start.0.as_second()
}

async fn create(pods: &Api<Pod>, pod: Pod) {
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create Pod");
}

async fn annotate(pods: &Api<Pod>, name: &str, annotations: serde_json::Value) {
    let patch = json!({"metadata": {"annotations": annotations}});
    let params = PatchParams::default();
    pods.patch(name, &params, &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("annotate {name}: {e}"));
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn pod_reaches_succeeded() {
    let t = ClusterTest::new("smoke-succeeded").await;
    let pods: Api<Pod> = t.api();
    create(&pods, batch_pod("ok", &[])).await;
    let pod = wait_for(&pods, "ok", "Succeeded", TIMEOUT, pod_phase_is("Succeeded")).await;
    let term = terminated(&pod);
    assert_eq!(term.exit_code, 0);
    assert_eq!(term.reason.as_deref(), Some("Completed"));
    assert!(term.started_at.is_some() && term.finished_at.is_some());
    assert_eq!(term.message, None);
    let spec = pod.spec.expect("spec");
    assert!(spec.node_name.expect("bound").starts_with("kwok-node-"));
    assert_eq!(
        pod.status.and_then(|s| s.host_ip).as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn succeeded_pod_carries_termination_message() {
    let t = ClusterTest::new("smoke-message").await;
    let pods: Api<Pod> = t.api();
    create(
        &pods,
        batch_pod("result", &[(sim::MESSAGE, r#"{"processed": 25}"#)]),
    )
    .await;
    let pod = wait_for(
        &pods,
        "result",
        "Succeeded",
        TIMEOUT,
        pod_phase_is("Succeeded"),
    )
    .await;
    let term = terminated(&pod);
    assert_eq!(term.exit_code, 0);
    let result: serde_json::Value =
        serde_json::from_str(term.message.as_deref().expect("message")).unwrap();
    assert_eq!(result, json!({"processed": 25}));
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn failed_pod_reports_exit_code_and_message() {
    let t = ClusterTest::new("smoke-failed").await;
    let pods: Api<Pod> = t.api();
    let annotations = [
        (sim::OUTCOME, "fail"),
        (sim::EXIT_CODE, "3"),
        (sim::MESSAGE, "boom"),
    ];
    create(&pods, batch_pod("bad", &annotations)).await;
    let pod = wait_for(&pods, "bad", "Failed", TIMEOUT, pod_phase_is("Failed")).await;
    let term = terminated(&pod);
    assert_eq!(term.exit_code, 3);
    assert_eq!(term.reason.as_deref(), Some("Error"));
    assert_eq!(term.message.as_deref(), Some("boom"));

    // Without an exit code annotation a failure exits 1.
    create(&pods, batch_pod("bad-default", &[(sim::OUTCOME, "fail")])).await;
    let pod = wait_for(
        &pods,
        "bad-default",
        "Failed",
        TIMEOUT,
        pod_phase_is("Failed"),
    )
    .await;
    assert_eq!(terminated(&pod).exit_code, 1);
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn unschedulable_pod_stays_pending() {
    let t = ClusterTest::new("smoke-unschedulable").await;
    let pods: Api<Pod> = t.api();
    let mut pod = batch_pod("huge", &[]);
    let container = &mut pod.spec.as_mut().unwrap().containers[0];
    container.resources = Some(
        serde_json::from_value(json!({"requests": {"cpu": "1000"}})).unwrap(), // no node has 1000 CPUs
    );
    create(&pods, pod).await;
    let unschedulable = |pod: Option<&Pod>| {
        pod.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    };
    let pod = wait_for(
        &pods,
        "huge",
        "PodScheduled=False/Unschedulable",
        TIMEOUT,
        unschedulable,
    )
    .await;
    let status = pod.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(pod.spec.and_then(|s| s.node_name), None);
    let message = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap()
        .message;
    assert!(
        message
            .as_deref()
            .unwrap_or_default()
            .contains("Insufficient cpu"),
        "scheduler message: {message:?}"
    );
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn deleting_owner_garbage_collects_pods() {
    let t = ClusterTest::new("smoke-gc").await;
    let owners: Api<ConfigMap> = t.api();
    let pods: Api<Pod> = t.api();
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap();
    let owner = owners
        .create(&PostParams::default(), &owner)
        .await
        .expect("create owner");
    for name in ["child-0", "child-1"] {
        let mut pod = batch_pod(name, &[(sim::OUTCOME, "hold")]);
        pod.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid.clone().unwrap(), "controller": true,
        }))
        .unwrap()]);
        create(&pods, pod).await;
        wait_for(&pods, name, "Running", TIMEOUT, pod_phase_is("Running")).await;
    }
    owners
        .delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    // The garbage collector may need a discovery resync (up to ~30 s) before it acts.
    for name in ["child-0", "child-1"] {
        wait_gone(&pods, name, Duration::from_secs(90)).await;
    }
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn deleting_a_running_pod_completes() {
    let t = ClusterTest::new("smoke-delete").await;
    let pods: Api<Pod> = t.api();
    create(&pods, batch_pod("doomed", &[(sim::OUTCOME, "hold")])).await;
    wait_for(&pods, "doomed", "Running", TIMEOUT, pod_phase_is("Running")).await;
    // A graceful delete (30 s grace period) needs the "kubelet" (KWOK) to confirm it.
    pods.delete("doomed", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&pods, "doomed", Duration::from_secs(10)).await;
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn job_completes() {
    let t = ClusterTest::new("smoke-job").await;
    let jobs: Api<Job> = t.api();
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "batch"},
        "spec": {
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "antenna-worker.invalid/sim:1"}],
            }},
        },
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create Job");
    let job = wait_for(
        &jobs,
        "batch",
        "Complete",
        TIMEOUT,
        conditions::is_job_completed(),
    )
    .await;
    assert_eq!(job.status.and_then(|s| s.succeeded), Some(2));
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn service_account_without_permission_gets_403() {
    let t = ClusterTest::new("smoke-rbac").await;
    let token = common::service_account_token(&t.client, &t.ns, "nobody").await;
    let as_sa = common::client_with_token(&token).await; // authenticates: /version is public
    let pods: Api<Pod> = Api::namespaced(as_sa, &t.ns);
    match pods.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            let user = format!("system:serviceaccount:{}:nobody", t.ns);
            assert!(
                status.message.contains(&user),
                "not refused as {user}: {}",
                status.message
            );
        }
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn held_pod_runs_until_annotated() {
    let t = ClusterTest::new("smoke-hold").await;
    let pods: Api<Pod> = t.api();
    // "held" is held from the start; "held-late" would end 3 s after starting, but is
    // put on hold once Running.
    create(&pods, batch_pod("held", &[(sim::OUTCOME, "hold")])).await;
    create(&pods, batch_pod("held-late", &[(sim::AFTER, "3s")])).await;
    for name in ["held", "held-late"] {
        wait_for(&pods, name, "Running", TIMEOUT, pod_phase_is("Running")).await;
    }
    annotate(&pods, "held-late", json!({sim::OUTCOME: "hold"})).await;

    // Neither may end on its own within 5 s (longer than the 1 s default and the 3 s).
    let stays_running = |name: &'static str| {
        let running =
            kube::runtime::wait::await_condition(pods.clone(), name, pod_phase_is("Running").not());
        async move {
            let left = tokio::time::timeout(Duration::from_secs(5), running).await;
            assert!(left.is_err(), "held Pod {name} left Running: {left:?}");
        }
    };
    tokio::join!(stays_running("held"), stays_running("held-late"));

    annotate(
        &pods,
        "held",
        json!({sim::OUTCOME: "fail", sim::EXIT_CODE: "42"}),
    )
    .await;
    annotate(&pods, "held-late", json!({sim::OUTCOME: "succeed"})).await;
    let pod = wait_for(&pods, "held", "Failed", TIMEOUT, pod_phase_is("Failed")).await;
    assert_eq!(terminated(&pod).exit_code, 42);
    wait_for(
        &pods,
        "held-late",
        "Succeeded",
        TIMEOUT,
        pod_phase_is("Succeeded"),
    )
    .await;
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn delays_follow_after_annotation_and_antenna_delay() {
    let t = ClusterTest::new("smoke-timing").await;
    let pods: Api<Pod> = t.api();
    let with_env = |name: &str, annotations: &[(&str, &str)], secs: &str| {
        let mut pod = batch_pod(name, annotations);
        pod.spec.as_mut().unwrap().containers[0].env = Some(vec![serde_json::from_value(
            json!({"name": "ANTENNA_DELAY", "value": secs}),
        )
        .unwrap()]);
        pod
    };
    create(&pods, batch_pod("default", &[])).await;
    create(&pods, batch_pod("after", &[(sim::AFTER, "4s")])).await;
    create(&pods, with_env("env", &[], "4")).await;
    create(&pods, with_env("both", &[(sim::AFTER, "500ms")], "30")).await; // annotation wins
    create(&pods, batch_pod("late-start", &[(sim::START_AFTER, "3s")])).await;

    let mut runs = Vec::new();
    for name in ["default", "after", "env", "both", "late-start"] {
        let pod = wait_for(&pods, name, "Succeeded", TIMEOUT, pod_phase_is("Succeeded")).await;
        runs.push((name, run_seconds(&pod), pod));
    }
    // Timestamps have second precision: a delay of d seconds shows as d-1 ..= d+1.
    for (name, secs, pod) in &runs {
        let ok = match *name {
            "default" | "both" | "late-start" => *secs <= 2,
            _ => (3..=6).contains(secs),
        };
        assert!(ok, "{name}: ran {secs}s; status {:?}", pod.status);
    }
    let (_, _, late) = runs.iter().find(|(n, _, _)| *n == "late-start").unwrap();
    let created = late
        .metadata
        .creation_timestamp
        .clone()
        .unwrap()
        .0
        .as_second();
    let started = late
        .status
        .as_ref()
        .unwrap()
        .start_time
        .clone()
        .unwrap()
        .0
        .as_second();
    assert!(
        started - created >= 2,
        "start-after 3s: started {}s after creation",
        started - created
    );
}
