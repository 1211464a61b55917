//! Support for cluster tests: tests that run against the local control plane
//! (`scripts/dev-cluster.sh`, see the README's "Local control plane" section).
//!
//! Conventions for a cluster test:
//!
//! ```ignore
//! mod common;
//!
//! #[tokio::test]
//! #[ignore = "cluster: run with make test"]
//! async fn my_test() {
//!     let t = common::ClusterTest::new("my-test").await; // own namespace, deleted on drop
//!     let pods: kube::Api<Pod> = t.api();
//!     pods.create(&Default::default(), &common::batch_pod("p", &[])).await.unwrap();
//!     common::wait_for(&pods, "p", "Succeeded", common::TIMEOUT, common::pod_phase_is("Succeeded")).await;
//! }
//! ```
//!
//! - `#[ignore = "cluster: ..."]` keeps plain `cargo test` to unit tests; `make test` runs
//!   `cargo test -- --include-ignored` with the cluster up.
//! - Without a cluster a cluster test fails (it never skips): [`client`] panics with how to
//!   start one.
//! - Wait with [`wait_for`] / [`wait_gone`] (watches with a deadline), never with sleeps.
//! - Pods run on KWOK fake nodes: how they end is chosen with the [`sim`] annotations.
#![allow(dead_code)] // each test crate uses a different part of this module

use std::{fmt::Debug, path::PathBuf, time::Duration};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Namespace, Pod, ServiceAccount},
};
use kube::{
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig, NamedAuthInfo},
    runtime::wait::{await_condition, Condition},
    Api, Client, Config, Resource,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;

/// Default deadline for a wait. Generous: the machine may be busy with other tests.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Annotations that steer a Pod on the KWOK fake nodes (hack/devcluster/kwok-stages.yaml).
pub mod sim {
    /// `succeed` | `fail` | `hold` (stay Running until changed). Unset: a Pod with
    /// restartPolicy Never/OnFailure succeeds; restartPolicy Always keeps running.
    pub const OUTCOME: &str = "sim.kwok.test/outcome";
    /// Exit code of a failing Pod's target container (default 1).
    pub const EXIT_CODE: &str = "sim.kwok.test/exit-code";
    /// Termination message of the target container (success or failure).
    pub const MESSAGE: &str = "sim.kwok.test/message";
    /// Go duration from Running to the end (default: env `ANTENNA_DELAY` seconds, else 1s).
    pub const AFTER: &str = "sim.kwok.test/after";
    /// Go duration from scheduling to Running (default 200ms).
    pub const START_AFTER: &str = "sim.kwok.test/start-after";
    /// Name of the container the exit code and message apply to (default: the first).
    pub const CONTAINER: &str = "sim.kwok.test/container";
}

const NO_CLUSTER: &str = "this is a cluster test: start the local control plane with \
    `scripts/dev-cluster.sh up` and `eval \"$(scripts/dev-cluster.sh env)\"`, or run `make test`";

/// The kubeconfig: `$KUBECONFIG` if set, else the dev cluster's
/// (`$DEVCLUSTER_DIR/kubeconfig`, default `/tmp/devcluster/kubeconfig`).
fn read_kubeconfig() -> Kubeconfig {
    if let Some(kc) = Kubeconfig::from_env().unwrap_or_else(|e| panic!("reading $KUBECONFIG: {e}"))
    {
        return kc;
    }
    let dir = std::env::var_os("DEVCLUSTER_DIR").unwrap_or_else(|| "/tmp/devcluster".into());
    let path = PathBuf::from(dir).join("kubeconfig");
    if !path.exists() {
        panic!(
            "KUBECONFIG is not set and {} does not exist: {NO_CLUSTER}",
            path.display()
        );
    }
    Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

async fn config_from(kubeconfig: Kubeconfig) -> Config {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("invalid kubeconfig: {e}; {NO_CLUSTER}"));
    // These tests create and delete namespaces: never point them at a real cluster.
    let host = config.cluster_url.host().unwrap_or_default();
    assert!(
        matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
        "refusing to run cluster tests against {} (not a loopback API server); {NO_CLUSTER}",
        config.cluster_url
    );
    config
}

async fn connect(config: Config) -> Client {
    let url = config.cluster_url.clone();
    let client = Client::try_from(config).unwrap_or_else(|e| panic!("kube client: {e}"));
    client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("cannot reach the API server at {url}: {e}; {NO_CLUSTER}"));
    client
}

/// A client for the dev cluster as its admin (group system:masters). Panics, so that the
/// test fails, when no cluster is reachable.
pub async fn client() -> Client {
    connect(config_from(read_kubeconfig()).await).await
}

/// A client that authenticates with a bearer token (e.g. from [`service_account_token`])
/// instead of the admin certificate, to test RBAC and the REST facade's auth.
pub async fn client_with_token(token: &str) -> Client {
    let mut kubeconfig = read_kubeconfig();
    let user: NamedAuthInfo =
        serde_json::from_value(json!({"name": "token", "user": {"token": token}}))
            .expect("token user");
    kubeconfig.auth_infos = vec![user];
    for ctx in &mut kubeconfig.contexts {
        if let Some(c) = ctx.context.as_mut() {
            c.user = Some("token".into());
        }
    }
    connect(config_from(kubeconfig).await).await
}

/// Creates ServiceAccount `name` in `ns` if needed and returns a fresh token for it
/// (TokenRequest API, 1 hour).
pub async fn service_account_token(client: &Client, ns: &str, name: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    if sas
        .get_opt(name)
        .await
        .expect("get ServiceAccount")
        .is_none()
    {
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        sas.create(&PostParams::default(), &sa)
            .await
            .expect("create ServiceAccount");
    }
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let response = sas
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    response
        .status
        .and_then(|s| s.token)
        .expect("TokenRequest returned no token")
}

/// One test's view of the cluster: an admin client and a namespace of its own, created
/// by [`ClusterTest::new`] and deleted when this value is dropped, also when the test
/// panics. Set `KEEP_TEST_NAMESPACES=1` to keep them for a post-mortem.
pub struct ClusterTest {
    pub client: Client,
    pub ns: String,
    config: Config,
}

impl ClusterTest {
    /// Connects and creates a namespace named `<prefix>-<unique suffix>`, labelled
    /// `antenna-operator.test/cluster-test=true`, then waits for its `default`
    /// ServiceAccount (Pods cannot be created before it exists).
    pub async fn new(prefix: &str) -> Self {
        let config = config_from(read_kubeconfig()).await;
        let client = connect(config.clone()).await;
        let ns = unique_name(prefix);
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": ns, "labels": {"antenna-operator.test/cluster-test": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("create namespace {ns}: {e}"));
        let t = ClusterTest { client, ns, config };
        let sas: Api<ServiceAccount> = t.api();
        wait_for(
            &sas,
            "default",
            "created by the controller-manager",
            TIMEOUT,
            |sa: Option<&ServiceAccount>| sa.is_some(),
        )
        .await;
        t
    }

    /// An `Api` for a namespaced kind in this test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }
}

impl Drop for ClusterTest {
    fn drop(&mut self) {
        let ns = self.ns.clone();
        if std::env::var_os("KEEP_TEST_NAMESPACES").is_some_and(|v| v == "1") {
            eprintln!("KEEP_TEST_NAMESPACES=1: keeping namespace {ns}");
            return;
        }
        // Drop may run while the test's runtime is unwinding a panic, so the delete gets
        // its own thread, runtime and connection; we wait for the request, not for the
        // namespace to be finalized.
        let config = self.config.clone();
        let outcome = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let client = Client::try_from(config).map_err(|e| e.to_string())?;
                Api::<Namespace>::all(client)
                    .delete(&ns, &DeleteParams::background())
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("delete namespace {ns}: {e}"))
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: test namespace cleanup failed: {e}"),
            Err(_) => eprintln!("warning: test namespace cleanup panicked"),
        }
    }
}

/// `<prefix>-<suffix>`: a valid, unique DNS label (≤ 63 chars) for this process and time.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut p: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    p = p.trim_matches('-').to_string();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{p}-{:x}{n:x}{:04x}", std::process::id(), nanos & 0xffff)
}

/// Waits until object `name` satisfies `cond` and returns it. Panics after `timeout`
/// with `what` and the object's last state, or when the object does not exist then.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    cond: impl Condition<K>,
) -> K
where
    K: Clone + Debug + Send + DeserializeOwned + Serialize + Resource + 'static,
    K::DynamicType: Default,
{
    match wait_opt(api, name, what, timeout, cond).await {
        Some(obj) => obj,
        None => panic!(
            "{} {name} was gone while waiting for it to be {what}",
            K::kind(&Default::default())
        ),
    }
}

/// Waits until object `name` no longer exists.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Clone + Debug + Send + DeserializeOwned + Serialize + Resource + 'static,
    K::DynamicType: Default,
{
    wait_opt(api, name, "gone", timeout, |o: Option<&K>| o.is_none()).await;
}

async fn wait_opt<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    cond: impl Condition<K>,
) -> Option<K>
where
    K: Clone + Debug + Send + DeserializeOwned + Serialize + Resource + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&Default::default()).to_string();
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => panic!("watching {kind} {name} (waiting for {what}): {e}"),
        Err(_) => {
            let last = match api.get_opt(name).await {
                Ok(Some(obj)) => serde_json::to_string_pretty(&obj).unwrap_or_default(),
                Ok(None) => "<does not exist>".into(),
                Err(e) => format!("<get failed: {e}>"),
            };
            panic!("timed out after {timeout:?} waiting for {kind} {name} to be {what}; last state:\n{last}");
        }
    }
}

/// Condition: the Pod is in `phase` (Pending, Running, Succeeded, Failed).
pub fn pod_phase_is(phase: &str) -> impl Condition<Pod> + '_ {
    move |pod: Option<&Pod>| {
        pod.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == phase)
    }
}

/// A minimal batch Pod (restartPolicy Never, one container `main`) with the given
/// annotations, e.g. `&[(sim::OUTCOME, "fail"), (sim::EXIT_CODE, "3")]`.
pub fn batch_pod(name: &str, annotations: &[(&str, &str)]) -> Pod {
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "antenna-worker.invalid/sim:1"}],
        },
    }))
    .expect("valid Pod")
}
