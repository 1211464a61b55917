//! The pure heart of the controller: from a job, its observed Pods and the time, the next
//! status and the Pods to create or delete. No client, no I/O, no clock.
//!
//! The job's states and their transitions live here and only here. SUCCESS, FAILURE and
//! REVOKED are final for an attempt: once a status says so, `plan` only cleans up (stray
//! Pods, TTL) until `spec.attempt` is raised.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration as Duration, Timestamp};

use super::pods::{Mode, PodObs, PodPhase, PodRequest};
use super::stages::{initial_stages, stages_for, StageDef, Work};
use crate::crd::{CaptureJob, CaptureJobStatus, JobState, UnitPhase, WorkUnit};

/// Operator-wide defaults for what a spec leaves unset.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Captures per batch.
    pub batch_size: i64,
    /// Batch Pods running at once per job.
    pub parallelism: i64,
    /// Extra tries per batch.
    pub retries: i32,
    /// Seconds a Pod may stay Pending.
    pub pending_timeout: i64,
    /// Seconds a started job may go without progress.
    pub stall_limit: i64,
    /// Seconds a job may wait behind the running-jobs limit (None = for ever).
    pub queue_timeout: Option<i64>,
    /// Seconds after finishing before a job is deleted (None = kept).
    pub ttl_after_finished: Option<i64>,
    /// Most batches per stage; batchSize is raised when a stage would have more.
    pub max_batches: i64,
    /// Base of the retry backoff, seconds (doubles per try, capped at 5 minutes).
    pub backoff_base: i64,
    /// Seconds after requesting a Pod before its absence from the cache means it is lost.
    pub lost_pod_grace: i64,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            batch_size: 25,
            parallelism: 4,
            retries: 2,
            pending_timeout: 600,
            stall_limit: 1800,
            queue_timeout: None,
            ttl_after_finished: None,
            max_batches: 1000,
            backoff_base: 2,
            lost_pod_grace: 60,
        }
    }
}

/// Whether the job may run now, given the operator's limit of running jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It may create Pods.
    Admitted,
    /// It waits: `position` (1-based) among `queued` jobs, behind `running` jobs at the limit.
    Queued {
        position: usize,
        queued: usize,
        limit: usize,
    },
}

/// A Kubernetes Event to publish on the job.
#[derive(Clone, Debug, PartialEq)]
pub struct EventNote {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// Reason, CamelCase.
    pub reason: String,
    /// Human message.
    pub note: String,
}

/// What the controller should do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The next status (written only when it differs from the current one).
    pub status: CaptureJobStatus,
    /// Pods to create.
    pub create: Vec<PodRequest>,
    /// Pods to delete (by name).
    pub delete: Vec<String>,
    /// Events to publish.
    pub events: Vec<EventNote>,
    /// Look again after this long, even if nothing changes.
    pub requeue_after: Option<std::time::Duration>,
    /// The job's TTL has passed: delete it.
    pub delete_job: bool,
}

/// Most captures one attempt works on; larger totals (a limit, a discovery's report) are
/// capped here so that no arithmetic can overflow.
pub const MAX_TOTAL: i64 = 1_000_000_000;

/// Bound on log lines kept (stdout; stderr keeps a fifth of it).
pub const MAX_LOG_LINES: usize = 500;
/// Bound on the length of one log line.
pub const MAX_LINE_LEN: usize = 1000;
/// Bound on `progress.errors`.
pub const MAX_ERRORS: usize = 50;

/// Condition types the controller sets.
pub mod cond {
    /// False while spec changes wait for the next attempt.
    pub const SPEC_APPLIED: &str = "SpecApplied";
    /// The spec is valid (False with reason InvalidSpec otherwise).
    pub const VALID: &str = "Valid";
    /// Waiting behind the running-jobs limit.
    pub const QUEUED: &str = "Queued";
    /// The job's Pods got a node (False with reason Unschedulable otherwise).
    pub const SCHEDULED: &str = "PodsScheduled";
    /// The attempt succeeded.
    pub const COMPLETE: &str = "Complete";
    /// The attempt failed; the reason says why.
    pub const FAILED: &str = "Failed";
    /// The attempt was canceled.
    pub const CANCELED: &str = "Canceled";
}

struct Ctx<'a> {
    job: &'a CaptureJob,
    now: Timestamp,
    d: &'a Defaults,
    st: CaptureJobStatus,
    plan: Plan,
    wake: Option<Timestamp>,
}

impl Ctx<'_> {
    fn log(&mut self, level: &str, msg: &str) {
        let line: String = format!(
            "[{}] {level} {}",
            self.now.strftime("%Y-%m-%d %H:%M:%S"),
            one_line(msg)
        )
        .chars()
        .take(MAX_LINE_LEN)
        .collect();
        if level == "ERROR" {
            self.st.logs.stderr.insert(0, line.clone());
            self.st.logs.stderr.truncate(MAX_LOG_LINES / 5);
        }
        self.st.logs.stdout.insert(0, line);
        self.st.logs.stdout.truncate(MAX_LOG_LINES);
    }

    fn event(&mut self, warning: bool, reason: &str, note: impl Into<String>) {
        self.plan.events.push(EventNote {
            warning,
            reason: reason.into(),
            note: note.into(),
        });
    }

    fn set_condition(&mut self, type_: &str, status: bool, reason: &str, message: &str) {
        let status = if status { "True" } else { "False" };
        let generation = self.job.metadata.generation;
        let now = Time(self.now);
        match self.st.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status.into();
                c.reason = reason.into();
                c.message = message.into();
                c.observed_generation = generation;
            }
            None => self.st.conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: now,
                observed_generation: generation,
            }),
        }
    }

    fn has_condition(&self, type_: &str, status: &str) -> bool {
        self.st
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == status)
    }

    fn wake_at(&mut self, t: Timestamp) {
        self.wake = Some(match self.wake {
            Some(w) if w <= t => w,
            _ => t,
        });
    }

    fn set_state(&mut self, s: JobState) {
        self.st.state = s;
        self.st.progress.summary.status = s;
    }

    fn error(&mut self, msg: &str) {
        self.log("ERROR", msg);
        self.st
            .progress
            .errors
            .push(one_line(msg).chars().take(MAX_LINE_LEN).collect());
        let n = self.st.progress.errors.len();
        if n > MAX_ERRORS {
            self.st.progress.errors.drain(0..n - MAX_ERRORS);
        }
    }

    /// Ends the attempt FAILURE with `reason`, deleting its live Pods.
    fn fail(&mut self, reason: &str, msg: &str, pods: &[PodObs]) {
        self.error(msg);
        self.finish(JobState::Failure);
        self.set_condition(cond::FAILED, true, reason, msg);
        self.event(true, reason, msg);
        self.delete_live(pods);
    }

    fn finish(&mut self, s: JobState) {
        self.set_state(s);
        self.st.finished_at = Some(Time(self.now));
        for stage in &mut self.st.progress.stages {
            if !stage.status.is_final() && s != JobState::Success {
                // Stages that never ran keep CREATED; a stage caught mid-way takes the
                // job's final state so that no stage claims to be still running.
                if stage.status != JobState::Created {
                    stage.status = s;
                }
            }
        }
    }

    fn delete_live(&mut self, pods: &[PodObs]) {
        let attempt = self.st.attempt;
        for p in pods {
            let live = matches!(p.phase, PodPhase::Pending | PodPhase::Running);
            if p.attempt == attempt && live && !p.deleting && !self.plan.delete.contains(&p.name) {
                self.plan.delete.push(p.name.clone());
            }
        }
    }
}

/// A message made safe for one log line: control characters (newlines included, which
/// could forge lines) are shown escaped.
pub fn one_line(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for c in msg.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Validation the schema cannot express; each message names the field.
pub fn validate(job: &CaptureJob) -> Vec<String> {
    let mut errs = Vec::new();
    if job.spec.name.trim().is_empty() {
        errs.push("spec.name: must not be blank".to_string());
    }
    if let Some(tpl) = &job.spec.template {
        for (i, e) in tpl.env.iter().flatten().enumerate() {
            if e.name.starts_with("ANTENNA_") {
                errs.push(format!(
                    "spec.template.env[{i}].name: {} is set by the operator and cannot be overridden",
                    e.name
                ));
            }
        }
        if let Some(img) = &tpl.image {
            if img.trim().is_empty() || img.contains(char::is_whitespace) {
                errs.push(format!(
                    "spec.template.image: {img:?} is not an image reference"
                ));
            }
        }
    }
    errs
}

/// The seed of an attempt: a stable hash of the object's uid and the attempt.
pub fn seed_for(uid: &str, attempt: i64) -> i64 {
    // FNV-1a, 64 bit, kept positive so that it reads well as a JSON number.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in uid.bytes().chain(attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h >> 1) as i64
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n)
}

/// Human form of a duration, as in "10 minutes" or "1 hour, 5 minutes".
pub fn human(d: Duration) -> String {
    let s = d.as_secs().max(0);
    let parts = [
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut out = Vec::new();
    let mut rest = s;
    for (unit, name) in parts {
        let n = rest / unit;
        if n > 0 {
            out.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
            rest -= n * unit;
        }
        if out.len() == 2 {
            break;
        }
    }
    if out.is_empty() {
        "0 seconds".into()
    } else {
        out.join(", ")
    }
}

/// Plans the next step of `job`.
///
/// `pods` are the job's Pods as the cache shows them (any attempt), `id` the id to give a
/// job that has none yet (the reconciler allocates it), `admission` whether it may start.
pub fn plan(
    job: &CaptureJob,
    pods: &[PodObs],
    id: Option<i64>,
    admission: Admission,
    d: &Defaults,
    now: Timestamp,
) -> Plan {
    plan_with_refusal(job, pods, id, admission, d, now, None)
}

/// [`plan`], told that the API server refused to create one of the job's Pods (an
/// admission or validation error that the same spec will meet again): the attempt fails
/// with reason PodCreateRefused and the server's message.
pub fn plan_with_refusal(
    job: &CaptureJob,
    pods: &[PodObs],
    id: Option<i64>,
    admission: Admission,
    d: &Defaults,
    now: Timestamp,
    refusal: Option<&str>,
) -> Plan {
    // Within an attempt the work keeps the shape it started with.
    let given = job;
    let frozen;
    let job = match job.status.as_ref() {
        Some(st) if st.attempt == job.spec.attempt => match &st.shape {
            Some(shape) if !shape.changed_in(&job.spec).is_empty() => {
                let mut j = job.clone();
                j.spec.job_type = shape.job_type;
                j.spec.delay = shape.delay;
                j.spec.limit = shape.limit;
                j.spec.batch_size = shape.batch_size;
                frozen = j;
                &frozen
            }
            _ => job,
        },
        _ => job,
    };
    let mut cx = Ctx {
        job,
        now,
        d,
        st: job.status.clone().unwrap_or_default(),
        plan: Plan::default(),
        wake: None,
    };
    step(&mut cx, pods, id, admission, refusal);
    let changed = match &cx.st.shape {
        Some(shape) if cx.st.attempt == given.spec.attempt && !cx.st.state.is_final() => {
            shape.changed_in(&given.spec)
        }
        _ => vec![],
    };
    let pending_change = cx.has_condition(cond::SPEC_APPLIED, "False");
    if !changed.is_empty() {
        let msg = format!(
            "changes to {} apply from the next attempt",
            changed.join(", ")
        );
        let already = cx
            .st
            .conditions
            .iter()
            .any(|c| c.type_ == cond::SPEC_APPLIED && c.message == msg);
        if !already {
            cx.log(
                "WARNING",
                &format!("The running attempt keeps its work: {msg}"),
            );
            cx.set_condition(cond::SPEC_APPLIED, false, "NextAttempt", &msg);
        }
    } else if pending_change {
        cx.st.conditions.retain(|c| c.type_ != cond::SPEC_APPLIED);
    }
    let mut plan = cx.plan;
    cx.st.observed_generation = job.metadata.generation;
    cx.st.progress.summary.status = cx.st.state;
    plan.status = cx.st;
    plan.requeue_after = cx.wake.map(|w| {
        std::time::Duration::try_from(w.duration_since(now))
            .unwrap_or_default()
            .max(std::time::Duration::from_millis(500))
    });
    plan
}

fn step(
    cx: &mut Ctx,
    pods: &[PodObs],
    id: Option<i64>,
    admission: Admission,
    refusal: Option<&str>,
) {
    let spec = &cx.job.spec;
    if cx.st.id.is_none() {
        cx.st.id = id;
    }
    let Some(job_id) = cx.st.id else { return };

    // A fresh object, or a raised spec.attempt: a new attempt with reset progress.
    if cx.st.attempt == 0 || spec.attempt > cx.st.attempt {
        let first = cx.st.attempt == 0;
        let logs = std::mem::take(&mut cx.st.logs);
        cx.st = CaptureJobStatus {
            id: Some(job_id),
            attempt: spec.attempt,
            seed: Some(seed_for(
                cx.job.metadata.uid.as_deref().unwrap_or(""),
                spec.attempt,
            )),
            logs,
            ..Default::default()
        };
        cx.st.progress.stages = initial_stages(spec.job_type, spec.delay);
        cx.set_state(JobState::Created);
        if first {
            cx.log(
                "INFO",
                &format!(
                    "Job {job_id} created: {} ({})",
                    spec.name,
                    spec.job_type.display_name()
                ),
            );
        } else {
            cx.log(
                "INFO",
                &format!(
                    "Attempt {} of job {job_id} begins with reset progress",
                    spec.attempt
                ),
            );
            cx.event(false, "AttemptStarted", format!("attempt {}", spec.attempt));
        }
    }
    let attempt = cx.st.attempt;

    // Pods of other attempts never count; they go.
    for p in pods {
        if p.attempt != attempt && !p.deleting {
            cx.plan.delete.push(p.name.clone());
        }
    }
    let pods: Vec<PodObs> = pods
        .iter()
        .filter(|p| p.attempt == attempt)
        .cloned()
        .collect();

    if cx.st.state.is_final() {
        return finished(cx, &pods);
    }

    // Cancel.
    if spec.cancel {
        // A Pod requested moments ago may not be in the cache yet: wait for it.
        let grace = secs(cx.d.lost_pod_grace);
        let unseen = cx.st.units.iter().any(|u| {
            matches!(u.phase, UnitPhase::Pending | UnitPhase::Running)
                && u.tries > 0
                && !u.seen
                && u.requested_at
                    .as_ref()
                    .is_some_and(|t| cx.now < t.0 + grace)
                && !pods
                    .iter()
                    .any(|p| p.stage == u.stage && p.unit == u.unit && p.try_no == u.tries)
        });
        // Finished Pods stay (for their logs); the live ones go.
        let live: Vec<PodObs> = pods
            .iter()
            .filter(|p| matches!(p.phase, PodPhase::Pending | PodPhase::Running))
            .cloned()
            .collect();
        if cx.st.state == JobState::Created || (live.is_empty() && !unseen) {
            if cx.st.state != JobState::Canceling {
                cx.log("INFO", "Canceled before any Pod ran");
            } else {
                cx.log("INFO", "Canceled: all Pods are gone");
            }
            cx.finish(JobState::Revoked);
            cx.set_condition(cond::CANCELED, true, "Canceled", "the job was canceled");
            cx.event(false, "Canceled", "job canceled");
            return;
        }
        if cx.st.state != JobState::Canceling {
            cx.set_state(JobState::Canceling);
            cx.log(
                "WARNING",
                &format!("Cancel requested: deleting {} running Pod(s)", live.len()),
            );
            cx.set_condition(
                cond::CANCELED,
                false,
                "Canceling",
                "waiting for the job's Pods to be gone",
            );
        }
        for p in &live {
            if !p.deleting {
                cx.plan.delete.push(p.name.clone());
            }
        }
        cx.wake_at(cx.now + secs(10));
        return;
    }

    let errs = validate(cx.job);
    if !errs.is_empty() {
        let msg = errs.join("; ");
        let already = cx
            .st
            .conditions
            .iter()
            .any(|c| c.type_ == cond::VALID && c.status == "False" && c.message == msg);
        if !already {
            cx.error(&format!("Invalid spec: {msg}"));
            cx.set_condition(cond::VALID, false, "InvalidSpec", &msg);
            cx.event(true, "InvalidSpec", msg);
        }
        return;
    }
    if cx.has_condition(cond::VALID, "False") {
        cx.set_condition(cond::VALID, true, "Valid", "");
        cx.log("INFO", "Spec is valid again");
    }

    if cx.st.state == JobState::Created {
        if !spec.start {
            return;
        }
        cx.set_state(JobState::Pending);
        cx.st.scheduled_at = Some(Time(cx.now));
        cx.st.shape = Some(crate::crd::WorkShape::of(&cx.job.spec));
        cx.log("INFO", &format!("Job {job_id} queued"));
    }

    // The running-jobs limit: only jobs that never requested a Pod wait for a slot.
    let requested = cx.st.units.iter().any(|u| u.tries > 0) || !pods.is_empty();
    if !requested {
        if let Admission::Queued {
            position,
            queued,
            limit,
        } = admission
        {
            return queued_wait(cx, position, queued, limit);
        }
    }
    if cx.has_condition(cond::QUEUED, "True") {
        cx.set_condition(cond::QUEUED, false, "Admitted", "a slot is free");
        cx.log("INFO", "A slot is free: starting");
    }

    if let Some(msg) = refusal {
        let m = format!("The API server refused to create a Pod of job {job_id}: {msg}");
        cx.fail("PodCreateRefused", &m, &pods);
        return;
    }
    run_stages(cx, &pods);
    if cx.st.state.is_final() {
        return;
    }
    deadlines(cx, &pods);
}

fn queued_wait(cx: &mut Ctx, position: usize, queued: usize, limit: usize) {
    let msg = format!(
        "waiting for a free slot: place {position} of {queued} in the queue ({limit} jobs may run at once)"
    );
    // Refresh the place only when it halves, so a long queue costs O(log n) writes per job.
    let old_place = cx
        .st
        .conditions
        .iter()
        .find(|c| c.type_ == cond::QUEUED && c.status == "True")
        .and_then(|c| {
            c.message
                .split("place ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        });
    match old_place {
        None => {
            cx.log("INFO", &format!("Job is {msg}"));
            cx.event(false, "Queued", msg.clone());
            cx.set_condition(cond::QUEUED, true, "Queued", &msg);
        }
        Some(old) if position * 2 <= old => cx.set_condition(cond::QUEUED, true, "Queued", &msg),
        Some(_) => {}
    }
    if let (Some(qt), Some(since)) = (cx.d.queue_timeout, cx.st.scheduled_at.clone()) {
        let deadline = since.0 + secs(qt);
        if cx.now >= deadline {
            let m = format!(
                "queued for {} without a free slot (queue timeout)",
                human(cx.now.duration_since(since.0))
            );
            cx.fail("QueueTimeout", &m, &[]);
            return;
        }
        cx.wake_at(deadline);
    }
    cx.wake_at(cx.now + secs(30));
}

fn settings(cx: &Ctx) -> (i64, i64, i32, i64) {
    let s = &cx.job.spec;
    (
        s.batch_size
            .map(i64::from)
            .unwrap_or(cx.d.batch_size)
            .max(1),
        s.parallelism
            .map(i64::from)
            .unwrap_or(cx.d.parallelism)
            .max(1),
        s.retries.unwrap_or(cx.d.retries).max(0),
        s.pending_timeout_seconds
            .unwrap_or(cx.d.pending_timeout)
            .max(1),
    )
}

fn run_stages(cx: &mut Ctx, pods: &[PodObs]) {
    let spec = &cx.job.spec;
    let defs = stages_for(spec.job_type, spec.delay);
    // A status written by an older operator, or edited by hand: rebuild the stage list.
    let keys: Vec<&str> = cx
        .st
        .progress
        .stages
        .iter()
        .map(|s| s.key.as_str())
        .collect();
    if keys != defs.iter().map(|d| d.key).collect::<Vec<_>>() {
        cx.st.progress.stages = initial_stages(spec.job_type, spec.delay);
    }
    let (_, parallelism, _, _) = settings(cx);
    let mut running_slots = parallelism;
    for (i, def) in defs.iter().enumerate() {
        if cx.st.progress.stages[i].status == JobState::Success {
            continue;
        }
        let done = run_stage(cx, i, def, pods, &mut running_slots, true);
        fold_params(cx, i, def);
        if !done || cx.st.state.is_final() {
            break;
        }
        let stage = &mut cx.st.progress.stages[i];
        stage.status = JobState::Success;
        stage.progress = 1.0;
        cx.log("INFO", &format!("Stage {} ({}) done", def.name, def.key));
    }
    summarize(cx);
    if cx.st.state.is_final() {
        return;
    }
    if cx
        .st
        .progress
        .stages
        .iter()
        .all(|s| s.status == JobState::Success)
    {
        cx.finish(JobState::Success);
        let dur = cx
            .st
            .started_at
            .clone()
            .map(|t| human(cx.now.duration_since(t.0)))
            .unwrap_or_default();
        cx.log("INFO", &format!("Job finished: SUCCESS after {dur}"));
        cx.set_condition(cond::COMPLETE, true, "Succeeded", "every stage succeeded");
        cx.event(false, "Succeeded", "every stage succeeded");
    }
}

/// Advances one stage; true when all of its work is done.
fn run_stage(
    cx: &mut Ctx,
    i: usize,
    def: &StageDef,
    pods: &[PodObs],
    slots: &mut i64,
    again: bool,
) -> bool {
    if def.work == Work::Fold {
        return true;
    }
    let (batch_size, _, _, _) = settings(cx);
    // Make sure the stage's units exist.
    let has = |st: &CaptureJobStatus, unit: &str| {
        st.units
            .iter()
            .any(|u| u.stage == def.key && u.unit == unit)
    };
    match def.work {
        Work::Single if !has(&cx.st, "s") => {
            let size = cx
                .st
                .total
                .or(cx.job.spec.limit)
                .unwrap_or(0)
                .clamp(0, MAX_TOTAL);
            push_unit(cx, def.key, "s", 0, size);
        }
        Work::Discover | Work::Batched { discover: true } if !has(&cx.st, "d") => {
            push_unit(cx, def.key, "d", 0, 0);
        }
        _ => {}
    }
    if let Work::Batched { discover } = def.work {
        let discovered = !discover || unit_done(&cx.st, def.key, "d");
        let has_batches = cx
            .st
            .units
            .iter()
            .any(|u| u.stage == def.key && u.unit != "d");
        if discovered && !has_batches {
            let total = cx
                .st
                .total
                .unwrap_or_else(|| cx.job.spec.limit.unwrap_or(0))
                .clamp(0, MAX_TOTAL);
            cx.st.total = Some(total);
            let mut size = batch_size;
            let max_batches = cx.d.max_batches.max(1);
            if total > size.saturating_mul(max_batches) {
                size = (total + max_batches - 1) / max_batches;
                cx.log(
                    "WARNING",
                    &format!("Batch size raised from {batch_size} to {size} to keep {total} captures within {} batches", cx.d.max_batches),
                );
            }
            let n = (total + size - 1) / size;
            for b in 0..n {
                let off = b * size;
                push_unit(cx, def.key, &b.to_string(), off, size.min(total - off));
            }
            if n > 0 {
                cx.log(
                    "INFO",
                    &format!(
                        "Stage {}: {total} captures in {n} batch(es) of up to {size}",
                        def.key
                    ),
                );
            }
        }
    }

    // Drive each unit of the stage (discovery first: batches wait for it).
    let idxs: Vec<usize> = cx
        .st
        .units
        .iter()
        .enumerate()
        .filter(|(_, u)| u.stage == def.key)
        .map(|(k, _)| k)
        .collect();
    for k in idxs {
        if cx.st.state.is_final() {
            return false;
        }
        drive_unit(cx, k, i, pods, slots);
    }
    let units: Vec<&WorkUnit> = cx.st.units.iter().filter(|u| u.stage == def.key).collect();
    let batches: Vec<&&WorkUnit> = units
        .iter()
        .filter(|u| u.unit != "d" && u.unit != "s")
        .collect();
    let batched = matches!(def.work, Work::Batched { .. });
    if batched && again && batches.is_empty() && unit_done(&cx.st, def.key, "d") {
        // The discovery finished in this pass: plan and start the batches now.
        return run_stage(cx, i, def, pods, slots, false);
    }
    let done = units.iter().all(|u| u.phase == UnitPhase::Succeeded)
        && (!batched || !batches.is_empty() || cx.st.total == Some(0));
    // Stage progress: share of the batches done (a stage without batches: 0 or 1).
    let progress = if batches.is_empty() {
        if done {
            1.0
        } else {
            0.0
        }
    } else {
        batches
            .iter()
            .filter(|u| u.phase == UnitPhase::Succeeded)
            .count() as f64
            / batches.len() as f64
    };
    let any_running = units
        .iter()
        .any(|u| matches!(u.phase, UnitPhase::Running | UnitPhase::Succeeded));
    let retrying = units.iter().any(|u| u.phase == UnitPhase::Retrying);
    let stage = &mut cx.st.progress.stages[i];
    stage.progress = stage.progress.max(progress);
    if !stage.status.is_final() {
        stage.status = if retrying {
            JobState::Retry
        } else if any_running || stage.progress > 0.0 {
            JobState::Started
        } else {
            JobState::Pending
        };
    }
    done
}

fn unit_done(st: &CaptureJobStatus, stage: &str, unit: &str) -> bool {
    st.units
        .iter()
        .any(|u| u.stage == stage && u.unit == unit && u.phase == UnitPhase::Succeeded)
}

fn push_unit(cx: &mut Ctx, stage: &str, unit: &str, offset: i64, size: i64) {
    cx.st.units.push(WorkUnit {
        stage: stage.into(),
        unit: unit.into(),
        offset,
        size,
        ..Default::default()
    });
}

fn mode_of(unit: &str) -> Mode {
    match unit {
        "d" => Mode::Discover,
        "s" => Mode::Single,
        _ => Mode::Batch,
    }
}

fn backoff(cx: &Ctx, tries: i32) -> Duration {
    let exp = (tries - 1).clamp(0, 16) as u32;
    secs((cx.d.backoff_base.max(0) * 2i64.pow(exp)).min(300))
}

fn drive_unit(cx: &mut Ctx, k: usize, stage_idx: usize, pods: &[PodObs], slots: &mut i64) {
    let (_, _, retries, pending_timeout) = settings(cx);
    let max_tries = retries + 1;
    let u = cx.st.units[k].clone();
    if matches!(u.phase, UnitPhase::Succeeded | UnitPhase::Failed) {
        return;
    }
    // A Pod of a later try than the status knows: the operator stopped between creating
    // it and writing the status. The Pods are the truth.
    let mine: Vec<&PodObs> = pods
        .iter()
        .filter(|p| p.stage == u.stage && p.unit == u.unit)
        .collect();
    let seen_try = mine.iter().map(|p| p.try_no).max().unwrap_or(0);
    if seen_try > u.tries {
        let unit = &mut cx.st.units[k];
        unit.tries = seen_try;
        unit.phase = UnitPhase::Pending;
        unit.seen = false;
        unit.requested_at.get_or_insert(Time(cx.now));
    }
    let u = cx.st.units[k].clone();
    let current = mine.iter().find(|p| p.try_no == u.tries && u.tries > 0);

    let needs_pod = u.tries == 0
        || (u.phase == UnitPhase::Retrying
            && u.failed_at
                .as_ref()
                .is_some_and(|f| cx.now >= f.0 + backoff(cx, u.tries)));
    if needs_pod {
        if *slots <= 0 {
            return;
        }
        *slots -= 1;
        let try_no = u.tries + 1;
        let total = cx.st.total;
        let seed = cx.st.seed.unwrap_or_default();
        let unit = &mut cx.st.units[k];
        unit.tries = try_no;
        unit.phase = UnitPhase::Pending;
        unit.seen = false;
        unit.requested_at = Some(Time(cx.now));
        cx.plan.create.push(PodRequest {
            attempt: cx.st.attempt,
            stage: u.stage.clone(),
            unit: u.unit.clone(),
            try_no,
            mode: mode_of(&u.unit),
            offset: u.offset,
            count: u.size,
            total,
            seed,
        });
        if try_no > 1 {
            cx.log(
                "INFO",
                &format!("{}: try {try_no} of {max_tries} started", unit_label(&u)),
            );
        }
        if cx.st.state == JobState::Retry
            && !cx.st.units.iter().any(|u| u.phase == UnitPhase::Retrying)
        {
            cx.set_state(JobState::Started);
        }
        cx.wake_at(cx.now + secs(pending_timeout));
        return;
    }
    if u.phase == UnitPhase::Retrying {
        let at = u.failed_at.as_ref().map(|f| f.0).unwrap_or(cx.now) + backoff(cx, u.tries);
        cx.wake_at(at);
        return;
    }

    let Some(p) = current else {
        // Requested, not in the cache: give the watch time, then call it lost. A Pod once
        // seen and now gone was deleted: lost at once.
        let since = u.requested_at.as_ref().map(|t| t.0).unwrap_or(cx.now);
        if u.seen || cx.now >= since + secs(cx.d.lost_pod_grace) {
            let msg = format!(
                "{}: Pod of try {} disappeared before it finished",
                unit_label(&u),
                u.tries
            );
            try_failed(cx, k, max_tries, &msg, pods);
        } else {
            *slots -= 1;
            cx.wake_at(since + secs(cx.d.lost_pod_grace));
        }
        return;
    };
    if !u.seen {
        cx.st.units[k].seen = true;
    }
    match p.phase {
        PodPhase::Pending => {
            *slots -= 1;
            let created = p.created.unwrap_or(cx.now);
            if p.unschedulable {
                let why = p.waiting.clone().unwrap_or_default();
                let already =
                    cx.st.conditions.iter().any(|c| {
                        c.type_ == cond::SCHEDULED && c.status == "False" && c.message == why
                    });
                if !already {
                    cx.log(
                        "WARNING",
                        &format!("Pod {} cannot be scheduled: {why}", p.name),
                    );
                    cx.set_condition(cond::SCHEDULED, false, "Unschedulable", &why);
                    cx.event(true, "Unschedulable", why.clone());
                }
            }
            let deadline = created + secs(pending_timeout);
            if cx.now >= deadline {
                let why = p
                    .waiting
                    .clone()
                    .unwrap_or_else(|| "the Pod did not start".into());
                let msg = format!(
                    "Job {} pending for {}: {why}",
                    cx.st.id.unwrap_or_default(),
                    human(cx.now.duration_since(created))
                );
                cx.fail("PendingTimeout", &msg, pods);
                return;
            }
            cx.wake_at(deadline);
        }
        PodPhase::Running => {
            *slots -= 1;
            if u.phase != UnitPhase::Running {
                cx.st.units[k].phase = UnitPhase::Running;
                cx.st.progress_at = Some(Time(cx.now));
            }
            if cx.has_condition(cond::SCHEDULED, "False") {
                cx.set_condition(cond::SCHEDULED, true, "Scheduled", "");
            }
            if cx.st.started_at.is_none() {
                cx.st.started_at = Some(Time(cx.now));
                cx.st.progress_at = Some(Time(cx.now));
                cx.log(
                    "INFO",
                    &format!("Job {} started", cx.st.id.unwrap_or_default()),
                );
                cx.event(false, "Started", "the first Pod runs");
            }
            if matches!(cx.st.state, JobState::Pending) {
                cx.set_state(JobState::Started);
            }
        }
        PodPhase::Succeeded => match parse_result(p.message.as_deref()) {
            Ok((nums, text)) => {
                let unit = &mut cx.st.units[k];
                unit.phase = UnitPhase::Succeeded;
                unit.result = nums;
                unit.text = text;
                cx.st.progress_at = Some(Time(cx.now));
                if cx.st.started_at.is_none() {
                    cx.st.started_at = Some(Time(cx.now));
                    cx.event(false, "Started", "the first Pod ran");
                }
                if matches!(cx.st.state, JobState::Pending) {
                    cx.set_state(JobState::Started);
                }
                let u = cx.st.units[k].clone();
                on_unit_success(cx, &u, stage_idx);
            }
            Err(e) => {
                let msg = format!(
                    "{}: malformed result from Pod {}: {e}",
                    unit_label(&u),
                    p.name
                );
                try_failed(cx, k, max_tries, &msg, pods);
            }
        },
        PodPhase::Failed => {
            let code = p
                .exit_code
                .map(|c| format!("exit code {c}"))
                .unwrap_or_else(|| "no exit code".into());
            let detail = p.message.clone().or(p.waiting.clone()).unwrap_or_default();
            let msg = format!(
                "{}: Pod {} failed ({code}){}",
                unit_label(&u),
                p.name,
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                }
            );
            try_failed(cx, k, max_tries, &msg, pods);
        }
    }
}

fn unit_label(u: &WorkUnit) -> String {
    match u.unit.as_str() {
        "d" => format!("Stage {} discovery", u.stage),
        "s" => format!("Stage {}", u.stage),
        b => format!("Stage {} batch {b}", u.stage),
    }
}

fn try_failed(cx: &mut Ctx, k: usize, max_tries: i32, msg: &str, pods: &[PodObs]) {
    let u = cx.st.units[k].clone();
    if u.tries < max_tries {
        let wait = backoff(cx, u.tries);
        cx.log(
            "WARNING",
            &format!(
                "{msg}; retry {} of {} in {}",
                u.tries,
                max_tries - 1,
                human(wait)
            ),
        );
        let unit = &mut cx.st.units[k];
        unit.phase = UnitPhase::Retrying;
        unit.failed_at = Some(Time(cx.now));
        cx.set_state(JobState::Retry);
        cx.wake_at(cx.now + wait);
    } else {
        cx.st.units[k].phase = UnitPhase::Failed;
        let m = format!("{msg}; no tries left ({max_tries} used)");
        cx.fail("BatchRetriesExhausted", &m, pods);
    }
}

/// After a discovery unit: the attempt's total.
fn on_unit_success(cx: &mut Ctx, u: &WorkUnit, _stage_idx: usize) {
    if u.unit == "d" {
        let reported = ["total", "total_images", "total_files", "total_records"]
            .iter()
            .find_map(|k| u.result.get(*k).copied());
        let limit = cx.job.spec.limit.map(|l| l.clamp(1, MAX_TOTAL));
        let total = match (reported, limit) {
            (Some(t), Some(l)) => t.clamp(0, l),
            (Some(t), None) => t.clamp(0, MAX_TOTAL),
            (None, l) => l.unwrap_or(0),
        };
        cx.st.total = Some(total);
        let note = if reported.is_none() {
            " (no total reported: the limit stands)"
        } else {
            ""
        };
        cx.log(
            "INFO",
            &format!("Stage {} found {total} captures{note}", u.stage),
        );
    }
}

/// The largest count a worker may report.
pub const MAX_COUNT: i64 = 1_000_000_000_000;

/// Result keys that are counts: a string there is an error, not a text.
const COUNT_KEYS: &[&str] = &[
    "total",
    "total_images",
    "total_files",
    "total_records",
    "processed",
    "failed",
    "detections",
    "classifications",
    "captures",
    "captures_added",
    "records_exported",
    "captures_grouped",
    "events_created",
    "events_touched",
    "empty_events_deleted",
    "duplicate_timestamps",
    "ungrouped_captures",
    "captures_missing_timestamp",
];

/// A worker's result: its counts and its strings.
pub type WorkerResult = (BTreeMap<String, i64>, BTreeMap<String, String>);

/// Parses a worker's result: a JSON object of numbers (and strings); empty = none.
pub fn parse_result(raw: Option<&str>) -> Result<WorkerResult, String> {
    let raw = raw.unwrap_or("").trim();
    let mut nums = BTreeMap::new();
    let mut text = BTreeMap::new();
    if raw.is_empty() {
        return Ok((nums, text));
    }
    let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
        let head: String = raw.chars().take(80).collect();
        format!("not JSON ({e}): {head:?}")
    })?;
    let obj = v
        .as_object()
        .ok_or_else(|| "not a JSON object".to_string())?;
    for (k, v) in obj {
        if k.len() > 64 {
            return Err(format!("key {:?}… is too long", &k[..16]));
        }
        match v {
            serde_json::Value::Number(n) => {
                let n = n
                    .as_i64()
                    .or_else(|| {
                        n.as_f64()
                            .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15)
                            .map(|f| f as i64)
                    })
                    .ok_or_else(|| format!("{k}: {n} is not a whole count"))?;
                if n < 0 {
                    return Err(format!("{k}: {n} is negative"));
                }
                if n > MAX_COUNT {
                    return Err(format!("{k}: {n} is larger than {MAX_COUNT}"));
                }
                nums.insert(k.clone(), n);
            }
            serde_json::Value::String(v) if COUNT_KEYS.contains(&k.as_str()) => {
                return Err(format!(
                    "{k}: {v:?} is a string; a count must be a JSON number"
                ));
            }
            serde_json::Value::String(v) => {
                text.insert(k.clone(), v.chars().take(1000).collect());
            }
            serde_json::Value::Null => {}
            other => return Err(format!("{k}: {other} is neither a count nor a string")),
        }
    }
    Ok((nums, text))
}

fn sum(st: &CaptureJobStatus, stage: &str, key: &str) -> Option<i64> {
    let mut any = false;
    let s = st
        .units
        .iter()
        .filter(|u| u.stage == stage && u.unit != "d" && u.phase == UnitPhase::Succeeded)
        .filter_map(|u| {
            let v = u.result.get(key).copied();
            any |= v.is_some();
            v
        })
        .sum();
    any.then_some(s)
}

/// Captures a stage's succeeded batches processed: their reports, else their slice sizes.
fn processed(st: &CaptureJobStatus, stage: &str) -> i64 {
    st.units
        .iter()
        .filter(|u| u.stage == stage && u.unit != "d" && u.phase == UnitPhase::Succeeded)
        .map(|u| match u.result.get("processed") {
            Some(p) => *p,
            None => (u.size - u.result.get("failed").copied().unwrap_or(0)).max(0),
        })
        .sum()
}

fn fold_params(cx: &mut Ctx, i: usize, def: &StageDef) {
    let st = &cx.st;
    let spec = &cx.job.spec;
    let total = st.total;
    let started =
        st.units.iter().any(|u| u.stage == def.key && u.tries > 0) || def.work == Work::Fold;
    let mut vals: Vec<(String, serde_json::Value)> = Vec::new();
    let single = st
        .units
        .iter()
        .find(|u| u.stage == def.key && u.unit == "s" && u.phase == UnitPhase::Succeeded);
    for (key, _) in def.params {
        let v: Option<serde_json::Value> = match (def.key, *key) {
            ("delay", "delay") => Some(spec.delay.into()),
            ("collect", "total_images") => total.map(Into::into),
            ("process", "processed") if started => Some(processed(st, "process").into()),
            ("process", "failed") if started => {
                Some(sum(st, "process", "failed").unwrap_or(0).into())
            }
            ("process", "remaining") if started => total.map(|t| {
                (t - processed(st, "process") - sum(st, "process", "failed").unwrap_or(0))
                    .max(0)
                    .into()
            }),
            ("results", "captures") if def_done(st, "process") => {
                Some(processed(st, "process").into())
            }
            ("results", k) if def_done(st, "process") => {
                Some(sum(st, "process", k).unwrap_or(0).into())
            }
            ("data_storage_sync", "total_files") => total.map(Into::into),
            ("data_storage_sync", "failed") if started => {
                Some(sum(st, def.key, "failed").unwrap_or(0).into())
            }
            ("data_export", "records_exported") if started => Some(processed(st, def.key).into()),
            ("data_export", "total_records") => total.map(Into::into),
            (_, k) => single.map(|u| match (u.result.get(k), u.text.get(k)) {
                (Some(n), _) => (*n).into(),
                (None, Some(s)) => s.clone().into(),
                (None, None) if k == "file_url" => "".into(),
                (None, None) if k == "captures_added" => u.size.into(),
                (None, None) => 0.into(),
            }),
        };
        if let Some(v) = v {
            vals.push((key.to_string(), v));
        }
    }
    let stage = &mut cx.st.progress.stages[i];
    for (k, v) in vals {
        if let Some(p) = stage.params.iter_mut().find(|p| p.key == k) {
            // Counts never go backwards within an attempt.
            let keep_old = matches!((&p.value, &v), (serde_json::Value::Number(a), serde_json::Value::Number(b))
                if a.as_i64().unwrap_or(0) > b.as_i64().unwrap_or(0) && k != "remaining");
            if !keep_old {
                p.value = v;
            }
        }
    }
}

fn def_done(st: &CaptureJobStatus, stage: &str) -> bool {
    st.progress
        .stages
        .iter()
        .any(|s| s.key == stage && s.status == JobState::Success)
}

fn summarize(cx: &mut Ctx) {
    let stages = &cx.st.progress.stages;
    let mean = if stages.is_empty() {
        0.0
    } else {
        stages.iter().map(|s| s.progress).sum::<f64>() / stages.len() as f64
    };
    let p = &mut cx.st.progress.summary;
    p.progress = p.progress.max((mean * 1e6).round() / 1e6);
    let b = &mut cx.st.batches;
    *b = Default::default();
    for u in &cx.st.units {
        b.total += 1;
        match u.phase {
            UnitPhase::Pending | UnitPhase::Retrying => b.pending += 1,
            UnitPhase::Running => b.running += 1,
            UnitPhase::Succeeded => b.succeeded += 1,
            UnitPhase::Failed => b.failed += 1,
        }
    }
}

fn deadlines(cx: &mut Ctx, pods: &[PodObs]) {
    let spec = &cx.job.spec;
    if let (Some(ads), Some(started)) = (spec.active_deadline_seconds, cx.st.started_at.clone()) {
        let deadline = started.0 + secs(ads);
        if cx.now >= deadline {
            let msg = format!(
                "Job {} passed its active deadline of {}",
                cx.st.id.unwrap_or_default(),
                human(secs(ads))
            );
            cx.fail("DeadlineExceeded", &msg, pods);
            return;
        }
        cx.wake_at(deadline);
    }
    if matches!(cx.st.state, JobState::Started | JobState::Retry) {
        if let Some(clock) = cx.st.progress_at.clone() {
            let deadline = clock.0 + secs(cx.d.stall_limit);
            if cx.now >= deadline {
                let msg = format!(
                    "Job {} made no progress for {} (stall limit)",
                    cx.st.id.unwrap_or_default(),
                    human(cx.now.duration_since(clock.0))
                );
                cx.fail("Stalled", &msg, pods);
                return;
            }
            cx.wake_at(deadline);
        }
    }
}

fn finished(cx: &mut Ctx, pods: &[PodObs]) {
    // Late Pods of a final attempt never move it; any still alive are deleted.
    cx.delete_live(pods);
    let ttl = cx
        .job
        .spec
        .ttl_seconds_after_finished
        .or(cx.d.ttl_after_finished);
    if let (Some(ttl), Some(fin)) = (ttl, cx.st.finished_at.clone()) {
        let at = fin.0 + secs(ttl);
        if cx.now >= at {
            cx.plan.delete_job = true;
        } else {
            cx.wake_at(at);
        }
    }
}
