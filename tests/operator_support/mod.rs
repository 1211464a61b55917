//! Runs the operator binary as a real process for cluster tests, scoped to one test
//! namespace (its own id counter and Lease live there too), and installs the CRD.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt};

use antenna_operator::crd::CaptureJob;

/// Installs (server-side applies) the generated CRD and waits until it is served.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = CaptureJob::crd();
    let name = "capturejobs.antenna.insectai.org";
    crds.patch(
        name,
        &PatchParams::apply("antenna-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the CRD");
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds, name, conditions::is_crd_established()),
    )
    .await
    .expect("CRD established in time")
    .expect("watch CRD");
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An operator process; killed (SIGKILL) on drop.
pub struct Operator {
    pub child: Child,
    pub metrics_port: u16,
    pub api_port: u16,
    pub log: std::path::PathBuf,
}

impl Operator {
    /// Starts `antenna-operator <mode> --namespace <ns> ...extra` and waits for /readyz.
    pub async fn start(mode: &str, ns: &str, extra: &[&str]) -> Operator {
        let metrics_port = free_port();
        let api_port = free_port();
        let log = std::env::temp_dir().join(format!("antenna-operator-{ns}-{metrics_port}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().unwrap();
        let mut args: Vec<String> = vec![
            mode.into(),
            "--namespace".into(),
            ns.into(),
            "--operator-namespace".into(),
            ns.into(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--api-addr".into(),
            format!("127.0.0.1:{api_port}"),
            "--default-namespace".into(),
            ns.into(),
            "--retry-backoff".into(),
            "1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(env!("CARGO_BIN_EXE_antenna-operator"))
            .args(&args)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start the operator");
        let mut op = Operator {
            child,
            metrics_port,
            api_port,
            log,
        };
        op.wait_ready().await;
        op
    }

    /// Waits until `/readyz` answers 200 (polling the endpoint, 30 s at most).
    pub async fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("operator exited with {status}; log:\n{}", self.log_text());
            }
            if self
                .get("/readyz")
                .await
                .is_some_and(|(code, _)| code == 200)
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "operator not ready in 30 s; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET on the metrics port: (status, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path).await
    }

    /// The value of a metric line (sum over its label sets), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics").await.expect("metrics");
        body.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tiny HTTP/1.1 GET on 127.0.0.1 (no client dependency needed).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// A tiny HTTP/1.1 request on 127.0.0.1 with an optional bearer token and JSON body:
/// (status, parsed JSON body or Null).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the facade");
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if body.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (
        code,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
