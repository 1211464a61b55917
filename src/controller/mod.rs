//! The CaptureJob controller: observe → plan → apply.
//!
//! `reconcile` reads the job and its Pods from the caches, asks the pure [`plan::plan`]
//! what to do, and applies that through the API server: Pod deletes (explicit Background
//! propagation), Pod creates (deterministic names: a second create of the same try is a
//! harmless 409), one status replace guarded by the resourceVersion it was computed from
//! (never a write without a change; a stale view loses the race and plans again), Events.

pub mod plan;
pub mod pods;
pub mod stages;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::crd::{CaptureJob, JobState, LABEL_ID, LABEL_MANAGED_BY, MANAGER};
use crate::ids::{IdAllocator, IdError};
use crate::metrics::Metrics;
use plan::{Admission, Defaults, Plan};
use pods::{build_pod, observe, PodDefaults};

/// Errors of a reconcile; each has a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    /// Ids could not be allocated.
    #[error("{0}")]
    Id(#[from] IdError),
    /// The reconcile panicked (a bug): the job is retried with backoff, the process lives.
    #[error("reconcile panicked: {0}")]
    Panic(String),
}

impl Error {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Id(_) => "id",
            Error::Panic(_) => "panic",
        }
    }
}

/// Controller settings.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Defaults for what specs leave unset.
    pub defaults: Defaults,
    /// Defaults for Pods.
    pub pod_defaults: PodDefaults,
    /// Most jobs running at once (None = no limit).
    pub max_running: Option<usize>,
    /// The namespace watched (None = all).
    pub namespace: Option<String>,
    /// Reconciles run at once.
    pub concurrency: u16,
}

/// The job's Pods by owner, kept from a Pod watch (an index the reflector store lacks).
#[derive(Default)]
pub struct PodIndex {
    inner: RwLock<PodMaps>,
    synced: std::sync::atomic::AtomicBool,
}

/// A deleted Pod in its last state, and when its deletion was seen.
type Tombstone = (std::time::Instant, Arc<Pod>);

type PodsByOwner = HashMap<(String, String), BTreeMap<String, Arc<Pod>>>;

#[derive(Default)]
struct PodMaps {
    live: PodsByOwner,
    relist: Option<PodsByOwner>,
    /// Pods deleted lately, in their last state, so that a Pod deleted before its end
    /// counts as lost at once rather than after a grace period.
    gone: HashMap<(String, String), Vec<Tombstone>>,
}

/// How long a deleted Pod is remembered.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

fn owner_key(pod: &Pod) -> Option<(String, String)> {
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "CaptureJob")?;
    Some((pod.namespace()?, owner.name.clone()))
}

impl PodIndex {
    /// Applies one watch event.
    pub fn apply(&self, ev: &watcher::Event<Pod>) {
        let mut m = self.inner.write().expect("pod index lock");
        match ev {
            watcher::Event::Init => m.relist = Some(HashMap::new()),
            watcher::Event::InitApply(p) => {
                if let (Some(k), Some(re)) = (owner_key(p), m.relist.as_mut()) {
                    re.entry(k)
                        .or_default()
                        .insert(p.name_any(), Arc::new(p.clone()));
                }
            }
            watcher::Event::InitDone => {
                if let Some(re) = m.relist.take() {
                    m.live = re;
                }
                self.synced
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            watcher::Event::Apply(p) => {
                if let Some(k) = owner_key(p) {
                    m.live
                        .entry(k)
                        .or_default()
                        .insert(p.name_any(), Arc::new(p.clone()));
                }
            }
            watcher::Event::Delete(p) => {
                if let Some(k) = owner_key(p) {
                    if let Some(set) = m.live.get_mut(&k) {
                        set.remove(&p.name_any());
                        if set.is_empty() {
                            m.live.remove(&k);
                        }
                    }
                    let now = std::time::Instant::now();
                    let gone = m.gone.entry(k).or_default();
                    gone.retain(|(t, _)| now.duration_since(*t) < TOMBSTONE_TTL);
                    gone.push((now, Arc::new(p.clone())));
                }
            }
        }
    }

    /// Whether the first full list of Pods has arrived (before it, a missing Pod means
    /// nothing).
    pub fn synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Pods of job `name` in `ns` deleted in the last ten minutes, in their last state.
    pub fn gone_for_job(&self, ns: &str, name: &str) -> Vec<Arc<Pod>> {
        let m = self.inner.read().expect("pod index lock");
        m.gone
            .get(&(ns.to_string(), name.to_string()))
            .map(|v| {
                v.iter()
                    .filter(|(t, _)| t.elapsed() < TOMBSTONE_TTL)
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The Pods of job `name` in `ns`.
    pub fn for_job(&self, ns: &str, name: &str) -> Vec<Arc<Pod>> {
        let m = self.inner.read().expect("pod index lock");
        m.live
            .get(&(ns.to_string(), name.to_string()))
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Everything a reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Settings.
    pub cfg: Config,
    /// The job cache (shared with the REST facade).
    pub jobs: Store<CaptureJob>,
    /// The Pod cache.
    pub pods: Arc<PodIndex>,
    /// Id allocator.
    pub ids: Arc<IdAllocator>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Pod creates the API server refused, by job uid, until the next plan reports them.
    pub refusals: Mutex<HashMap<String, String>>,
    /// The controller's trigger feed (to wake queued jobs when a slot frees).
    pub feed: JobFeed,
    /// The resourceVersion of each job's last status write, to skip planning from a cache
    /// that has not caught up with it yet (which could only end in a 409).
    pub written: Mutex<HashMap<String, u64>>,
}

/// Drops what the operator never reads from cached objects (managedFields, the
/// last-applied annotation), to keep the caches small.
pub fn slim<K: Resource>(mut obj: K) -> K {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    obj
}

fn admission(ctx: &Context, job: &CaptureJob) -> Admission {
    match ctx.cfg.max_running {
        None => Admission::Admitted,
        Some(limit) => admission_among(&ctx.jobs.state(), job, limit),
    }
}

/// A job's place in the queue: when it was queued, then its id, then its uid.
fn queue_key(j: &CaptureJob) -> (Timestamp, i64, String) {
    let since = j
        .status
        .as_ref()
        .and_then(|s| s.scheduled_at.as_ref().map(|t| t.0))
        .or(j.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or_default();
    (
        since,
        j.job_id().unwrap_or(i64::MAX),
        j.uid().unwrap_or_default(),
    )
}

/// Whether `job` may start among `all` jobs with at most `limit` running: jobs that
/// requested Pods count as running; jobs waiting to start (valid, started, not canceled)
/// queue in order of their queueing time, then id.
pub fn admission_among(all: &[Arc<CaptureJob>], job: &CaptureJob, limit: usize) -> Admission {
    let requested = |j: &CaptureJob| {
        j.status.as_ref().is_some_and(|s| {
            s.units
                .iter()
                .any(|u| u.tries > 0 && s.attempt == j.spec.attempt)
        })
    };
    if requested(job) {
        return Admission::Admitted;
    }
    let mut running = 0usize;
    let mut queue: Vec<(Timestamp, i64, String)> = Vec::new();
    for j in all {
        let st = j.state();
        let fresh_attempt = j
            .status
            .as_ref()
            .is_some_and(|s| s.attempt < j.spec.attempt);
        let invalid = j.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == plan::cond::VALID && c.status == "False")
        });
        let waiting = !j.spec.cancel
            && !invalid
            && j.spec.start
            && (fresh_attempt || matches!(st, JobState::Created | JobState::Pending))
            && !requested(j);
        if waiting {
            queue.push(queue_key(j));
        } else if matches!(
            st,
            JobState::Pending | JobState::Started | JobState::Retry | JobState::Canceling
        ) {
            running += 1;
        }
    }
    queue.sort();
    let uid = job.uid().unwrap_or_default();
    let position = queue
        .iter()
        .position(|q| q.2 == uid)
        .map(|p| p + 1)
        .unwrap_or(queue.len() + 1);
    let free = limit.saturating_sub(running);
    if position <= free {
        Admission::Admitted
    } else {
        Admission::Queued {
            position: position - free,
            queued: queue.len().max(position) - free,
            limit,
        }
    }
}

/// The highest job id in the cache (labels and statuses), 0 when there is none.
pub fn max_known_id(jobs: &Store<CaptureJob>) -> i64 {
    jobs.state()
        .iter()
        .flat_map(|j| [j.status.as_ref().and_then(|s| s.id), label_id(j)])
        .flatten()
        .max()
        .unwrap_or(0)
}

fn label_id(job: &CaptureJob) -> Option<i64> {
    job.labels()
        .get(LABEL_ID)
        .and_then(|v| v.parse().ok())
        .filter(|v: &i64| *v > 0)
}

/// Gives the job its id. Once `status.id` is set it is the truth and the label follows it;
/// before, the label's id is taken unless another job holds it, else a fresh one, checked
/// against every id in the cache (a lost counter must never hand out an id in use).
async fn ensure_id(job: Arc<CaptureJob>, ctx: &Context) -> Result<(Arc<CaptureJob>, i64), Error> {
    let label = label_id(&job);
    let uid = job.uid();
    let taken = |id: i64| {
        ctx.jobs
            .find(|o| {
                o.uid() != uid
                    && (o.status.as_ref().and_then(|s| s.id) == Some(id) || label_id(o) == Some(id))
            })
            .is_some()
    };
    let id = match job.status.as_ref().and_then(|s| s.id) {
        Some(id) if label == Some(id) => return Ok((job, id)),
        Some(id) => id,
        None => match label {
            Some(l) if !taken(l) => {
                ctx.ids.observe(l).await?;
                return Ok((job, l));
            }
            _ => {
                if let Some(l) = label {
                    warn!(job = %job.name_any(), id = l, "label id already held by another job: allocating a new one");
                }
                let mut id = ctx.ids.allocate().await?;
                for _ in 0..3 {
                    if !taken(id) {
                        break;
                    }
                    warn!(id, "allocated id already in use (was the id ConfigMap lost?): moving the counter");
                    ctx.ids.observe(max_known_id(&ctx.jobs)).await?;
                    ctx.ids.forget_block().await;
                    id = ctx.ids.allocate().await?;
                }
                id
            }
        },
    };
    let api: Api<CaptureJob> =
        Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {"labels": {LABEL_ID: id.to_string()}}});
    ctx.metrics.request("patch", "capturejobs");
    let updated = api
        .patch(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok((Arc::new(slim(updated)), id))
}

fn parse_rv(job: &CaptureJob) -> Option<u64> {
    job.metadata.resource_version.as_deref()?.parse().ok()
}

/// Whether the cached job is older than our last status write of it. (etcd's revisions
/// order resourceVersions; where one does not parse as a number, we plan anyway.)
fn cache_is_behind(job: &CaptureJob, ctx: &Context) -> bool {
    let (Some(uid), Some(cached)) = (job.uid(), parse_rv(job)) else {
        return false;
    };
    let mut written = ctx.written.lock().expect("written lock");
    match written.get(&uid) {
        Some(w) if cached < *w => true,
        Some(_) => {
            written.remove(&uid);
            false
        }
        None => false,
    }
}

/// One reconcile of one job.
pub async fn reconcile(job: Arc<CaptureJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let timer = std::time::Instant::now();
    ctx.metrics.reconciles.inc();
    // One job's bug must not take the controller (and the facade) down with it.
    let result = match std::panic::AssertUnwindSafe(reconcile_inner(job, &ctx))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Panic(msg))
        }
    };
    ctx.metrics.duration.observe(timer.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(job: Arc<CaptureJob>, ctx: &Context) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if cache_is_behind(&job, ctx) {
        // The watch event of our own write is on its way and will trigger the next plan.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if !ctx.pods.synced() {
        // Planning without the Pods would take Pods that exist for lost ones.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let (job, id) = ensure_id(job, ctx).await?;
    let mut observed: Vec<_> = ctx
        .pods
        .for_job(&ns, &name)
        .iter()
        .filter_map(|p| observe(p))
        .collect();
    // A Pod deleted before it ended is a failed try (it did not finish its work).
    for p in ctx.pods.gone_for_job(&ns, &name) {
        if let Some(mut o) = observe(&p) {
            if observed.iter().any(|x| x.name == o.name) {
                continue;
            }
            if matches!(o.phase, pods::PodPhase::Pending | pods::PodPhase::Running) {
                o.phase = pods::PodPhase::Failed;
                o.exit_code = None;
                o.message = Some("the Pod was deleted before it finished".into());
            }
            o.deleting = true;
            observed.push(o);
        }
    }
    let plan = plan::plan(
        &job,
        &observed,
        Some(id),
        admission(ctx, &job),
        &ctx.cfg.defaults,
        Timestamp::now(),
    );
    apply(&job, id, plan, ctx).await
}

async fn apply(job: &CaptureJob, id: i64, plan: Plan, ctx: &Context) -> Result<Action, Error> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for p in &plan.delete {
        ctx.metrics.request("delete", "pods");
        match pods.delete(p, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for req in &plan.create {
        let pod = build_pod(job, id, req, &ctx.cfg.pod_defaults);
        ctx.metrics.request("create", "pods");
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                ctx.metrics.pods_created.inc();
            }
            // The same try already has its Pod: never a second one.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            // Refused for good (admission, validation, Pod Security): report it on the job.
            Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => {
                warn!(job = %name, error = %e.message, "Pod refused");
                ctx.refusals
                    .lock()
                    .expect("refusals lock")
                    .insert(job.uid().unwrap_or_default(), e.message.clone());
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let api: Api<CaptureJob> = Api::namespaced(ctx.client.clone(), &ns);
    if job.status.as_ref() != Some(&plan.status) {
        let mut next = CaptureJob::new(&name, job.spec.clone());
        next.metadata.namespace = Some(ns.clone());
        next.metadata.resource_version = job.resource_version();
        next.status = Some(plan.status.clone());
        ctx.metrics.request("update", "capturejobs/status");
        match api
            .replace_status(&name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                if let (Some(uid), Some(rv)) = (written.uid(), parse_rv(&written)) {
                    ctx.written.lock().expect("written lock").insert(uid, rv);
                }
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Our view was stale: the newer object triggers another reconcile.
                ctx.metrics.error("conflict");
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
        let old = job.state();
        if old != plan.status.state {
            info!(job = %name, id, from = %old, to = %plan.status.state, "transition");
            if plan.status.state.is_final() && ctx.cfg.max_running.is_some() {
                // Wake the queue once the cache shows the slot free (admission reads it).
                let (jobs, feed, limit) = (ctx.jobs.clone(), ctx.feed.clone(), ctx.cfg.max_running);
                let key = kube::runtime::reflector::ObjectRef::from_obj(job);
                tokio::spawn(async move {
                    for _ in 0..100 {
                        if jobs.get(&key).is_none_or(|j| j.state().is_final()) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    wake_queued(&jobs, &feed, limit);
                });
            }
        }
    }
    let reference = job.object_ref(&());
    for ev in &plan.events {
        let event = Event {
            type_: if ev.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: ev.reason.clone(),
            note: Some(ev.note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        ctx.metrics.request("create", "events");
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(job = %name, error = %e, "event not published");
        }
    }
    if plan.delete_job {
        info!(job = %name, id, "TTL after finish passed: deleting the job and its Pods");
        ctx.metrics.request("delete", "capturejobs");
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }
    Ok(match plan.requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// A slot freed: reconcile the jobs at the head of the queue now, not at their next
/// periodic look.
fn wake_queued(jobs: &Store<CaptureJob>, feed: &JobFeed, limit: Option<usize>) {
    let Some(limit) = limit else { return };
    let mut queued: Vec<_> = jobs
        .state()
        .into_iter()
        .filter(|j| {
            j.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == plan::cond::QUEUED && c.status == "True")
            })
        })
        .collect();
    // The same order as admission's, so that the jobs woken are the ones it lets in.
    queued.sort_by_cached_key(|j| queue_key(j));
    for j in queued.into_iter().take(limit.max(1)) {
        feed.send(j);
    }
}

fn error_policy(_job: Arc<CaptureJob>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(err.kind());
    warn!(error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// A watcher config for the operator's own Pods.
pub fn pod_watch_config() -> watcher::Config {
    watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"))
}

/// The job cache's live feed for the controller: forwards the shared reflector's events
/// while a controller listens, drops them otherwise (so a follower never blocks the cache).
#[derive(Clone, Default)]
pub struct JobFeed {
    tx: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedSender<Arc<CaptureJob>>>>>,
}

impl JobFeed {
    /// Forwards one object to the listening controller, if any.
    pub fn send(&self, job: Arc<CaptureJob>) {
        let mut tx = self.tx.lock().expect("feed lock");
        if let Some(t) = tx.as_ref() {
            if t.send(job).is_err() {
                *tx = None;
            }
        }
    }

    /// Starts listening: every cached job first, then live changes.
    pub fn listen(
        &self,
        store: &Store<CaptureJob>,
    ) -> impl Stream<Item = Arc<CaptureJob>> + Send + 'static {
        let (t, mut rx) = tokio::sync::mpsc::unbounded_channel();
        *self.tx.lock().expect("feed lock") = Some(t);
        let now = futures::stream::iter(store.state());
        let live = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        now.chain(live)
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    feed: JobFeed,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let pod_api: Api<Pod> = match &ctx.cfg.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let index = ctx.pods.clone();
    let pod_stream = watcher(pod_api, pod_watch_config())
        .default_backoff()
        .modify(|p: &mut Pod| {
            p.metadata.managed_fields = None;
        })
        .map(move |ev| {
            if let Ok(ev) = &ev {
                index.apply(ev);
            }
            ev
        })
        .touched_objects();
    let trigger = feed.listen(&ctx.jobs);
    let concurrency = ctx.cfg.concurrency;
    Controller::for_shared_stream(trigger, ctx.jobs.clone())
        .owns_stream(pod_stream)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                match e {
                    kube::runtime::controller::Error::ObjectNotFound(_) => {}
                    other => warn!(error = %other, "controller"),
                }
            }
        })
        .await;
}

/// A recorder for the controller's Events.
pub fn recorder(client: Client) -> Recorder {
    Recorder::new(
        client,
        Reporter {
            controller: "antenna-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod plan_tests;

#[cfg(test)]
mod admission_tests {
    use super::*;

    fn job(
        name: &str,
        uid: &str,
        state: JobState,
        requested: bool,
        invalid: bool,
    ) -> Arc<CaptureJob> {
        let spec = serde_json::from_value(serde_json::json!({"name": name, "project": {"id": 1}}))
            .unwrap();
        let mut j = CaptureJob::new(name, spec);
        j.metadata.uid = Some(uid.into());
        let mut st = crate::crd::CaptureJobStatus {
            id: Some(uid.len() as i64),
            attempt: 1,
            state,
            ..Default::default()
        };
        if requested {
            st.units.push(crate::crd::WorkUnit {
                tries: 1,
                ..Default::default()
            });
        }
        if invalid {
            st.conditions
                .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: plan::cond::VALID.into(),
                    status: "False".into(),
                    reason: "InvalidSpec".into(),
                    message: "x".into(),
                    last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        Timestamp::now(),
                    ),
                    observed_generation: None,
                });
        }
        j.status = Some(st);
        Arc::new(j)
    }

    #[test]
    fn queue_counts_running_jobs_and_skips_invalid_ones() {
        let running = job("r", "u1", JobState::Started, true, false);
        let invalid = job("bad", "u22", JobState::Created, false, true);
        let waiting = job("w", "u333", JobState::Pending, false, false);
        let all = vec![running.clone(), invalid.clone(), waiting.clone()];
        // One slot, taken: the valid waiting job is first in line (the invalid one never queues).
        assert_eq!(
            admission_among(&all, &waiting, 1),
            Admission::Queued {
                position: 1,
                queued: 1,
                limit: 1
            }
        );
        // Two slots: it starts, whatever the invalid job does.
        assert_eq!(admission_among(&all, &waiting, 2), Admission::Admitted);
        // A job that already requested Pods is never held back.
        assert_eq!(admission_among(&all, &running, 1), Admission::Admitted);
    }
}
