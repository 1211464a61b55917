//! `antenna-bench`: the load generator of antenna-operator's benchmark (`make bench`).
//!
//! * `capturejobs` / `jobs` / `pods`: create N objects with a concurrent client and,
//!   from a watch opened before the first create, time until every one is final.
//! * `http`: a closed-loop HTTP/1.1 keep-alive load generator (req/s, p50/p90/p99).
//!
//! Each subcommand prints one JSON object on stdout; bench/bench.py reads it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use antenna_operator::crd::CaptureJob;

/// A counting global allocator, so `cachesize` can report the heap its objects hold.
#[allow(unsafe_code)]
mod alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

    pub struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged; only a counter
    // is updated besides.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
            // SAFETY: the caller upholds GlobalAlloc::alloc's contract.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
            // SAFETY: ptr was allocated by System with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller upholds GlobalAlloc::realloc's contract.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
                ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
            }
            p
        }
    }

    /// Bytes currently allocated on the heap.
    pub fn allocated() -> usize {
        ALLOCATED.load(Ordering::Relaxed)
    }
}

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

#[derive(Parser)]
#[command(
    name = "antenna-bench",
    about = "Load generator of the antenna-operator benchmark"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Shape {
    /// post_processing: one stage, one Pod.
    Single,
    /// ml with limit 100, batchSize 25, parallelism 4: a discovery Pod, then 4 batch Pods.
    Multi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Until {
    /// Every object final (CaptureJob SUCCESS/FAILURE/REVOKED, Job Complete/Failed, Pod
    /// Succeeded/Failed).
    Final,
    /// CaptureJobs: the operator has written a status with an id (used with --idle).
    Status,
    /// Do not wait: report the create rate only.
    Created,
}

#[derive(clap::Args, Clone, Debug)]
struct Common {
    /// Namespace (must exist).
    #[arg(long)]
    namespace: String,
    /// Objects to create.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Name prefix (names are <prefix>-<i>).
    #[arg(long, default_value = "b")]
    prefix: String,
    /// Index of the first object (to add objects to an earlier run's).
    #[arg(long, default_value_t = 0)]
    start_index: usize,
    /// Value of the Pods' `sim.kwok.test/after` annotation (KWOK: Running -> done).
    #[arg(long, default_value = "1s")]
    after: String,
    /// When to stop.
    #[arg(long, value_enum, default_value_t = Until::Final)]
    until: Until,
    /// Give up after this many seconds (the report lists what is not final).
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create CaptureJobs.
    Capturejobs {
        #[command(flatten)]
        c: Common,
        /// Work shape.
        #[arg(long, value_enum, default_value_t = Shape::Single)]
        shape: Shape,
        /// Create with `start: false` (they stay CREATED: no Pod).
        #[arg(long)]
        idle: bool,
    },
    /// Create batch/v1 Jobs (run by kube-controller-manager's Job controller).
    Jobs {
        #[command(flatten)]
        c: Common,
        /// spec.completions (and spec.parallelism).
        #[arg(long, default_value_t = 1)]
        completions: i32,
    },
    /// Create bare Pods (restartPolicy Never): no controller at all.
    Pods {
        #[command(flatten)]
        c: Common,
    },
    /// Heap bytes of a namespace's CaptureJobs held as the operator holds them (slimmed,
    /// in a reflector store): the size of "the cached objects".
    Cachesize {
        /// Namespace.
        #[arg(long)]
        namespace: String,
        /// Measure the namespace's Pods (managedFields dropped, as the operator's Pod
        /// cache keeps them) instead of its CaptureJobs.
        #[arg(long)]
        pods: bool,
    },
    /// HTTP/1.1 keep-alive load against one server on loopback.
    Http {
        /// host:port
        #[arg(long)]
        addr: String,
        /// Request paths, used round-robin (e.g. /api/v2/jobs/?limit=25).
        #[arg(long = "path", required = true)]
        paths: Vec<String>,
        /// Seconds of load (after a 1 s warm-up).
        #[arg(long, default_value_t = 15)]
        duration: u64,
        /// Connections (each one request at a time: closed loop).
        #[arg(long, default_value_t = 10)]
        connections: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One worker thread for HTTP load (leave the other core to the server); two for the
    // Kubernetes clients.
    let threads = match cli.cmd {
        Cmd::Http { .. } => 1,
        _ => 2,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let out = rt.block_on(run(cli.cmd))?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

async fn run(cmd: Cmd) -> anyhow::Result<Value> {
    match cmd {
        Cmd::Capturejobs { c, shape, idle } => {
            let client = Client::try_default().await?;
            let api: Api<CaptureJob> = Api::namespaced(client, &c.namespace);
            let until = c.until;
            let objs = (0..c.count)
                .map(|i| capturejob(&c, i, shape, idle))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let done = move |j: &CaptureJob| match until {
                Until::Final => j.state().is_final(),
                Until::Status => j.status.as_ref().is_some_and(|s| s.id.is_some()),
                Until::Created => true,
            };
            let states = |j: &CaptureJob| j.state().to_string();
            drive(api, objs, &c, done, states).await
        }
        Cmd::Jobs { c, completions } => {
            let client = Client::try_default().await?;
            let api: Api<Job> = Api::namespaced(client, &c.namespace);
            let objs = (0..c.count)
                .map(|i| batch_job(&c, i, completions))
                .collect::<anyhow::Result<Vec<_>>>()?;
            drive(api, objs, &c, job_final, |j: &Job| {
                (if job_final(j) { "final" } else { "open" }).to_string()
            })
            .await
        }
        Cmd::Pods { c } => {
            let client = Client::try_default().await?;
            let api: Api<Pod> = Api::namespaced(client, &c.namespace);
            let objs = (0..c.count)
                .map(|i| bare_pod(&c, i))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let phase = |p: &Pod| {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "None".into())
            };
            drive(
                api,
                objs,
                &c,
                move |p: &Pod| matches!(phase(p).as_str(), "Succeeded" | "Failed"),
                phase,
            )
            .await
        }
        Cmd::Cachesize { namespace, pods } => {
            let client = Client::try_default().await?;
            if pods {
                cachesize::<Pod>(Api::namespaced(client, &namespace), |mut p| {
                    p.metadata.managed_fields = None;
                    p
                })
                .await
            } else {
                cachesize::<CaptureJob>(
                    Api::namespaced(client, &namespace),
                    antenna_operator::controller::slim,
                )
                .await
            }
        }
        Cmd::Http {
            addr,
            paths,
            duration,
            connections,
        } => http_load(&addr, &paths, duration, connections).await,
    }
}

/// Lists a namespace's objects (pages of 500), keeps them as the operator's caches do
/// (`keep` slims each one) in a reflector store, and reports the heap bytes they hold.
async fn cachesize<K>(api: Api<K>, keep: fn(K) -> K) -> anyhow::Result<Value>
where
    K: Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = kube::runtime::reflector::store::<K>();
    let base = alloc::allocated();
    let mut lp = kube::api::ListParams::default().limit(500);
    let mut json_bytes = 0usize;
    loop {
        let page = api.list(&lp).await?;
        let next = page.metadata.continue_.clone();
        for o in page.items {
            json_bytes += serde_json::to_vec(&o).map(|v| v.len()).unwrap_or(0);
            writer.apply_watcher_event(&watcher::Event::Apply(keep(o)));
        }
        match next {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    let n = reader.state().len();
    let held = alloc::allocated().saturating_sub(base);
    Ok(json!({
        "objects": n,
        "heap_bytes": held,
        "heap_bytes_per_object": held.checked_div(n).unwrap_or(0),
        "json_bytes_per_object": json_bytes.checked_div(n).unwrap_or(0),
    }))
}

fn pod_annotations(c: &Common) -> Value {
    json!({"sim.kwok.test/after": c.after})
}

fn capturejob(c: &Common, i: usize, shape: Shape, idle: bool) -> anyhow::Result<CaptureJob> {
    let n = c.start_index + i;
    let mut spec = json!({
        "name": format!("bench {n}"),
        "project": {"id": 1, "name": "bench"},
        "start": !idle,
        "template": {"annotations": pod_annotations(c)},
    });
    match shape {
        Shape::Single => {
            spec["jobType"] = json!("post_processing");
        }
        Shape::Multi => {
            spec["jobType"] = json!("ml");
            spec["limit"] = json!(100);
            spec["batchSize"] = json!(25);
            spec["parallelism"] = json!(4);
            spec["sourceImageCollection"] = json!({"id": 1, "name": "bench"});
            spec["pipeline"] = json!({"id": 1, "name": "bench", "slug": "bench"});
        }
    }
    let obj = json!({
        "apiVersion": "antenna.insectai.org/v1alpha1",
        "kind": "CaptureJob",
        "metadata": {"name": format!("{}-{n}", c.prefix), "namespace": c.namespace},
        "spec": spec,
    });
    serde_json::from_value(obj).context("CaptureJob manifest")
}

fn pod_spec() -> Value {
    json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "work", "image": "registry.invalid/bench:1", "command": ["true"]}],
    })
}

fn batch_job(c: &Common, i: usize, completions: i32) -> anyhow::Result<Job> {
    let n = c.start_index + i;
    let obj = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": format!("{}-{n}", c.prefix), "namespace": c.namespace},
        "spec": {
            "completions": completions,
            "parallelism": completions,
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": pod_annotations(c)},
                "spec": pod_spec(),
            },
        },
    });
    serde_json::from_value(obj).context("Job manifest")
}

fn bare_pod(c: &Common, i: usize) -> anyhow::Result<Pod> {
    let n = c.start_index + i;
    let obj = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{}-{n}", c.prefix),
            "namespace": c.namespace,
            "annotations": pod_annotations(c),
        },
        "spec": pod_spec(),
    });
    serde_json::from_value(obj).context("Pod manifest")
}

fn job_final(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the watch saw, shared with the creating side.
#[derive(Default)]
struct Seen {
    /// Name -> when it was first seen done.
    done: HashMap<String, Instant>,
    /// Name -> last state label.
    states: HashMap<String, String>,
    /// Lists the watcher made (initial + relists).
    lists: u64,
    ready: bool,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let k = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    Some(sorted[k.min(sorted.len() - 1)])
}

/// Creates `objs` with `c.concurrency` requests in flight and, unless `--until created`,
/// waits (on a watch opened before the first create) until `done` holds for all of them.
async fn drive<K, D, S>(
    api: Api<K>,
    objs: Vec<K>,
    c: &Common,
    done: D,
    state: S,
) -> anyhow::Result<Value>
where
    K: Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    D: Fn(&K) -> bool + Send + Sync + 'static,
    S: Fn(&K) -> String + Send + Sync + 'static,
{
    let names: Vec<String> = objs.iter().map(|o| o.name_any()).collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let wait = c.until != Until::Created;
    let watch_task = if wait {
        let seen = seen.clone();
        let stream = watcher(api.clone(), watcher::Config::default());
        Some(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let mut s = seen.lock().await;
                match ev {
                    Ok(watcher::Event::Init) => s.lists += 1,
                    Ok(watcher::Event::InitDone) => s.ready = true,
                    Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                        let name = o.name_any();
                        s.states.insert(name.clone(), state(&o));
                        if done(&o) {
                            s.done.entry(name).or_insert_with(Instant::now);
                        }
                    }
                    Ok(watcher::Event::Delete(_)) => {}
                    Err(e) => eprintln!("watch: {e}"),
                }
            }
        }))
    } else {
        None
    };
    if wait {
        let t = Instant::now();
        while !seen.lock().await.ready {
            if t.elapsed() > Duration::from_secs(60) {
                bail!("the watch did not start within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Create.
    let t0 = Instant::now();
    let t0_unix = unix_now();
    let created_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let pp = PostParams::default();
    let results: Vec<Result<(), String>> = futures::stream::iter(objs)
        .map(|o| {
            let api = api.clone();
            let pp = pp.clone();
            let created_at = created_at.clone();
            async move {
                let name = o.name_any();
                let sent = Instant::now();
                match api.create(&pp, &o).await {
                    Ok(_) => {
                        created_at.lock().await.insert(name, sent);
                        Ok(())
                    }
                    Err(e) => Err(format!("{name}: {e}")),
                }
            }
        })
        .buffer_unordered(c.concurrency.max(1))
        .collect()
        .await;
    let create_s = t0.elapsed().as_secs_f64();
    let errors: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
    let created = names.len() - errors.len();

    // Wait.
    let deadline = t0 + Duration::from_secs(c.timeout);
    let mut timed_out = false;
    if wait {
        loop {
            let n = {
                let s = seen.lock().await;
                names.iter().filter(|n| s.done.contains_key(*n)).count()
            };
            if n >= created {
                break;
            }
            if Instant::now() > deadline {
                timed_out = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let s = seen.lock().await;
    let created_at = created_at.lock().await;
    let end = names
        .iter()
        .filter_map(|n| s.done.get(n))
        .max()
        .copied()
        .unwrap_or_else(Instant::now);
    let wall = if wait {
        end.duration_since(t0).as_secs_f64()
    } else {
        create_s
    };
    let mut lat: Vec<f64> = names
        .iter()
        .filter_map(|n| Some(s.done.get(n)?.duration_since(*created_at.get(n)?)))
        .map(|d| d.as_secs_f64())
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let mut states: HashMap<String, usize> = HashMap::new();
    for n in &names {
        let st = s.states.get(n).cloned().unwrap_or_else(|| "unseen".into());
        *states.entry(st).or_default() += 1;
    }
    let not_done: Vec<&String> = names
        .iter()
        .filter(|n| !s.done.contains_key(*n))
        .take(5)
        .collect();
    let lists = s.lists;
    drop(s);
    if let Some(t) = watch_task {
        t.abort();
    }
    Ok(json!({
        "count": names.len(),
        "created": created,
        "create_errors": errors.len(),
        "first_errors": errors.iter().take(3).collect::<Vec<_>>(),
        "start_unix": t0_unix,
        "create_s": create_s,
        "create_per_s": created as f64 / create_s.max(1e-9),
        "wall_s": wall,
        "per_s": if wall > 0.0 { created as f64 / wall } else { 0.0 },
        "done": lat.len(),
        "timed_out": timed_out,
        "latency_p50_s": percentile(&lat, 50.0),
        "latency_p99_s": percentile(&lat, 99.0),
        "latency_max_s": lat.last(),
        "states": states,
        "not_done_examples": not_done,
        "client_requests": {"create": names.len(), "list": lists, "watch": lists},
    }))
}

// ---------------------------------------------------------------------------------------
// HTTP load
// ---------------------------------------------------------------------------------------

/// Per-connection results.
#[derive(Default)]
struct ConnStats {
    lat_us: Vec<u32>,
    non_2xx: u64,
    errors: u64,
    bytes: u64,
}

async fn http_load(
    addr: &str,
    paths: &[String],
    duration: u64,
    connections: usize,
) -> anyhow::Result<Value> {
    // Probe: the first path must answer 2xx, else report what it answered.
    let (status, body) = one_request(addr, &paths[0]).await?;
    if !(200..300).contains(&status) {
        return Ok(json!({
            "served": false,
            "status": status,
            "body": String::from_utf8_lossy(&body[..body.len().min(300)]),
        }));
    }
    let warm = Duration::from_secs(1);
    let run = Duration::from_secs(duration);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..connections.max(1) {
        let addr = addr.to_string();
        let paths: Vec<String> = paths.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut st = ConnStats::default();
            let mut i = k;
            'conn: while start.elapsed() < warm + run {
                let Ok(mut sock) = tokio::net::TcpStream::connect(&addr).await else {
                    st.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let mut buf = Vec::with_capacity(64 * 1024);
                while start.elapsed() < warm + run {
                    let path = &paths[i % paths.len()];
                    i += 1;
                    let t = Instant::now();
                    let req = format!(
                        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n"
                    );
                    if sock.write_all(req.as_bytes()).await.is_err() {
                        st.errors += 1;
                        continue 'conn;
                    }
                    match read_response(&mut sock, &mut buf).await {
                        Ok((status, n, keep)) => {
                            if t.duration_since(start) >= warm {
                                st.lat_us
                                    .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                                st.bytes += n as u64;
                                if !(200..300).contains(&status) {
                                    st.non_2xx += 1;
                                }
                            }
                            if !keep {
                                continue 'conn;
                            }
                        }
                        Err(_) => {
                            st.errors += 1;
                            continue 'conn;
                        }
                    }
                }
            }
            st
        }));
    }
    let mut all: Vec<u32> = Vec::new();
    let (mut non_2xx, mut errors, mut bytes) = (0, 0, 0);
    for t in tasks {
        let st = t.await?;
        all.extend(st.lat_us);
        non_2xx += st.non_2xx;
        errors += st.errors;
        bytes += st.bytes;
    }
    all.sort_unstable();
    let ms = |p: f64| -> Option<f64> {
        if all.is_empty() {
            return None;
        }
        let k = ((p / 100.0) * (all.len() as f64 - 1.0)).round() as usize;
        Some(all[k.min(all.len() - 1)] as f64 / 1000.0)
    };
    let secs = run.as_secs_f64();
    Ok(json!({
        "served": true,
        "requests": all.len(),
        "req_per_s": all.len() as f64 / secs,
        "p50_ms": ms(50.0),
        "p90_ms": ms(90.0),
        "p99_ms": ms(99.0),
        "max_ms": all.last().map(|v| *v as f64 / 1000.0),
        "non_2xx": non_2xx,
        "errors": errors,
        "bytes_per_response": if all.is_empty() { 0 } else { bytes / all.len() as u64 },
        "connections": connections,
        "duration_s": duration,
    }))
}

async fn one_request(addr: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut sock = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    sock.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    let (status, _, _) = read_response(&mut sock, &mut buf).await?;
    Ok((status, buf))
}

/// Reads one response; leaves its body in `buf`. Returns (status, body bytes, keep-alive).
async fn read_response(
    sock: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> anyhow::Result<(u16, usize, bool)> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])?.to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("status line")?
        .parse()?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let keep = header("connection:").is_none_or(|v| v != "close");
    let mut body: Vec<u8> = buf[head_end..].to_vec();
    if let Some(len) = header("content-length:") {
        let len: usize = len.parse()?;
        while body.len() < len {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed in body");
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        // Read until the terminating zero-length chunk, then de-chunk.
        while find(&body, b"\r\n0\r\n\r\n").is_none() && !body.starts_with(b"0\r\n\r\n") {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed in chunked body");
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body = dechunk(&body)?;
    } else {
        // No length: the body ends with the connection.
        loop {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        *buf = body;
        let n = buf.len();
        return Ok((status, n, false));
    }
    *buf = body;
    Ok((status, buf.len(), keep))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n").context("chunk size line")?;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end])?.trim(), 16)?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(raw.get(..size).context("short chunk")?);
        raw = raw.get(size + 2..).context("chunk end")?;
    }
}
