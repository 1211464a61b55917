//! `antenna-operator`: flags and wiring. All behaviour lives in the library.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::watch;
use tracing::{error, info};

use antenna_operator::api;
use antenna_operator::controller::{
    self, plan::Defaults, pods::PodDefaults, Config, Context, JobFeed, PodIndex,
};
use antenna_operator::crd::CaptureJob;
use antenna_operator::ids::IdAllocator;
use antenna_operator::leader::LeaderElector;
use antenna_operator::metrics::Metrics;
use antenna_operator::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "antenna-operator",
    version,
    about = "Runs the insect-monitoring platform's batch jobs as CaptureJobs and serves /api/v2/jobs/"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Controller, REST facade and metrics in one process (the chart's default).
    Run(Opts),
    /// The controller (and metrics) only.
    Controller(Opts),
    /// The REST facade (and metrics) only.
    Api(Opts),
    /// Print the CaptureJob CRD YAML.
    Crd,
    /// The reference worker of batch Pods (reads ANTENNA_* variables).
    Worker,
}

#[derive(Args, Clone, Debug)]
struct Opts {
    /// Namespace to watch (unset: all namespaces).
    #[arg(long, env = "ANTENNA_NAMESPACE")]
    namespace: Option<String>,
    /// Image of the batch Pods' worker container.
    #[arg(
        long,
        env = "ANTENNA_WORKER_IMAGE",
        default_value = "ghcr.io/antenna/antenna-operator:0.1.0"
    )]
    worker_image: String,
    /// Seconds a job's Pod may stay Pending before the job fails.
    #[arg(long, env = "ANTENNA_PENDING_TIMEOUT", default_value_t = 600)]
    pending_timeout: i64,
    /// Seconds a started job may go without progress before it fails.
    #[arg(long, env = "ANTENNA_STALL_LIMIT", default_value_t = 1800)]
    stall_limit: i64,
    /// Seconds a job may wait behind --max-running-jobs before it fails (unset: for ever).
    #[arg(long, env = "ANTENNA_QUEUE_TIMEOUT")]
    queue_timeout: Option<i64>,
    /// Captures per batch Pod when a job does not say.
    #[arg(long, env = "ANTENNA_DEFAULT_BATCH_SIZE", default_value_t = 25)]
    default_batch_size: i64,
    /// Batch Pods running at once per job when a job does not say.
    #[arg(long, env = "ANTENNA_DEFAULT_PARALLELISM", default_value_t = 4)]
    default_parallelism: i64,
    /// Extra tries per failed batch when a job does not say.
    #[arg(long, env = "ANTENNA_DEFAULT_RETRIES", default_value_t = 2)]
    default_retries: i32,
    /// Base of the retry backoff in seconds (doubles per try, at most 300).
    #[arg(long, env = "ANTENNA_RETRY_BACKOFF", default_value_t = 2)]
    retry_backoff: i64,
    /// Seconds after finishing before a job is deleted when it does not say (unset: kept).
    #[arg(long, env = "ANTENNA_TTL_SECONDS_AFTER_FINISHED")]
    ttl_seconds_after_finished: Option<i64>,
    /// Most jobs running at once in the cluster (unset: no limit).
    #[arg(long, env = "ANTENNA_MAX_RUNNING_JOBS")]
    max_running_jobs: Option<usize>,
    /// Reconciles run at once.
    #[arg(long, env = "ANTENNA_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Address of the REST facade.
    #[arg(long, env = "ANTENNA_API_ADDR", default_value = "0.0.0.0:8000")]
    api_addr: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "ANTENNA_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
    /// Run the controller only while holding a Lease (for several replicas).
    #[arg(long, env = "ANTENNA_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "ANTENNA_LEASE_NAME", default_value = "antenna-operator")]
    lease_name: String,
    /// Seconds a Lease is valid without renewal.
    #[arg(long, env = "ANTENNA_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,
    /// Namespace of the Lease and of the id ConfigMap (default: POD_NAMESPACE, else "default").
    #[arg(long, env = "ANTENNA_OPERATOR_NAMESPACE")]
    operator_namespace: Option<String>,
    /// Name of the ConfigMap holding the job-id counter.
    #[arg(
        long,
        env = "ANTENNA_IDS_CONFIGMAP",
        default_value = "antenna-operator-ids"
    )]
    ids_configmap: String,
    /// Ids reserved per counter write.
    #[arg(long, env = "ANTENNA_ID_BLOCK", default_value_t = 20)]
    id_block: i64,
    /// Public base URL of the REST facade, for `details` links (default: from the Host header).
    #[arg(long, env = "ANTENNA_PUBLIC_URL")]
    public_url: Option<String>,
    /// Namespace for jobs of projects no namespace is labelled for.
    #[arg(long, env = "ANTENNA_DEFAULT_NAMESPACE")]
    default_namespace: Option<String>,
    /// Serve reads without credentials.
    #[arg(long, env = "ANTENNA_ANONYMOUS_READS", default_value_t = true, action = clap::ArgAction::Set)]
    anonymous_reads: bool,
    /// Log format.
    #[arg(long, env = "ANTENNA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

impl Opts {
    fn operator_namespace(&self) -> String {
        self.operator_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into())
    }

    fn controller_config(&self) -> Config {
        Config {
            defaults: Defaults {
                batch_size: self.default_batch_size.max(1),
                parallelism: self.default_parallelism.max(1),
                retries: self.default_retries.max(0),
                pending_timeout: self.pending_timeout.max(1),
                stall_limit: self.stall_limit.max(1),
                queue_timeout: self.queue_timeout,
                ttl_after_finished: self.ttl_seconds_after_finished,
                backoff_base: self.retry_backoff.max(0),
                ..Defaults::default()
            },
            pod_defaults: PodDefaults {
                image: self.worker_image.clone(),
                ..PodDefaults::default()
            },
            max_running: self.max_running_jobs,
            namespace: self.namespace.clone(),
            concurrency: self.concurrency.max(1),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Crd => {
            print!("{}", antenna_operator::crd_yaml());
            Ok(())
        }
        Cmd::Worker => {
            telemetry::init(LogFormat::Text);
            antenna_operator::worker::run().await?;
            Ok(())
        }
        Cmd::Run(o) => serve(o, true, true).await,
        Cmd::Controller(o) => serve(o, true, false).await,
        Cmd::Api(o) => serve(o, false, true).await,
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

async fn serve(o: Opts, with_controller: bool, with_api: bool) -> anyhow::Result<()> {
    telemetry::init(o.log_format);
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let jobs_api: Api<CaptureJob> = match &o.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // The installer owns the CRD: refuse to start without it.
    match jobs_api
        .list_metadata(&ListParams::default().limit(1))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => anyhow::bail!(
            "capturejobs.antenna.insectai.org is not served ({}); install the CRD: \
             kubectl apply --server-side -f crds/ (or install the Helm chart)",
            e.message
        ),
        Err(e) => anyhow::bail!("cannot list capturejobs.antenna.insectai.org: {e}"),
    }
    if let Some(ns) = &o.namespace {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let lp = ListParams::default().fields(&format!("metadata.name={ns}"));
        if let Ok(list) = namespaces.list_metadata(&lp).await {
            if list.items.is_empty() {
                tracing::warn!(namespace = %ns, "the watched namespace does not exist (yet): no job is seen until it does");
            }
        }
    }
    let metrics = Arc::new(Metrics::default());
    let ids = Arc::new(IdAllocator::new(
        client.clone(),
        &o.operator_namespace(),
        &o.ids_configmap,
        o.id_block,
        1,
    ));

    // One job cache for the controller and the facade.
    let (reader, writer) = reflector::store::<CaptureJob>();
    let feed = JobFeed::default();
    let feed_in = feed.clone();
    // Our own "first list done" signal: kube's Store::wait_until_ready keeps one waker
    // only, so two tasks awaiting it (the controller, readiness probes) could miss it.
    let (synced_tx, synced_rx) = watch::channel(false);
    let cache = watcher(jobs_api, watcher::Config::default())
        .default_backoff()
        .modify(|j: &mut CaptureJob| {
            let slim = controller::slim(std::mem::replace(j, CaptureJob::new("", j.spec.clone())));
            *j = slim;
        })
        .reflect(writer)
        .for_each(move |res| {
            match res {
                Ok(watcher::Event::Apply(job)) | Ok(watcher::Event::InitApply(job)) => {
                    feed_in.send(Arc::new(job))
                }
                Ok(watcher::Event::InitDone) => {
                    let _ = synced_tx.send(true);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "job watch"),
            }
            futures::future::ready(())
        });
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut tasks = tokio::task::JoinSet::new();
    {
        let stop = stopped();
        tasks.spawn(async move {
            tokio::select! {
                _ = cache => {},
                _ = stop => {},
            }
            Ok::<(), anyhow::Error>(())
        });
    }

    // Move the id counter above every id in use once the cache holds them all (a counter
    // that was lost or is new must never hand out an id a job already has).
    {
        let ids = ids.clone();
        let reader = reader.clone();
        let mut synced = synced_rx.clone();
        tokio::spawn(async move {
            if synced.wait_for(|s| *s).await.is_ok() {
                let max = controller::max_known_id(&reader);
                if max > 0 {
                    if let Err(e) = ids.observe(max).await {
                        tracing::warn!(error = %e, "could not move the id counter above {max}");
                    }
                }
            }
        });
    }
    let mut facade_state: Option<api::ApiState> = None;
    if with_api {
        let addr = o.api_addr;
        let stop = stopped();
        let (app, state) = facade(&o, client.clone(), reader.clone(), ids.clone())?;
        facade_state = Some(state);
        tasks.spawn(async move {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            info!(%addr, "REST facade");
            axum::serve(listener, app.into_make_service())
                .with_graceful_shutdown(stop)
                .await?;
            Ok(())
        });
    }

    // Metrics, health, readiness.
    {
        let metrics = metrics.clone();
        let reader = reader.clone();
        let synced = synced_rx.clone();
        let facade_state = facade_state.clone();
        let addr = o.metrics_addr;
        let stop = stopped();
        tasks.spawn(async move {
            let app = antenna_operator::health::router(metrics, reader, synced, facade_state);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            info!(%addr, "metrics and health");
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await?;
            Ok(())
        });
    }

    if with_controller {
        let ctx = Arc::new(Context {
            client: client.clone(),
            cfg: o.controller_config(),
            jobs: reader.clone(),
            pods: Arc::new(PodIndex::default()),
            ids: ids.clone(),
            recorder: controller::recorder(client.clone()),
            metrics: metrics.clone(),
            refusals: Default::default(),
            feed: feed.clone(),
            written: Default::default(),
        });
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
        let mut elector = o.leader_election.then(|| {
            LeaderElector::new(
                client.clone(),
                &o.operator_namespace(),
                &o.lease_name,
                &identity,
                Duration::from_secs(o.lease_duration.max(3)),
            )
        });
        let stop = stopped();
        let stop2 = stopped();
        tasks.spawn(async move {
            if let Some(el) = elector.as_mut() {
                tokio::select! {
                    _ = el.acquire() => {},
                    _ = stop => return Ok(()),
                }
            }
            let _ = synced_rx.clone().wait_for(|s| *s).await;
            info!("controller running");
            match elector {
                Some(mut el) => {
                    let lost = tokio::select! {
                        _ = controller::run(ctx, feed, stop2) => false,
                        _ = el.hold() => true,
                    };
                    if lost {
                        // Never act without the lease: stop at once, let the Pod restart.
                        error!("leadership lost: exiting");
                        std::process::exit(2);
                    }
                    el.release().await;
                }
                None => controller::run(ctx, feed, stop2).await,
            }
            Ok(())
        });
    }

    tokio::select! {
        _ = shutdown_signal() => info!("shutting down"),
        Some(res) = tasks.join_next() => {
            if let Ok(Err(e)) = res {
                error!(error = %e, "a task failed");
                let _ = stop_tx.send(true);
                return Err(e);
            }
        }
    }
    let _ = stop_tx.send(true);
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut deadline => break,
        }
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "antenna-operator".into())
}

/// The REST facade's router and state (its namespace cache is driven by a spawned task).
fn facade(
    o: &Opts,
    client: Client,
    jobs: reflector::Store<CaptureJob>,
    ids: Arc<IdAllocator>,
) -> anyhow::Result<(axum::Router, api::ApiState)> {
    let config = api::ApiConfig {
        public_url: o.public_url.clone(),
        default_namespace: o.default_namespace.clone(),
        anonymous_reads: o.anonymous_reads,
        ..api::ApiConfig::default()
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let (namespaces, drive) = api::namespace_reflector(client.clone());
    tokio::spawn(drive);
    let state = api::ApiState::from_client(config, jobs, namespaces, client, ids);
    Ok((api::router(state.clone()), state))
}
