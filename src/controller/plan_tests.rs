//! Unit tests of the pure plan: the state machine, driven by a tiny simulated cluster.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::plan::*;
use super::pods::{PodObs, PodPhase, PodRequest};
use crate::crd::{CaptureJob, CaptureJobSpec, JobState, UnitPhase};

fn job(spec: serde_json::Value) -> CaptureJob {
    let spec: CaptureJobSpec = serde_json::from_value(spec).unwrap();
    let mut j = CaptureJob::new("j", spec);
    j.metadata.namespace = Some("ns".into());
    j.metadata.uid = Some("uid-1".into());
    j.metadata.generation = Some(1);
    j
}

fn t0() -> Timestamp {
    "2026-12-03T12:00:00Z".parse().unwrap()
}

/// A job, its Pods, and a clock; `step` plans and applies like the reconciler would.
struct Sim {
    job: CaptureJob,
    pods: BTreeMap<String, PodObs>,
    now: Timestamp,
    d: Defaults,
    admission: Admission,
    created: Vec<PodRequest>,
    max_live: usize,
    writes: usize,
    last: Plan,
}

impl Sim {
    fn new(spec: serde_json::Value) -> Sim {
        Sim {
            job: job(spec),
            pods: BTreeMap::new(),
            now: t0(),
            d: Defaults {
                backoff_base: 1,
                ..Defaults::default()
            },
            admission: Admission::Admitted,
            created: vec![],
            max_live: 0,
            writes: 0,
            last: Plan::default(),
        }
    }
    fn obs(&self) -> Vec<PodObs> {
        self.pods.values().cloned().collect()
    }
    fn step(&mut self) -> &Plan {
        let p = plan(
            &self.job,
            &self.obs(),
            Some(630),
            self.admission,
            &self.d,
            self.now,
        );
        for name in &p.delete {
            self.pods.remove(name);
        }
        for r in &p.create {
            let name = format!("{}-{}-{}-t{}", r.attempt, r.stage, r.unit, r.try_no);
            assert!(
                !self.pods.contains_key(&name),
                "a second Pod for the same try: {name}"
            );
            self.pods.insert(
                name.clone(),
                PodObs {
                    name,
                    attempt: r.attempt,
                    stage: r.stage.clone(),
                    unit: r.unit.clone(),
                    try_no: r.try_no,
                    phase: PodPhase::Pending,
                    created: Some(self.now),
                    deleting: false,
                    exit_code: None,
                    message: None,
                    waiting: None,
                    unschedulable: false,
                },
            );
            self.created.push(r.clone());
        }
        let live = self
            .pods
            .values()
            .filter(|p| matches!(p.phase, PodPhase::Pending | PodPhase::Running))
            .count();
        self.max_live = self.max_live.max(live);
        if self.job.status.as_ref() != Some(&p.status) {
            self.writes += 1;
            self.job.status = Some(p.status.clone());
        }
        self.last = p;
        &self.last
    }
    fn tick(&mut self, secs: i64) {
        self.now += SignedDuration::from_secs(secs);
    }
    fn set(&mut self, phase: PodPhase, exit: Option<i32>, msg: Option<&str>) {
        for p in self.pods.values_mut() {
            if matches!(p.phase, PodPhase::Pending | PodPhase::Running) {
                p.phase = phase;
                p.exit_code = exit;
                p.message = msg.map(str::to_string);
            }
        }
    }
    fn state(&self) -> JobState {
        self.job.state()
    }
    fn stage(&self, key: &str) -> crate::crd::Stage {
        self.job
            .status
            .as_ref()
            .unwrap()
            .progress
            .stages
            .iter()
            .find(|s| s.key == key)
            .unwrap()
            .clone()
    }
    fn param(&self, stage: &str, key: &str) -> serde_json::Value {
        self.stage(stage)
            .params
            .iter()
            .find(|p| p.key == key)
            .unwrap()
            .value
            .clone()
    }
    fn logs(&self) -> String {
        self.job.status.as_ref().unwrap().logs.stdout.join("\n")
    }
    fn has_condition(&self, type_: &str, reason: &str) -> bool {
        self.job
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.reason == reason)
    }
    /// Runs every live Pod to success, step after step, until the job is final.
    fn run_to_end(&mut self, progress: &mut Vec<f64>) {
        for _ in 0..200 {
            self.step();
            progress.push(self.job.status.as_ref().unwrap().progress.summary.progress);
            if self.state().is_final() {
                return;
            }
            self.set(PodPhase::Running, None, None);
            self.step();
            progress.push(self.job.status.as_ref().unwrap().progress.summary.progress);
            self.tick(1);
            self.set(PodPhase::Succeeded, Some(0), None);
        }
        panic!("did not finish: {:?}", self.job.status);
    }
}

fn sync_spec() -> serde_json::Value {
    serde_json::json!({
        "name": "Sync captures for deployment 118", "jobType": "data_storage_sync",
        "project": {"id": 45, "name": "AMBER - Costa Rica"},
        "deployment": {"id": 118, "name": "Costa Rica - Dry Forest"}, "limit": 100, "shuffle": true
    })
}

fn ml_spec() -> serde_json::Value {
    serde_json::json!({
        "name": "ML run", "jobType": "ml", "project": {"id": 1},
        "pipeline": {"id": 3, "name": "Moths 2024", "slug": "moths-2024"},
        "limit": 100, "batchSize": 25, "parallelism": 2
    })
}

#[test]
fn seed_sync_job_runs_its_two_stages_to_success() {
    let mut s = Sim::new(sync_spec());
    let mut prog = vec![];
    s.run_to_end(&mut prog);
    assert_eq!(s.state(), JobState::Success);
    let st = s.job.status.clone().unwrap();
    let keys: Vec<_> = st.progress.stages.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["data_storage_sync", "regroup_sessions"]);
    assert!(st
        .progress
        .stages
        .iter()
        .all(|s| s.status == JobState::Success && s.progress == 1.0));
    assert_eq!(st.progress.summary.status, JobState::Success);
    assert_eq!(st.progress.summary.progress, 1.0);
    assert_eq!(s.param("data_storage_sync", "total_files"), 100);
    let units: Vec<_> = s
        .created
        .iter()
        .map(|r| (r.stage.as_str(), r.unit.as_str(), r.count))
        .collect();
    assert_eq!(
        units,
        [
            ("data_storage_sync", "d", 0),
            ("data_storage_sync", "0", 25),
            ("data_storage_sync", "1", 25),
            ("data_storage_sync", "2", 25),
            ("data_storage_sync", "3", 25),
            ("regroup_sessions", "s", 100)
        ]
    );
    assert_eq!(s.param("data_storage_sync", "failed"), 0);
    assert_eq!(s.stage("regroup_sessions").params.len(), 7);
    assert!(st.started_at.is_some() && st.finished_at.is_some());
    assert_eq!(st.id, Some(630));
    assert!(
        prog.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {prog:?}"
    );
}

#[test]
fn ml_job_runs_four_batches_two_at_a_time() {
    let mut s = Sim::new(ml_spec());
    let mut prog = vec![];
    s.run_to_end(&mut prog);
    assert_eq!(s.state(), JobState::Success, "{}", s.logs());
    let batches: Vec<_> = s.created.iter().filter(|r| r.stage == "process").collect();
    assert_eq!(batches.len(), 4);
    assert!(batches.iter().all(|r| r.count == 25));
    assert!(s.max_live <= 2, "{} Pods at once", s.max_live);
    assert_eq!(s.param("process", "processed"), 100);
    assert_eq!(s.param("process", "remaining"), 0);
    assert_eq!(s.param("collect", "total_images"), 100);
    assert_eq!(s.param("results", "captures"), 100);
    assert!(
        prog.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {prog:?}"
    );
}

#[test]
fn discovery_total_and_worker_counts_are_folded() {
    let mut s = Sim::new(ml_spec());
    s.step();
    s.set(PodPhase::Succeeded, Some(0), Some(r#"{"total": 50}"#));
    s.step();
    assert_eq!(s.param("collect", "total_images"), 50);
    assert_eq!(s.created.iter().filter(|r| r.stage == "process").count(), 2);
    s.set(PodPhase::Running, None, None);
    s.step();
    assert_eq!(s.param("process", "processed"), 0);
    assert_eq!(s.param("process", "remaining"), 50);
    s.set(
        PodPhase::Succeeded,
        Some(0),
        Some(r#"{"processed": 20, "failed": 5, "detections": 7}"#),
    );
    s.step();
    assert_eq!(s.state(), JobState::Success, "{}", s.logs());
    assert_eq!(s.param("process", "processed"), 40);
    assert_eq!(s.param("process", "failed"), 10);
    assert_eq!(s.param("process", "remaining"), 0);
    assert_eq!(s.param("results", "detections"), 14);
}

#[test]
fn start_false_stays_created_until_started() {
    let mut spec = sync_spec();
    spec["start"] = false.into();
    let mut s = Sim::new(spec);
    s.step();
    assert_eq!(s.state(), JobState::Created);
    assert!(s.created.is_empty());
    assert_eq!(s.job.status.as_ref().unwrap().progress.stages.len(), 2);
    s.job.spec.start = true;
    s.step();
    assert_eq!(s.state(), JobState::Pending);
    assert_eq!(s.created.len(), 1);
}

#[test]
fn planning_twice_without_news_writes_nothing() {
    let mut s = Sim::new(ml_spec());
    s.step();
    s.set(PodPhase::Running, None, None);
    s.step();
    let writes = s.writes;
    s.step();
    s.step();
    assert_eq!(s.writes, writes, "a status write without a change");
    assert!(s.last.create.is_empty() && s.last.delete.is_empty() && s.last.events.is_empty());
}

#[test]
fn cancel_waits_for_pods_then_revokes_and_sticks() {
    let mut s = Sim::new(ml_spec());
    s.step();
    s.set(PodPhase::Running, None, None);
    s.step();
    assert_eq!(s.state(), JobState::Started);
    s.job.spec.cancel = true;
    // The Pod is still terminating in the cache: CANCELING.
    let pods_before = s.obs();
    let p = plan(
        &s.job,
        &pods_before,
        Some(630),
        Admission::Admitted,
        &s.d,
        s.now,
    );
    assert_eq!(p.status.state, JobState::Canceling);
    assert_eq!(p.delete.len(), 1);
    s.job.status = Some(p.status);
    let mut terminating = pods_before.clone();
    terminating[0].deleting = true;
    let p = plan(
        &s.job,
        &terminating,
        Some(630),
        Admission::Admitted,
        &s.d,
        s.now,
    );
    assert_eq!(p.status.state, JobState::Canceling);
    assert!(
        p.delete.is_empty(),
        "a Pod already deleting is not deleted again"
    );
    s.job.status = Some(p.status);
    // Gone: REVOKED.
    s.pods.clear();
    s.step();
    assert_eq!(s.state(), JobState::Revoked);
    assert!(s.has_condition(cond::CANCELED, "Canceled"));
    // A late result of the old Pod never moves it.
    let mut late = pods_before[0].clone();
    late.phase = PodPhase::Succeeded;
    late.exit_code = Some(0);
    s.pods.insert(late.name.clone(), late);
    s.job.spec.cancel = false;
    s.step();
    assert_eq!(s.state(), JobState::Revoked);
}

#[test]
fn cancel_of_a_created_job_revokes_at_once() {
    let mut spec = ml_spec();
    spec["start"] = false.into();
    spec["cancel"] = true.into();
    let mut s = Sim::new(spec);
    s.step();
    assert_eq!(s.state(), JobState::Revoked);
    assert!(s.created.is_empty());
}

#[test]
fn every_final_state_is_sticky_against_late_and_duplicate_pod_events() {
    for outcome in [JobState::Success, JobState::Failure, JobState::Revoked] {
        let mut s = Sim::new(
            serde_json::json!({"name": "p", "jobType": "post_processing", "project": {"id": 1}, "retries": 0}),
        );
        s.step();
        s.step();
        match outcome {
            JobState::Success => s.set(PodPhase::Succeeded, Some(0), None),
            JobState::Failure => s.set(PodPhase::Failed, Some(1), None),
            _ => {
                s.job.spec.cancel = true;
                s.pods.clear();
            }
        }
        s.step();
        assert_eq!(s.state(), outcome);
        let frozen = s.job.status.clone();
        // Late, duplicate, contradicting Pod events.
        for (phase, code) in [
            (PodPhase::Running, None),
            (PodPhase::Succeeded, Some(0)),
            (PodPhase::Failed, Some(3)),
        ] {
            s.pods.insert(
                "late".into(),
                PodObs {
                    name: "late".into(),
                    attempt: 1,
                    stage: "post_processing".into(),
                    unit: "s".into(),
                    try_no: 1,
                    phase,
                    created: Some(s.now),
                    deleting: false,
                    exit_code: code,
                    message: Some("{\"x\": 1}".into()),
                    waiting: None,
                    unschedulable: false,
                },
            );
            s.step();
            assert_eq!(s.state(), outcome);
            assert_eq!(s.job.status, frozen, "a final status moved");
        }
    }
}

#[test]
fn failed_batch_is_retried_with_backoff_then_exhausts() {
    let mut spec = ml_spec();
    spec["retries"] = 1.into();
    let mut s = Sim::new(spec);
    s.step(); // discovery
    s.set(PodPhase::Succeeded, Some(0), None);
    s.step(); // 2 batches
    s.set(PodPhase::Failed, Some(3), Some("boom"));
    s.step();
    assert_eq!(s.state(), JobState::Retry);
    assert!(
        s.logs()
            .contains("failed (exit code 3): boom; retry 1 of 1"),
        "{}",
        s.logs()
    );
    let before = s.created.len();
    s.step();
    assert_eq!(s.created.len(), before, "retried before the backoff");
    s.tick(2);
    s.step();
    let retries: Vec<_> = s.created[before..].iter().map(|r| r.try_no).collect();
    assert_eq!(retries, [2, 2]);
    assert_eq!(s.state(), JobState::Started);
    s.set(PodPhase::Failed, Some(3), Some("boom again"));
    s.step();
    assert_eq!(s.state(), JobState::Failure);
    assert!(s.has_condition(cond::FAILED, "BatchRetriesExhausted"));
    assert!(s.job.status.as_ref().unwrap().logs.stderr[0].contains("no tries left"));
}

#[test]
fn malformed_result_fails_the_batch_with_a_clear_line() {
    let mut spec = ml_spec();
    spec["retries"] = 0.into();
    let mut s = Sim::new(spec);
    s.step();
    s.set(PodPhase::Succeeded, Some(0), Some("this is not json"));
    s.step();
    assert_eq!(s.state(), JobState::Failure);
    assert!(
        s.logs().contains("malformed result from Pod"),
        "{}",
        s.logs()
    );
    assert!(s.logs().contains("not JSON"), "{}", s.logs());
}

#[test]
fn results_must_be_objects_of_counts() {
    assert!(parse_result(None).unwrap().0.is_empty());
    assert_eq!(
        parse_result(Some(r#"{"processed": 3, "file_url": "x"}"#))
            .unwrap()
            .0["processed"],
        3
    );
    assert!(parse_result(Some("[1,2]")).unwrap_err().contains("object"));
    assert!(parse_result(Some(r#"{"processed": -1}"#))
        .unwrap_err()
        .contains("negative"));
    assert!(parse_result(Some(r#"{"processed": {"a": 1}}"#)).is_err());
}

#[test]
fn unschedulable_pod_fails_the_job_after_the_pending_timeout() {
    let mut spec = sync_spec();
    spec["pendingTimeoutSeconds"] = 30.into();
    let mut s = Sim::new(spec);
    s.step();
    for p in s.pods.values_mut() {
        p.unschedulable = true;
        p.waiting = Some(
            "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector.".into(),
        );
    }
    s.step();
    assert_eq!(s.state(), JobState::Pending);
    assert!(s.has_condition(cond::SCHEDULED, "Unschedulable"));
    assert_eq!(
        s.last.requeue_after,
        Some(std::time::Duration::from_secs(30))
    );
    s.tick(31);
    s.step();
    assert_eq!(s.state(), JobState::Failure);
    assert!(s.has_condition(cond::FAILED, "PendingTimeout"));
    assert!(
        s.logs()
            .contains("pending for 31 seconds: 0/4 nodes are available"),
        "{}",
        s.logs()
    );
    assert!(s.pods.is_empty(), "its Pods are gone");
}

#[test]
fn a_restarted_operator_adopts_the_pod_it_created_but_did_not_record() {
    let mut s = Sim::new(ml_spec());
    s.step();
    let recorded = s.job.status.clone();
    s.set(PodPhase::Running, None, None);
    // The status write of the first step was lost: the status knows no try.
    let mut st = recorded.unwrap();
    for u in &mut st.units {
        u.tries = 0;
        u.phase = UnitPhase::Pending;
    }
    s.job.status = Some(st);
    s.step(); // would panic in Sim::step on a second Pod for try 1
    assert_eq!(s.job.status.as_ref().unwrap().units[0].tries, 1);
    assert_eq!(s.state(), JobState::Started);
}

#[test]
fn raising_attempt_starts_fresh_and_deletes_old_pods() {
    let mut s = Sim::new(ml_spec());
    s.step();
    s.set(PodPhase::Failed, Some(1), None);
    s.job.spec.retries = Some(0);
    s.step();
    assert_eq!(s.state(), JobState::Failure);
    s.job.spec.attempt = 2;
    s.step();
    let st = s.job.status.clone().unwrap();
    assert_eq!(st.attempt, 2);
    assert_eq!(st.state, JobState::Pending);
    assert_eq!(st.progress.summary.progress, 0.0);
    assert!(st.finished_at.is_none() && st.conditions.iter().all(|c| c.type_ != cond::FAILED));
    assert!(
        s.pods.values().all(|p| p.attempt == 2),
        "old attempt's Pods deleted"
    );
    assert!(st.logs.stdout.iter().any(|l| l.contains("Attempt 2")));
    assert_ne!(st.seed, Some(seed_for("uid-1", 1)));
}

#[test]
fn queued_job_shows_its_place_and_creates_nothing() {
    let mut s = Sim::new(ml_spec());
    s.admission = Admission::Queued {
        position: 8,
        queued: 10,
        limit: 2,
    };
    s.step();
    assert_eq!(s.state(), JobState::Pending);
    assert!(s.created.is_empty());
    let c = s
        .job
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == cond::QUEUED)
        .unwrap()
        .clone();
    assert!(c.message.contains("place 8 of 10"), "{}", c.message);
    // Small moves in the queue cost no write; halving does.
    let w = s.writes;
    s.admission = Admission::Queued {
        position: 7,
        queued: 9,
        limit: 2,
    };
    s.step();
    assert_eq!(s.writes, w);
    s.admission = Admission::Queued {
        position: 4,
        queued: 6,
        limit: 2,
    };
    s.step();
    assert_eq!(s.writes, w + 1);
    // No pending timeout for the queue wait.
    s.tick(100_000);
    s.step();
    assert_eq!(s.state(), JobState::Pending);
    s.admission = Admission::Admitted;
    s.step();
    assert_eq!(s.created.len(), 1);
}

#[test]
fn stall_and_deadline_fail_a_started_job() {
    let mut s = Sim::new(ml_spec());
    s.d.stall_limit = 100;
    s.step();
    s.set(PodPhase::Running, None, None);
    s.step();
    s.tick(101);
    s.step();
    assert_eq!(s.state(), JobState::Failure);
    assert!(s.has_condition(cond::FAILED, "Stalled"));

    let mut spec = ml_spec();
    spec["activeDeadlineSeconds"] = 50.into();
    let mut s = Sim::new(spec);
    s.step();
    s.set(PodPhase::Running, None, None);
    s.step();
    s.tick(51);
    s.step();
    assert_eq!(s.state(), JobState::Failure);
    assert!(s.has_condition(cond::FAILED, "DeadlineExceeded"));
    assert!(s.pods.is_empty());
}

#[test]
fn invalid_spec_is_reported_on_the_job_once() {
    let mut spec = ml_spec();
    spec["name"] = "   ".into();
    let mut s = Sim::new(spec);
    s.step();
    assert!(s.created.is_empty());
    assert!(s.has_condition(cond::VALID, "InvalidSpec"));
    assert!(s.logs().contains("spec.name: must not be blank"));
    let w = s.writes;
    s.step();
    assert_eq!(s.writes, w);
    s.job.spec.name = "fixed".into();
    s.step();
    assert_eq!(s.created.len(), 1);
}

#[test]
fn delay_stage_runs_first_and_logs_are_bounded() {
    let mut s = Sim::new(
        serde_json::json!({"name": "d", "jobType": "post_processing", "project": {"id": 1}, "delay": 5}),
    );
    let mut prog = vec![];
    s.run_to_end(&mut prog);
    assert_eq!(s.created[0].stage, "delay");
    assert_eq!(s.param("delay", "delay"), 5);
    let st = s.job.status.clone().unwrap();
    assert!(st
        .logs
        .stdout
        .iter()
        .all(|l| l.len() <= MAX_LINE_LEN && l.starts_with("[2026-12-03 12:0")));
    assert!(st.logs.stdout.len() <= MAX_LOG_LINES);
}

#[test]
fn ttl_deletes_the_finished_job() {
    let mut spec = sync_spec();
    spec["ttlSecondsAfterFinished"] = 60.into();
    let mut s = Sim::new(spec);
    let mut prog = vec![];
    s.run_to_end(&mut prog);
    s.step();
    assert!(!s.last.delete_job);
    assert!(s.last.requeue_after.is_some());
    s.tick(61);
    s.step();
    assert!(s.last.delete_job);
}

#[test]
fn human_durations_read_like_the_old_logs() {
    assert_eq!(human(SignedDuration::from_secs(600)), "10 minutes");
    assert_eq!(human(SignedDuration::from_secs(3661)), "1 hour, 1 minute");
    assert_eq!(human(SignedDuration::from_secs(0)), "0 seconds");
}

#[test]
fn a_refused_pod_fails_the_job_with_the_servers_message() {
    let s = Sim::new(ml_spec());
    let msg = "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\"";
    let p = plan_with_refusal(
        &s.job,
        &[],
        Some(630),
        Admission::Admitted,
        &s.d,
        s.now,
        Some(msg),
    );
    assert_eq!(p.status.state, JobState::Failure);
    assert!(p
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == cond::FAILED && c.reason == "PodCreateRefused"));
    assert!(p.status.logs.stderr[0].contains("violates PodSecurity"));
    assert!(p.create.is_empty());
}

// Found by a new user trying to break the product: each of these once failed.

#[test]
fn huge_totals_and_limits_never_overflow() {
    // A limit far beyond the schema (written by bypassing it) and batchSize 1.
    let mut spec = ml_spec();
    spec["limit"] = serde_json::json!(i64::MAX);
    spec["batchSize"] = 1.into();
    let mut s = Sim::new(spec);
    s.step();
    s.set(PodPhase::Succeeded, Some(0), None);
    s.step();
    let batches = s.created.iter().filter(|r| r.stage == "process").count();
    assert!(batches <= 1000, "{batches}");
    assert_eq!(s.job.status.as_ref().unwrap().total, Some(MAX_TOTAL));
    // A discovery reporting an absurd total: refused as a result.
    let mut s = Sim::new(sync_spec());
    s.job.spec.retries = Some(0);
    s.step();
    s.set(
        PodPhase::Succeeded,
        Some(0),
        Some(&format!("{{\"total\": {}}}", i64::MAX)),
    );
    s.step();
    assert_eq!(s.state(), JobState::Failure);
    assert!(s.logs().contains("is larger than"), "{}", s.logs());
}

#[test]
fn counts_must_be_whole_json_numbers() {
    assert!(parse_result(Some(r#"{"processed": 1.5}"#))
        .unwrap_err()
        .contains("whole count"));
    assert!(parse_result(Some(r#"{"total": "10"}"#))
        .unwrap_err()
        .contains("a count must be a JSON number"));
    assert_eq!(
        parse_result(Some(r#"{"processed": 2.0}"#)).unwrap().0["processed"],
        2
    );
    assert_eq!(
        parse_result(Some(r#"{"file_url": "s3://x"}"#)).unwrap().1["file_url"],
        "s3://x"
    );
}

#[test]
fn names_cannot_forge_log_lines() {
    let mut spec = ml_spec();
    spec["name"] = "evil\n[2026-01-01 00:00:00] ERROR forged".into();
    let mut s = Sim::new(spec);
    s.step();
    let st = s.job.status.clone().unwrap();
    assert!(st.logs.stdout.iter().all(|l| !l.contains('\n')));
    assert!(st
        .logs
        .stdout
        .iter()
        .any(|l| l.contains("evil\\n[2026-01-01")));
    assert_eq!(one_line("a\u{0}b\tc"), "a\\u{0}b\\tc");
}

#[test]
fn work_shape_changes_wait_for_the_next_attempt() {
    let mut s = Sim::new(ml_spec());
    s.step();
    s.set(PodPhase::Succeeded, Some(0), None);
    s.step();
    // Mid-run: another type, another limit.
    s.job.spec.job_type = crate::crd::JobType::PostProcessing;
    s.job.spec.limit = Some(5);
    s.step();
    assert!(s.has_condition(cond::SPEC_APPLIED, "NextAttempt"));
    assert!(s
        .logs()
        .contains("changes to jobType, limit apply from the next attempt"));
    let w = s.writes;
    s.step();
    assert_eq!(s.writes, w, "the notice is written once");
    let mut prog = vec![];
    s.run_to_end(&mut prog);
    assert_eq!(s.state(), JobState::Success);
    let keys: Vec<_> = s
        .job
        .status
        .as_ref()
        .unwrap()
        .progress
        .stages
        .iter()
        .map(|s| s.key.clone())
        .collect();
    assert_eq!(keys, ["collect", "process", "results"]);
    assert_eq!(s.param("process", "processed"), 100);
    // The next attempt takes the new shape.
    s.job.spec.attempt = 2;
    s.run_to_end(&mut prog);
    let keys: Vec<_> = s
        .job
        .status
        .as_ref()
        .unwrap()
        .progress
        .stages
        .iter()
        .map(|s| s.key.clone())
        .collect();
    assert_eq!(keys, ["post_processing"]);
    assert!(!s.has_condition(cond::SPEC_APPLIED, "NextAttempt"));
}

#[test]
fn cancel_keeps_finished_pods_for_their_logs() {
    let mut s = Sim::new(ml_spec());
    s.step();
    s.set(PodPhase::Succeeded, Some(0), None); // the discovery Pod
    s.step();
    s.set(PodPhase::Running, None, None);
    s.step();
    s.job.spec.cancel = true;
    let p = plan(
        &s.job,
        &s.obs(),
        Some(630),
        Admission::Admitted,
        &s.d,
        s.now,
    );
    assert_eq!(
        p.delete.len(),
        2,
        "only the two running batch Pods go: {:?}",
        p.delete
    );
    assert!(p.delete.iter().all(|n| n.contains("process")));
    s.step();
    s.step();
    assert_eq!(s.state(), JobState::Revoked);
    assert!(
        s.pods.values().any(|p| p.stage == "collect"),
        "the finished Pod stays"
    );
}

#[test]
fn a_pod_deleted_before_it_ended_is_a_failed_try_at_once() {
    let mut s = Sim::new(ml_spec());
    s.step();
    s.set(PodPhase::Running, None, None);
    s.step();
    // The reconciler reports a deleted Pod in its last state as Failed and deleting.
    for p in s.pods.values_mut() {
        p.phase = PodPhase::Failed;
        p.deleting = true;
        p.message = Some("the Pod was deleted before it finished".into());
    }
    s.step();
    assert_eq!(s.state(), JobState::Retry);
    assert!(
        s.logs().contains("deleted before it finished"),
        "{}",
        s.logs()
    );
}
