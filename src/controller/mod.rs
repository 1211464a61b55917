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

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::crd::{CaptureJob, JobState, UnitPhase, LABEL_ID, LABEL_MANAGED_BY, MANAGER};
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
}

impl Error {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Id(_) => "id",
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

type PodsByOwner = HashMap<(String, String), BTreeMap<String, Arc<Pod>>>;

#[derive(Default)]
struct PodMaps {
    live: PodsByOwner,
    relist: Option<PodsByOwner>,
}

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
                }
            }
        }
    }

    /// Whether the first full list of Pods has arrived (before it, a missing Pod means
    /// nothing).
    pub fn synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
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
    let Some(limit) = ctx.cfg.max_running else {
        return Admission::Admitted;
    };
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
    for j in ctx.jobs.state() {
        let st = j.state();
        let fresh_attempt = j
            .status
            .as_ref()
            .is_some_and(|s| s.attempt < j.spec.attempt);
        let waiting = !j.spec.cancel
            && j.spec.start
            && (fresh_attempt || matches!(st, JobState::Created | JobState::Pending))
            && !requested(&j);
        if waiting {
            let since = j
                .status
                .as_ref()
                .and_then(|s| s.scheduled_at.as_ref().map(|t| t.0))
                .or(j.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .unwrap_or_default();
            queue.push((
                since,
                j.job_id().unwrap_or(i64::MAX),
                j.uid().unwrap_or_default(),
            ));
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

/// Gives the job an id: its label's (unless another job holds it) or a fresh one, which
/// is then written to the label. Returns the job as it now is.
async fn ensure_id(job: Arc<CaptureJob>, ctx: &Context) -> Result<(Arc<CaptureJob>, i64), Error> {
    if let Some(id) = job.status.as_ref().and_then(|s| s.id) {
        return Ok((job, id));
    }
    let label: Option<i64> = job
        .labels()
        .get(LABEL_ID)
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0);
    if let Some(id) = label {
        let taken = ctx
            .jobs
            .state()
            .iter()
            .any(|o| o.uid() != job.uid() && o.status.as_ref().and_then(|s| s.id) == Some(id));
        if !taken {
            ctx.ids.observe(id).await?;
            return Ok((job, id));
        }
        warn!(job = %job.name_any(), id, "label id already held by another job: allocating a new one");
    }
    let id = ctx.ids.allocate().await?;
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

/// One reconcile of one job.
pub async fn reconcile(job: Arc<CaptureJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let timer = std::time::Instant::now();
    ctx.metrics.reconciles.inc();
    let result = reconcile_inner(job, &ctx).await;
    ctx.metrics.duration.observe(timer.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(job: Arc<CaptureJob>, ctx: &Context) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if !ctx.pods.synced() {
        // Planning without the Pods would take Pods that exist for lost ones.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let (job, id) = ensure_id(job, ctx).await?;
    let observed: Vec<_> = ctx
        .pods
        .for_job(&ns, &name)
        .iter()
        .filter_map(|p| observe(p))
        .collect();
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
            Ok(_) => {}
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

fn error_policy(_job: Arc<CaptureJob>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(err.kind());
    warn!(error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Whether a unit's work is still open (used by tests and the facade's summaries).
pub fn open_units(job: &CaptureJob) -> usize {
    job.status
        .as_ref()
        .map(|s| {
            s.units
                .iter()
                .filter(|u| !matches!(u.phase, UnitPhase::Succeeded | UnitPhase::Failed))
                .count()
        })
        .unwrap_or(0)
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
