//! Cluster tests of the CaptureJob controller: the operator runs as a real process against
//! the local control plane (`make test`), Pods run on KWOK fake nodes.

mod common;
mod operator_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use antenna_operator::crd::{CaptureJob, JobState};
use common::{sim, wait_for, wait_gone, ClusterTest};
use operator_support::{install_crd, Operator};

const LONG: Duration = Duration::from_secs(90);

fn example(file: &str) -> CaptureJob {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn job(name: &str, spec: serde_json::Value) -> CaptureJob {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "antenna.insectai.org/v1alpha1", "kind": "CaptureJob",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

fn in_state(s: JobState) -> impl Fn(Option<&CaptureJob>) -> bool {
    move |j: Option<&CaptureJob>| j.is_some_and(|j| j.state() == s)
}

fn is_final(j: Option<&CaptureJob>) -> bool {
    j.is_some_and(|j| j.state().is_final())
}

fn param(j: &CaptureJob, stage: &str, key: &str) -> serde_json::Value {
    let st = j.status.as_ref().unwrap();
    let s = st.progress.stages.iter().find(|s| s.key == stage).unwrap();
    s.params
        .iter()
        .find(|p| p.key == key)
        .unwrap()
        .value
        .clone()
}

fn logs(j: &CaptureJob) -> String {
    j.status
        .as_ref()
        .map(|s| s.logs.stdout.join("\n"))
        .unwrap_or_default()
}

fn has_condition(j: &CaptureJob, type_: &str, reason: &str) -> bool {
    j.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.reason == reason)
    })
}

async fn setup(prefix: &str, extra: &[&str]) -> (ClusterTest, Operator, Api<CaptureJob>) {
    let t = ClusterTest::new(prefix).await;
    install_crd(&t.client).await;
    let op = Operator::start("controller", &t.ns, extra).await;
    let jobs: Api<CaptureJob> = t.api();
    (t, op, jobs)
}

async fn pods_of(t: &ClusterTest, id: i64) -> Vec<Pod> {
    let pods: Api<Pod> = t.api();
    pods.list(&ListParams::default().labels(&format!("antenna.insectai.org/id={id}")))
        .await
        .unwrap()
        .items
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn seed_sync_job_succeeds_with_its_two_stages() {
    let (t, _op, jobs) = setup("seed-sync", &[]).await;
    jobs.create(&PostParams::default(), &example("seed-sync-job.yaml"))
        .await
        .unwrap();
    let j = wait_for(&jobs, "sync-deployment-118", "final", LONG, is_final).await;
    assert_eq!(j.state(), JobState::Success, "{}", logs(&j));
    let st = j.status.clone().unwrap();
    let keys: Vec<_> = st.progress.stages.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["data_storage_sync", "regroup_sessions"]);
    for s in &st.progress.stages {
        assert_eq!(
            (s.status, s.progress),
            (JobState::Success, 1.0),
            "stage {}",
            s.key
        );
        assert!(s.params.iter().all(|p| p.category == "default"));
    }
    let names: Vec<_> = st.progress.stages[1]
        .params
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names[0], "Captures grouped");
    assert_eq!(names.len(), 7);
    assert_eq!(param(&j, "data_storage_sync", "total_files"), 100);
    assert_eq!(
        (st.progress.summary.status, st.progress.summary.progress),
        (JobState::Success, 1.0)
    );
    assert!(st.started_at.is_some() && st.finished_at.is_some());
    let id = j.job_id().expect("an id");
    assert_eq!(
        j.labels().get("antenna.insectai.org/id"),
        Some(&id.to_string())
    );
    // A discovery Pod, 4 batches of 25, the regrouping Pod.
    assert_eq!(pods_of(&t, id).await.len(), 6);
    // Events for its transitions.
    let events: Api<Event> = t.api();
    let reasons: BTreeSet<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("sync-deployment-118"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains("Started") && reasons.contains("Succeeded"),
        "{reasons:?}"
    );
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn ml_job_runs_four_batches_two_at_a_time_and_progress_never_decreases() {
    let (t, _op, jobs) = setup("ml-batches", &[]).await;
    let mut j = example("ml-job.yaml");
    // Slow batches down a little so that the concurrency can be seen.
    j.spec.template = Some(
        serde_json::from_value(serde_json::json!({"annotations": {sim::AFTER: "2s"}})).unwrap(),
    );
    // Watch Pods and the job from before the job exists.
    let pods: Api<Pod> = t.api();
    let pod_watch = tokio::spawn(async move {
        let mut live: BTreeSet<String> = BTreeSet::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut max_live = 0;
        let mut s = watcher(
            pods,
            watcher::Config::default().labels("antenna.insectai.org/stage=process"),
        )
        .applied_objects()
        .boxed();
        while let Ok(Some(p)) = s.try_next().await {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            seen.insert(p.name_any());
            if matches!(phase.as_str(), "Succeeded" | "Failed") {
                live.remove(&p.name_any());
            } else {
                live.insert(p.name_any());
            }
            max_live = max_live.max(live.len());
            if seen.len() == 4 && live.is_empty() {
                break;
            }
        }
        (seen, max_live)
    });
    let jobs2 = jobs.clone();
    let progress_watch = tokio::spawn(async move {
        let mut samples = vec![];
        let cfg = watcher::Config::default().fields("metadata.name=ml-moths-2024");
        let mut s = watcher(jobs2, cfg).applied_objects().boxed();
        while let Ok(Some(j)) = s.try_next().await {
            if let Some(st) = &j.status {
                samples.push((
                    st.progress.summary.progress,
                    param(&j, "process", "processed"),
                ));
                if st.state.is_final() {
                    break;
                }
            }
        }
        samples
    });
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let j = wait_for(&jobs, "ml-moths-2024", "final", LONG, is_final).await;
    assert_eq!(j.state(), JobState::Success, "{}", logs(&j));
    assert_eq!(param(&j, "process", "processed"), 100);
    assert_eq!(param(&j, "process", "remaining"), 0);
    assert_eq!(param(&j, "collect", "total_images"), 100);
    let (seen, max_live) = tokio::time::timeout(LONG, pod_watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.len(), 4, "batch Pods: {seen:?}");
    assert!(max_live <= 2, "{max_live} batch Pods ran at once");
    assert_eq!(max_live, 2, "parallelism 2 was never used");
    let samples = tokio::time::timeout(LONG, progress_watch)
        .await
        .unwrap()
        .unwrap();
    assert!(samples.len() >= 3, "{samples:?}");
    let mut last = (0.0, 0);
    for (p, processed) in &samples {
        let n = processed.as_i64().unwrap_or(0);
        assert!(*p >= last.0 && n >= last.1, "went backwards: {samples:?}");
        last = (*p, n);
    }
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn unschedulable_job_fails_at_its_pending_timeout_with_the_reason() {
    let (t, _op, jobs) = setup("unschedulable", &[]).await;
    let mut j = example("unschedulable-job.yaml");
    j.spec.pending_timeout_seconds = Some(5);
    let created = std::time::Instant::now();
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let j = wait_for(&jobs, "unschedulable-export", "final", LONG, is_final).await;
    let took = created.elapsed();
    assert_eq!(j.state(), JobState::Failure);
    assert!(
        took < Duration::from_secs(5 + 20),
        "failed only after {took:?}"
    );
    assert!(has_condition(&j, "Failed", "PendingTimeout"));
    assert!(has_condition(&j, "PodsScheduled", "Unschedulable"));
    let l = logs(&j);
    assert!(l.contains("pending for"), "{l}");
    assert!(
        l.contains("nodes are available"),
        "the scheduler's reason is quoted: {l}"
    );
    assert!(j.status.as_ref().unwrap().logs.stderr[0].contains("pending for"));
    let id = j.job_id().unwrap();
    let pods: Api<Pod> = t.api();
    for p in pods_of(&t, id).await {
        wait_gone(&pods, &p.name_any(), common::TIMEOUT).await;
    }
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn cancel_mid_run_revokes_once_pods_are_gone_and_sticks() {
    let (t, _op, jobs) = setup("cancel", &[]).await;
    let mut j = example("ml-job.yaml");
    j.spec.template = Some(
        serde_json::from_value(serde_json::json!({"annotations": {sim::OUTCOME: "hold"}})).unwrap(),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let j = wait_for(
        &jobs,
        "ml-moths-2024",
        "STARTED",
        LONG,
        in_state(JobState::Started),
    )
    .await;
    let id = j.job_id().unwrap();
    let jobs2 = jobs.clone();
    let (watching_tx, watching) = tokio::sync::oneshot::channel();
    let states = tokio::spawn(async move {
        let mut seen = vec![];
        let mut watching_tx = Some(watching_tx);
        let cfg = watcher::Config::default().fields("metadata.name=ml-moths-2024");
        let mut s = watcher(jobs2, cfg).applied_objects().boxed();
        while let Ok(Some(j)) = s.try_next().await {
            if let Some(tx) = watching_tx.take() {
                let _ = tx.send(());
            }
            if seen.last() != Some(&j.state()) {
                seen.push(j.state());
            }
            if j.state() == JobState::Revoked {
                break;
            }
        }
        seen
    });
    watching.await.unwrap();
    jobs.patch(
        "ml-moths-2024",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"cancel": true}})),
    )
    .await
    .unwrap();
    let j = wait_for(
        &jobs,
        "ml-moths-2024",
        "REVOKED",
        LONG,
        in_state(JobState::Revoked),
    )
    .await;
    let seen = tokio::time::timeout(LONG, states).await.unwrap().unwrap();
    assert!(
        seen.contains(&JobState::Canceling),
        "no CANCELING before REVOKED: {seen:?}"
    );
    let left = pods_of(&t, id).await;
    assert!(
        left.iter().all(|p| matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )),
        "REVOKED with live Pods left: {:?}",
        left.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    assert!(has_condition(&j, "Canceled", "Canceled"));
    // A result that arrives late (a Pod of that attempt that succeeds now) moves nothing.
    let mut late = common::batch_pod("late-result", &[(sim::MESSAGE, r#"{"processed": 25}"#)]);
    late.metadata.labels = Some(BTreeMap::from([
        ("antenna.insectai.org/id".into(), id.to_string()),
        ("antenna.insectai.org/attempt".into(), "1".into()),
        ("antenna.insectai.org/stage".into(), "process".into()),
        ("antenna.insectai.org/unit".into(), "0".into()),
        ("antenna.insectai.org/try".into(), "1".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "antenna-operator".into(),
        ),
    ]));
    late.metadata.owner_references =
        Some(vec![kube::Resource::controller_owner_ref(&j, &()).unwrap()]);
    let pods: Api<Pod> = t.api();
    pods.create(&PostParams::default(), &late).await.unwrap();
    // The operator deletes the stray Pod of a final attempt...
    wait_gone(&pods, "late-result", LONG).await;
    // ...and the job stays REVOKED with its progress.
    let after = jobs.get("ml-moths-2024").await.unwrap();
    assert_eq!(after.state(), JobState::Revoked);
    assert_eq!(
        after.status.as_ref().unwrap().progress,
        j.status.as_ref().unwrap().progress
    );
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn failed_batches_are_retried_then_exhaust_and_malformed_results_fail_cleanly() {
    let (t, _op, jobs) = setup("retries", &[]).await;
    let failing = job(
        "always-fails",
        serde_json::json!({"name": "fails", "jobType": "post_processing", "project": {"id": 1}, "retries": 1,
            "template": {"annotations": {sim::OUTCOME: "fail", sim::EXIT_CODE: "3", sim::MESSAGE: "disk full"}}}),
    );
    let malformed = job(
        "malformed",
        serde_json::json!({"name": "garbage result", "jobType": "post_processing", "project": {"id": 1}, "retries": 0,
            "template": {"annotations": {sim::MESSAGE: "this is not json"}}}),
    );
    let healthy = job(
        "healthy",
        serde_json::json!({"name": "fine", "jobType": "regroup_events", "project": {"id": 1}}),
    );
    for j in [&failing, &malformed, &healthy] {
        jobs.create(&PostParams::default(), j).await.unwrap();
    }
    let f = wait_for(&jobs, "always-fails", "final", LONG, is_final).await;
    assert_eq!(f.state(), JobState::Failure);
    assert!(has_condition(&f, "Failed", "BatchRetriesExhausted"));
    let l = logs(&f);
    assert!(
        l.contains("exit code 3") && l.contains("disk full") && l.contains("retry 1 of 1"),
        "{l}"
    );
    let tries: BTreeSet<String> = pods_of(&t, f.job_id().unwrap())
        .await
        .iter()
        .map(|p| p.labels()["antenna.insectai.org/try"].clone())
        .collect();
    assert_eq!(tries, BTreeSet::from(["1".to_string(), "2".to_string()]));

    let m = wait_for(&jobs, "malformed", "final", LONG, is_final).await;
    assert_eq!(m.state(), JobState::Failure);
    assert!(
        logs(&m).contains("malformed result from Pod") && logs(&m).contains("not JSON"),
        "{}",
        logs(&m)
    );
    let h = wait_for(&jobs, "healthy", "final", LONG, is_final).await;
    assert_eq!(
        h.state(),
        JobState::Success,
        "the controller kept serving other jobs"
    );
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn sigkill_mid_job_then_restart_completes_with_one_pod_per_try() {
    let (t, mut op, jobs) = setup("restart", &[]).await;
    let mut j = example("ml-job.yaml");
    j.spec.batch_size = Some(10);
    j.spec.template = Some(
        serde_json::from_value(serde_json::json!({"annotations": {sim::AFTER: "1s"}})).unwrap(),
    );
    let jobs2 = jobs.clone();
    let samples = tokio::spawn(async move {
        let mut samples = vec![];
        let cfg = watcher::Config::default().fields("metadata.name=ml-moths-2024");
        let mut s = watcher(jobs2, cfg).applied_objects().boxed();
        while let Ok(Some(j)) = s.try_next().await {
            if let Some(st) = &j.status {
                samples.push((
                    st.progress.summary.progress,
                    param(&j, "process", "processed").as_i64().unwrap_or(0),
                ));
                if st.state.is_final() {
                    break;
                }
            }
        }
        samples
    });
    jobs.create(&PostParams::default(), &j).await.unwrap();
    wait_for(
        &jobs,
        "ml-moths-2024",
        "2 batches done",
        LONG,
        |j: Option<&CaptureJob>| {
            j.is_some_and(|j| j.status.as_ref().is_some_and(|s| s.batches.succeeded >= 3))
        },
    )
    .await;
    op.kill();
    let mut op2 = Operator::start("controller", &t.ns, &[]).await;
    let j = wait_for(&jobs, "ml-moths-2024", "final", LONG, is_final).await;
    assert_eq!(
        j.state(),
        JobState::Success,
        "{}\n{}",
        logs(&j),
        op2.log_text()
    );
    assert_eq!(param(&j, "process", "processed"), 100);
    let pods = pods_of(&t, j.job_id().unwrap()).await;
    // 1 discovery + 10 batches, each exactly one Pod of try 1.
    let keys: Vec<(String, String, String)> = pods
        .iter()
        .map(|p| {
            let l = p.labels();
            (
                l["antenna.insectai.org/stage"].clone(),
                l["antenna.insectai.org/unit"].clone(),
                l["antenna.insectai.org/try"].clone(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 11, "{keys:?}");
    assert!(
        keys.iter().all(|k| k.2 == "1"),
        "a batch needed a second Pod: {keys:?}"
    );
    let samples = tokio::time::timeout(LONG, samples).await.unwrap().unwrap();
    assert!(
        samples
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
        "went backwards: {samples:?}"
    );
    op2.kill();
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn two_replicas_only_the_leader_acts_and_a_killed_leader_hands_over() {
    let t = ClusterTest::new("leader").await;
    install_crd(&t.client).await;
    let args = ["--leader-election", "--lease-duration", "6"];
    let mut a = Operator::start("controller", &t.ns, &args).await;
    let leases: Api<Lease> = t.api();
    let lease = wait_for(
        &leases,
        "antenna-operator",
        "held",
        LONG,
        |l: Option<&Lease>| {
            l.and_then(|l| l.spec.as_ref()?.holder_identity.clone())
                .is_some()
        },
    )
    .await;
    let first = lease.spec.unwrap().holder_identity.unwrap();
    let b = Operator::start("controller", &t.ns, &args).await;
    let jobs: Api<CaptureJob> = t.api();
    jobs.create(&PostParams::default(), &example("seed-sync-job.yaml"))
        .await
        .unwrap();
    let j = wait_for(&jobs, "sync-deployment-118", "final", LONG, is_final).await;
    assert_eq!(j.state(), JobState::Success);
    let (pa, pb) = (
        a.metric("antenna_pods_created_total").await,
        b.metric("antenna_pods_created_total").await,
    );
    assert!(
        pa == 6.0 && pb == 0.0,
        "Pods created by a: {pa}, by b: {pb}"
    );
    // Kill the leader: the follower takes the lease within the lease time (+ a renew period).
    let killed = std::time::Instant::now();
    a.kill();
    let lease = wait_for(
        &leases,
        "antenna-operator",
        "taken over",
        LONG,
        |l: Option<&Lease>| {
            l.and_then(|l| l.spec.as_ref()?.holder_identity.clone())
                .is_some_and(|h| h != first)
        },
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(6 + 2 + 3),
        "handover took {took:?}"
    );
    assert!(lease.spec.unwrap().lease_transitions.unwrap_or(0) >= 1);
    let mut j2 = example("delay-job.yaml");
    j2.spec.delay = 1;
    jobs.create(&PostParams::default(), &j2).await.unwrap();
    let j2 = wait_for(&jobs, "delay-test", "final", LONG, is_final).await;
    assert_eq!(j2.state(), JobState::Success);
    assert!(b.metric("antenna_pods_created_total").await >= 2.0);
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn start_false_attempts_ttl_and_ids() {
    let (t, op, jobs) = setup("lifecycle", &[]).await;
    let mut j = example("delay-job.yaml");
    j.spec.delay = 1;
    j.spec.start = false;
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let created = wait_for(
        &jobs,
        "delay-test",
        "CREATED with an id",
        LONG,
        |j: Option<&CaptureJob>| {
            j.is_some_and(|j| {
                j.status
                    .as_ref()
                    .is_some_and(|s| s.id.is_some() && s.state == JobState::Created)
            })
        },
    )
    .await;
    assert!(pods_of(&t, created.job_id().unwrap()).await.is_empty());
    jobs.patch(
        "delay-test",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"start": true}})),
    )
    .await
    .unwrap();
    let done = wait_for(&jobs, "delay-test", "final", LONG, is_final).await;
    assert_eq!(done.state(), JobState::Success);
    // A raised attempt runs afresh.
    jobs.patch(
        "delay-test",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"attempt": 2}})),
    )
    .await
    .unwrap();
    let again = wait_for(
        &jobs,
        "delay-test",
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
    assert_eq!(again.state(), JobState::Success);
    assert!(logs(&again).contains("Attempt 2"));
    // Lowering it is refused by the schema.
    let err = jobs
        .patch(
            "delay-test",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"attempt": 1}})),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("spec.attempt may only be raised"),
        "{err}"
    );
    // Ids: unique across many created at once.
    for i in 0..12 {
        let mut j = example("delay-job.yaml");
        j.metadata.name = Some(format!("many-{i}"));
        j.spec.start = false;
        jobs.create(&PostParams::default(), &j).await.unwrap();
    }
    let mut ids = BTreeSet::new();
    for i in 0..12 {
        let j = wait_for(
            &jobs,
            &format!("many-{i}"),
            "with an id",
            LONG,
            |j: Option<&CaptureJob>| {
                j.is_some_and(|j| j.status.as_ref().is_some_and(|s| s.id.is_some()))
            },
        )
        .await;
        ids.insert(j.job_id().unwrap());
    }
    assert_eq!(ids.len(), 12, "duplicate ids: {ids:?}");
    assert!(!ids.contains(&created.job_id().unwrap()));
    // TTL: a finished job and its Pods are deleted.
    let mut short = example("delay-job.yaml");
    short.metadata.name = Some("short-lived".into());
    short.spec.delay = 0;
    short.spec.ttl_seconds_after_finished = Some(2);
    jobs.create(&PostParams::default(), &short).await.unwrap();
    wait_for(&jobs, "short-lived", "final", LONG, is_final).await;
    wait_gone(&jobs, "short-lived", LONG).await;
    assert!(op.metric("antenna_reconciles_total").await > 0.0);
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn invalid_manifests_are_refused_naming_the_field() {
    let t = ClusterTest::new("invalid").await;
    install_crd(&t.client).await;
    let base = serde_json::json!({"name": "ok", "project": {"id": 1}});
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "missing name",
            serde_json::json!({"project": {"id": 1}}),
            "spec.name",
        ),
        (
            "missing project",
            serde_json::json!({"name": "x"}),
            "spec.project",
        ),
        (
            "unknown jobType",
            serde_json::json!({"jobType": "mine_bitcoin"}),
            "spec.jobType",
        ),
        (
            "negative delay",
            serde_json::json!({"delay": -1}),
            "spec.delay",
        ),
        (
            "limit below 1",
            serde_json::json!({"limit": 0}),
            "spec.limit",
        ),
        (
            "batchSize below 1",
            serde_json::json!({"batchSize": 0}),
            "spec.batchSize",
        ),
        (
            "parallelism below 1",
            serde_json::json!({"parallelism": 0}),
            "spec.parallelism",
        ),
        ("empty name", serde_json::json!({"name": ""}), "spec.name"),
        (
            "blank name",
            serde_json::json!({"name": "   "}),
            "spec.name",
        ),
        (
            "over-long name",
            serde_json::json!({"name": "x".repeat(256)}),
            "spec.name",
        ),
    ];
    for (what, patch, field) in cases {
        let mut spec = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            spec[k] = v.clone();
        }
        if what == "missing name" {
            spec.as_object_mut().unwrap().remove("name");
        }
        if what == "missing project" {
            spec.as_object_mut().unwrap().remove("project");
        }
        let manifest = serde_json::json!({
            "apiVersion": "antenna.insectai.org/v1alpha1", "kind": "CaptureJob",
            "metadata": {"name": "bad", "namespace": t.ns}, "spec": spec
        });
        let out = std::process::Command::new("kubectl")
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(manifest.to_string().as_bytes())?;
                c.wait_with_output()
            })
            .expect("kubectl on PATH (eval \"$(scripts/dev-cluster.sh env)\")");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(
            err.contains(field),
            "{what}: the message does not name {field}: {err}"
        );
    }
    let jobs: Api<CaptureJob> = t.api();
    assert!(jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn jobs_behind_the_running_limit_wait_with_their_place_and_start_in_order() {
    let (t, _op, jobs) = setup("queue", &["--max-running-jobs", "1"]).await;
    let hold = serde_json::json!({"annotations": {sim::OUTCOME: "hold"}});
    let first = job(
        "first",
        serde_json::json!({"name": "first", "jobType": "post_processing", "project": {"id": 1}, "template": hold}),
    );
    jobs.create(&PostParams::default(), &first).await.unwrap();
    wait_for(&jobs, "first", "STARTED", LONG, in_state(JobState::Started)).await;
    // An invalid job never takes a place in the queue (found by a new user: it blocked it).
    let invalid = job(
        "invalid",
        serde_json::json!({"name": "invalid", "jobType": "post_processing", "project": {"id": 1},
            "template": {"env": [{"name": "ANTENNA_JOB_ID", "value": "1"}]}}),
    );
    jobs.create(&PostParams::default(), &invalid).await.unwrap();
    wait_for(
        &jobs,
        "invalid",
        "InvalidSpec",
        LONG,
        |j: Option<&CaptureJob>| j.is_some_and(|j| has_condition(j, "Valid", "InvalidSpec")),
    )
    .await;
    let second = job(
        "second",
        serde_json::json!({"name": "second", "jobType": "post_processing", "project": {"id": 1}}),
    );
    jobs.create(&PostParams::default(), &second).await.unwrap();
    let queued = wait_for(&jobs, "second", "queued", LONG, |j: Option<&CaptureJob>| {
        j.is_some_and(|j| has_condition(j, "Queued", "Queued"))
    })
    .await;
    assert_eq!(queued.state(), JobState::Pending);
    let c = queued
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Queued")
        .unwrap()
        .clone();
    assert!(c.message.contains("place 1 of 1"), "{}", c.message);
    assert!(
        logs(&queued).contains("waiting for a free slot"),
        "{}",
        logs(&queued)
    );
    assert!(
        pods_of(&t, queued.job_id().unwrap()).await.is_empty(),
        "a queued job created Pods"
    );
    // The first one ends: the second starts and finishes.
    jobs.patch(
        "first",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"cancel": true}})),
    )
    .await
    .unwrap();
    // The freed slot wakes the queue at once (not at its next periodic look, 30 s later).
    let second = wait_for(&jobs, "second", "final", Duration::from_secs(20), is_final).await;
    assert_eq!(second.state(), JobState::Success);
    assert!(has_condition(&second, "Queued", "Admitted"));
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn active_deadline_and_stall_limit_fail_a_running_job_and_remove_its_pods() {
    let (t, _op, jobs) = setup("deadlines", &["--stall-limit", "4"]).await;
    let hold = serde_json::json!({"annotations": {sim::OUTCOME: "hold"}});
    let deadline = job(
        "deadline",
        serde_json::json!({"name": "deadline", "jobType": "post_processing", "project": {"id": 1}, "activeDeadlineSeconds": 2, "template": hold}),
    );
    // The stall limit (4 s) is shorter than nothing else here: a held Pod makes no progress.
    let stalled = job(
        "stalled",
        serde_json::json!({"name": "stalled", "jobType": "regroup_events", "project": {"id": 1}, "template": hold}),
    );
    jobs.create(&PostParams::default(), &deadline)
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &stalled).await.unwrap();
    let d = wait_for(&jobs, "deadline", "final", LONG, is_final).await;
    assert_eq!(d.state(), JobState::Failure);
    assert!(
        has_condition(&d, "Failed", "DeadlineExceeded"),
        "{}",
        logs(&d)
    );
    let s = wait_for(&jobs, "stalled", "final", LONG, is_final).await;
    assert_eq!(s.state(), JobState::Failure);
    assert!(has_condition(&s, "Failed", "Stalled"), "{}", logs(&s));
    assert!(logs(&s).contains("made no progress for"), "{}", logs(&s));
    let pods: Api<Pod> = t.api();
    for j in [d, s] {
        for p in pods_of(&t, j.job_id().unwrap()).await {
            wait_gone(&pods, &p.name_any(), common::TIMEOUT).await;
        }
    }
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn a_finished_job_is_not_written_again() {
    let (_t, op, jobs) = setup("quiet", &[]).await;
    let j = job(
        "quiet",
        serde_json::json!({"name": "quiet", "jobType": "post_processing", "project": {"id": 1}}),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let done = wait_for(&jobs, "quiet", "final", LONG, is_final).await;
    assert_eq!(done.state(), JobState::Success);
    let writes = op.metric("antenna_api_requests_total").await;
    let reconciles = op.metric("antenna_reconciles_total").await;
    // Poke it: a label change triggers a reconcile that must find nothing to write.
    jobs.patch(
        "quiet",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"poke": "1"}}})),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + LONG;
    while op.metric("antenna_reconciles_total").await <= reconciles {
        assert!(
            std::time::Instant::now() < deadline,
            "no reconcile after the change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        op.metric("antenna_api_requests_total").await,
        writes,
        "a write without a change"
    );
    let after = jobs.get("quiet").await.unwrap();
    assert_eq!(after.status, done.status);
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn ids_stay_unique_when_the_counter_configmap_is_lost() {
    let (t, mut op, jobs) = setup("ids-lost", &[]).await;
    for name in ["a", "b", "c"] {
        let j = job(
            name,
            serde_json::json!({"name": name, "jobType": "post_processing", "project": {"id": 1}, "start": false}),
        );
        jobs.create(&PostParams::default(), &j).await.unwrap();
    }
    let mut ids = BTreeSet::new();
    for name in ["a", "b", "c"] {
        let j = wait_for(&jobs, name, "an id", LONG, |j: Option<&CaptureJob>| {
            j.is_some_and(|j| j.status.as_ref().is_some_and(|s| s.id.is_some()))
        })
        .await;
        ids.insert(j.job_id().unwrap());
    }
    // Lose the counter, restart: new jobs must not get the ids in use.
    op.kill();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = t.api();
    cms.delete("antenna-operator-ids", &Default::default())
        .await
        .unwrap();
    let _op2 = Operator::start("controller", &t.ns, &[]).await;
    for name in ["d", "e", "f", "g"] {
        let j = job(
            name,
            serde_json::json!({"name": name, "jobType": "post_processing", "project": {"id": 1}, "start": false}),
        );
        jobs.create(&PostParams::default(), &j).await.unwrap();
    }
    for name in ["d", "e", "f", "g"] {
        let j = wait_for(&jobs, name, "an id", LONG, |j: Option<&CaptureJob>| {
            j.is_some_and(|j| j.status.as_ref().is_some_and(|s| s.id.is_some()))
        })
        .await;
        let id = j.job_id().unwrap();
        assert_eq!(
            j.labels()["antenna.insectai.org/id"],
            id.to_string(),
            "label and status agree"
        );
        assert!(ids.insert(id), "id {id} handed out twice: {ids:?}");
    }
}

#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn a_running_pod_deleted_by_someone_is_retried_at_once() {
    let (t, _op, jobs) = setup("pod-deleted", &[]).await;
    let j = job(
        "victim",
        serde_json::json!({"name": "victim", "jobType": "post_processing", "project": {"id": 1},
            "template": {"annotations": {sim::AFTER: "3s"}}}),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let j = wait_for(
        &jobs,
        "victim",
        "STARTED",
        LONG,
        in_state(JobState::Started),
    )
    .await;
    let id = j.job_id().unwrap();
    let pods: Api<Pod> = t.api();
    let first = format!("cj{id}-a1-post-processing-s-t1");
    pods.delete(&first, &Default::default()).await.unwrap();
    // The retry comes within seconds, not after the 60 s grace for Pods never seen.
    let done = wait_for(&jobs, "victim", "final", Duration::from_secs(30), is_final).await;
    assert_eq!(done.state(), JobState::Success, "{}", logs(&done));
    assert!(
        logs(&done).contains("deleted before it finished"),
        "{}",
        logs(&done)
    );
    let second = format!("cj{id}-a1-post-processing-s-t2");
    assert!(pods.get_opt(&second).await.unwrap().is_some());
}

/// Found by a new user: jobs queued in the same second started one per periodic re-check
/// (30 s) because the queue was woken in another order than admission's.
#[tokio::test]
#[ignore = "cluster: run with make test"]
async fn a_queue_of_jobs_drains_as_slots_free() {
    let (_t, _op, jobs) = setup("queue-drain", &["--max-running-jobs", "1"]).await;
    let names: Vec<String> = (0..6).map(|i| format!("q{i}")).collect();
    for n in &names {
        let j = job(
            n,
            serde_json::json!({"name": n, "jobType": "regroup_events", "project": {"id": 1}}),
        );
        jobs.create(&PostParams::default(), &j).await.unwrap();
    }
    // Six one-second jobs one after the other: far less than the 30 s a single periodic
    // re-check would cost between two of them.
    let started = std::time::Instant::now();
    for n in &names {
        let left = Duration::from_secs(45).saturating_sub(started.elapsed());
        let j = wait_for(
            &jobs,
            n,
            "final",
            left.max(Duration::from_secs(1)),
            is_final,
        )
        .await;
        assert_eq!(j.state(), JobState::Success);
    }
}
