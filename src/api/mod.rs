//! The REST facade: the old `/api/v2/jobs/` API (see `docs/rest-api.md`), served from the
//! controller's watch cache, writing through the API server.
//!
//! # Wiring
//!
//! ```no_run
//! # async fn wire(client: kube::Client, ids: std::sync::Arc<antenna_operator::ids::IdAllocator>,
//! #               jobs: kube::runtime::reflector::Store<antenna_operator::crd::CaptureJob>) {
//! use antenna_operator::api::{self, ApiConfig, ApiState};
//!
//! let config = ApiConfig {
//!     public_url: Some("https://antenna.example.org".into()),
//!     default_namespace: Some("antenna".into()),
//!     ..ApiConfig::default()
//! };
//! // `run`: the controller's store (Controller::store()) + a Namespace reflector.
//! let (namespaces, drive_namespaces) = api::namespace_reflector(client.clone());
//! let state = ApiState::from_client(config, jobs, namespaces, client, ids);
//! let app = api::router(state.clone()); // merge with /healthz, /readyz (state.is_ready())...
//! tokio::spawn(drive_namespaces);
//! # let _ = app;
//! # }
//! ```
//!
//! The `api` subcommand (no controller) uses [`standalone`], which starts both reflectors
//! and returns the future that drives them.
//!
//! # Layout
//!
//! - [`error`]: the one error type ([`ApiError`]) and its DRF-shaped bodies;
//! - [`serialize`]: pure job → JSON functions, links, timestamps, the projected state
//!   shown after an action;
//! - [`query`]: query strings, list parameters, filtering, ordering, pagination (pure);
//! - [`body`]: request bodies and field validation (pure);
//! - [`actions`]: what run, retry and cancel write (pure);
//! - [`auth`]: [`Authorizer`] and [`KubeAuthorizer`] (TokenReview + SubjectAccessReview, cached);
//! - [`backend`]: [`JobBackend`] and [`KubeBackend`] (create, merge-patch spec, delete);
//! - `handlers`, `html` (the readable page of `?format=api` and browsers), `openapi`
//!   (the document at `/api/v2/schema/`).

pub mod actions;
pub mod auth;
pub mod backend;
pub mod body;
pub mod error;
mod handlers;
mod html;
pub mod openapi;
pub mod query;
pub mod serialize;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, on, MethodFilter, MethodRouter};
use axum::Router;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;

pub use auth::{Authorizer, KubeAuthorizer, User, Verb};
pub use backend::{JobBackend, KubeBackend};
pub use error::{ApiError, FieldErrors};

use crate::crd::{CaptureJob, LABEL_PROJECT_ID};
use crate::ids::IdAllocator;

/// Annotation on a project's namespace giving the project's name (shown as `project.name`
/// of jobs created through the facade).
pub const ANNOTATION_PROJECT_NAME: &str = "antenna.insectai.org/project-name";

/// Largest request body accepted by default (1 MiB); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the Namespace reflector keeps: metadata only (labels and annotations).
pub type NamespaceMeta = PartialObjectMeta<Namespace>;

/// Settings of the facade (flags of the binary).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Base of the absolute URLs in responses (`https://host[/prefix]`); `None`: the scheme
    /// (`X-Forwarded-Proto`, else http) and `Host` of each request.
    pub public_url: Option<String>,
    /// Namespace of the jobs of projects that no namespace is labelled for; `None`: creating
    /// a job for such a project is a 400 on `project_id`.
    pub default_namespace: Option<String>,
    /// Serve reads to callers without a token (default true, like the old public projects).
    /// When false, reads need a token, and show the jobs of namespaces where the caller may
    /// `list` (list) or `get` (detail) capturejobs.
    pub anonymous_reads: bool,
    /// How long TokenReview and SubjectAccessReview answers are cached (default 5 s).
    pub auth_cache_ttl: Duration,
    /// Largest accepted request body (default [`MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            public_url: None,
            default_namespace: None,
            anonymous_reads: true,
            auth_cache_ttl: Duration::from_secs(5),
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

impl ApiConfig {
    /// Checks the settings a flag parser cannot: `public_url` must be an absolute http(s) URL
    /// without query or fragment. Call it at start-up.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.public_url {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .ok_or_else(|| {
                    format!("--public-url {url:?}: must start with http:// or https://")
                })?;
            let host = rest.split('/').next().unwrap_or("");
            if host.is_empty() || url.contains(['?', '#', ' ']) {
                return Err(format!(
                    "--public-url {url:?}: expected http(s)://host[:port][/prefix]"
                ));
            }
        }
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes must be positive".into());
        }
        Ok(())
    }
}

struct Inner {
    config: ApiConfig,
    jobs: Store<CaptureJob>,
    namespaces: Store<NamespaceMeta>,
    backend: Arc<dyn JobBackend>,
    auth: Arc<dyn Authorizer>,
}

/// The state of the router: the caches it reads, the backend it writes with, the authorizer.
/// Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

impl ApiState {
    /// A state over the given caches, backend and authorizer (tests pass fakes).
    pub fn new(
        config: ApiConfig,
        jobs: Store<CaptureJob>,
        namespaces: Store<NamespaceMeta>,
        backend: Arc<dyn JobBackend>,
        authorizer: Arc<dyn Authorizer>,
    ) -> Self {
        ApiState {
            inner: Arc::new(Inner {
                config,
                jobs,
                namespaces,
                backend,
                auth: authorizer,
            }),
        }
    }

    /// The production state: writes with [`KubeBackend`] (ids from `ids`), authorizes with
    /// [`KubeAuthorizer`] (answers cached `config.auth_cache_ttl`). `jobs` is the controller's
    /// store (`Controller::store()`) or [`job_reflector`]'s; `namespaces` is
    /// [`namespace_reflector`]'s.
    pub fn from_client(
        config: ApiConfig,
        jobs: Store<CaptureJob>,
        namespaces: Store<NamespaceMeta>,
        client: Client,
        ids: Arc<IdAllocator>,
    ) -> Self {
        let ttl = config.auth_cache_ttl;
        ApiState::new(
            config,
            jobs,
            namespaces,
            Arc::new(KubeBackend::new(client.clone(), ids)),
            Arc::new(KubeAuthorizer::new(client, ttl)),
        )
    }

    /// The configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// True once both caches have completed their initial list (for `/readyz`). Until then
    /// the job routes answer 503.
    pub fn is_ready(&self) -> bool {
        let ready = |f: BoxFuture<'_, bool>| f.now_or_never().unwrap_or(false);
        ready(Box::pin(
            self.inner.jobs.wait_until_ready().map(|r| r.is_ok()),
        )) && ready(Box::pin(
            self.inner.namespaces.wait_until_ready().map(|r| r.is_ok()),
        ))
    }

    /// Waits until [`ApiState::is_ready`]; returns false if a cache's writer was dropped first.
    pub async fn wait_ready(&self) -> bool {
        self.inner.jobs.wait_until_ready().await.is_ok()
            && self.inner.namespaces.wait_until_ready().await.is_ok()
    }
}

/// The routes of the facade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `/api/v2/jobs/`
    List,
    /// `/api/v2/jobs/{id}/`
    Detail,
    /// `/api/v2/jobs/{id}/run/`
    Run,
    /// `/api/v2/jobs/{id}/retry/`
    Retry,
    /// `/api/v2/jobs/{id}/cancel/`
    Cancel,
    /// `/api/v2/schema/`
    Schema,
}

impl RouteKind {
    /// Every route.
    pub const ALL: [RouteKind; 6] = [
        RouteKind::List,
        RouteKind::Detail,
        RouteKind::Run,
        RouteKind::Retry,
        RouteKind::Cancel,
        RouteKind::Schema,
    ];

    /// The route's path (axum syntax, as the OpenAPI document spells it too).
    pub fn path(self) -> &'static str {
        match self {
            RouteKind::List => "/api/v2/jobs/",
            RouteKind::Detail => "/api/v2/jobs/{id}/",
            RouteKind::Run => "/api/v2/jobs/{id}/run/",
            RouteKind::Retry => "/api/v2/jobs/{id}/retry/",
            RouteKind::Cancel => "/api/v2/jobs/{id}/cancel/",
            RouteKind::Schema => "/api/v2/schema/",
        }
    }

    /// The `Allow` header of the route.
    pub fn allow(self) -> &'static str {
        match self {
            RouteKind::List => "GET, POST, HEAD, OPTIONS",
            RouteKind::Detail => "GET, PUT, PATCH, DELETE, HEAD, OPTIONS",
            RouteKind::Run | RouteKind::Retry | RouteKind::Cancel => "POST, OPTIONS",
            RouteKind::Schema => "GET, HEAD, OPTIONS",
        }
    }

    /// The title of the route (OPTIONS `name`, the HTML page's heading).
    pub fn title(self) -> &'static str {
        match self {
            RouteKind::List => "Job List",
            RouteKind::Detail => "Job Instance",
            RouteKind::Run => "Run",
            RouteKind::Retry => "Retry",
            RouteKind::Cancel => "Cancel",
            RouteKind::Schema => "Schema",
        }
    }

    /// The short description of OPTIONS.
    pub fn description(self) -> &'static str {
        match self {
            RouteKind::List | RouteKind::Detail => {
                "API endpoint that allows jobs to be viewed or edited. Pass the `start_now` url \
                 parameter to the POST method to enqueue the job immediately. Use the `delay` \
                 field to create a test job with a fake duration of work (in seconds). Actions: \
                 /jobs/{id}/run/ (POST) queues a job; /jobs/{id}/retry/ (POST) starts a new \
                 attempt; /jobs/{id}/cancel/ (POST) stops its work."
            }
            RouteKind::Run => {
                "Run a job (add it to the queue). A final job starts a new attempt; a running \
                 job is left as it is."
            }
            RouteKind::Retry => {
                "Start a new attempt of a final or created job, with reset progress; a running \
                 job is left as it is."
            }
            RouteKind::Cancel => {
                "Cancel a job: its Pods are deleted and it ends REVOKED. A final job is left as \
                 it is."
            }
            RouteKind::Schema => "OpenAPI 3 document of this API.",
        }
    }

    /// The route a concrete path belongs to (`/api/v2/jobs/12/run/` → Run).
    pub fn of_path(path: &str) -> Option<RouteKind> {
        let rest = path.strip_prefix("/api/v2/")?.strip_suffix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            ["jobs"] => Some(RouteKind::List),
            ["schema"] => Some(RouteKind::Schema),
            ["jobs", id] if !id.is_empty() => Some(RouteKind::Detail),
            ["jobs", id, "run"] if !id.is_empty() => Some(RouteKind::Run),
            ["jobs", id, "retry"] if !id.is_empty() => Some(RouteKind::Retry),
            ["jobs", id, "cancel"] if !id.is_empty() => Some(RouteKind::Cancel),
            _ => None,
        }
    }
}

/// The router of `/api/v2/jobs/...` and `/api/v2/schema/` (and a JSON 404 for the rest of
/// `/api/v2/`). It has no global fallback, so it merges with the binary's other routes.
pub fn router(state: ApiState) -> Router {
    use handlers as h;
    let opts = |kind: RouteKind| move || async move { h::options(kind) };
    let not_allowed =
        |kind: RouteKind| move |m: Method| async move { h::method_not_allowed(kind, m) };
    fn action<H, T>(kind: RouteKind, handler: H) -> MethodRouter<ApiState>
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        on(MethodFilter::POST, handler)
            .options(move || async move { handlers::options(kind) })
            .fallback(move |m: Method| async move { handlers::method_not_allowed(kind, m) })
    }
    Router::new()
        .route(
            RouteKind::List.path(),
            get(h::list)
                .post(h::create)
                .options(opts(RouteKind::List))
                .fallback(not_allowed(RouteKind::List)),
        )
        .route(
            RouteKind::Detail.path(),
            get(h::detail)
                .put(h::put)
                .patch(h::patch)
                .delete(h::delete)
                .options(opts(RouteKind::Detail))
                .fallback(not_allowed(RouteKind::Detail)),
        )
        .route(RouteKind::Run.path(), action(RouteKind::Run, h::run))
        .route(RouteKind::Retry.path(), action(RouteKind::Retry, h::retry))
        .route(
            RouteKind::Cancel.path(),
            action(RouteKind::Cancel, h::cancel),
        )
        .route(
            RouteKind::Schema.path(),
            get(h::schema)
                .options(opts(RouteKind::Schema))
                .fallback(not_allowed(RouteKind::Schema)),
        )
        .route("/api/v2", any(h::fallback))
        .route("/api/v2/", any(h::fallback))
        .route("/api/v2/{*rest}", any(h::fallback))
        .layer(middleware::from_fn(negotiate))
        .with_state(state)
}

/// Whether the `Accept` header prefers HTML to JSON (a browser).
fn prefers_html(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    let (mut html, mut json) = (0.0f32, 0.0f32);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(q),
            "application/json" => json = json.max(q),
            _ => {}
        }
    }
    html > 0.0 && html > json
}

/// Content negotiation for every route: `?format=` other than `json`/`api` is 404; `api`, or
/// a browser's `Accept: text/html` without `format`, turns the JSON answer into the readable
/// HTML page. Adds `Vary: Accept` and the route's `Allow` header (as DRF does).
async fn negotiate(request: Request, next: Next) -> Response {
    let q = query::Query::parse(request.uri().query());
    let format = match q.get("format") {
        None => None,
        Some(v) => match serialize::Format::parse(v) {
            Some(f) => Some(f),
            None => return ApiError::NotFound.into_response(),
        },
    };
    let as_html = match format {
        Some(serialize::Format::Api) => true,
        Some(serialize::Format::Json) => false,
        None => prefers_html(request.headers().get(header::ACCEPT)),
    };
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let kind = RouteKind::of_path(&path);

    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Some(kind) = kind {
        if !headers.contains_key(header::ALLOW) {
            headers.insert(header::ALLOW, HeaderValue::from_static(kind.allow()));
        }
    }
    if as_html {
        html::into_page(response, &method, &path, &q, kind).await
    } else {
        response
    }
}

/// A reflector over CaptureJobs (in `namespace`, or all namespaces), for the `api`
/// subcommand: the store and the future that fills it (run it on a task; it never ends).
pub fn job_reflector(
    client: Client,
    namespace: Option<&str>,
) -> (Store<CaptureJob>, BoxFuture<'static, ()>) {
    let api: Api<CaptureJob> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let (reader, writer) = reflector::store();
    let drive = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|job: &mut CaptureJob| {
            // As the controller's cache does: what the facade never shows takes no memory.
            job.metadata.managed_fields = None;
            if let Some(a) = job.metadata.annotations.as_mut() {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        })
        .reflect(writer)
        .for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, "CaptureJob watch failed; retrying");
            }
        })
        .boxed();
    (reader, drive)
}

/// A reflector over the metadata of the namespaces labelled with
/// `antenna.insectai.org/project-id` (needs `list` and `watch` on namespaces): the store and
/// the future that fills it.
pub fn namespace_reflector(client: Client) -> (Store<NamespaceMeta>, BoxFuture<'static, ()>) {
    let api: Api<NamespaceMeta> = Api::all(client);
    let (reader, writer) = reflector::store();
    let drive = watcher(api, watcher::Config::default().labels(LABEL_PROJECT_ID))
        .default_backoff()
        .reflect(writer)
        .for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, "Namespace watch failed; retrying");
            }
        })
        .boxed();
    (reader, drive)
}

/// Everything the `api` subcommand needs: a state over its own CaptureJob reflector (in
/// `namespace`, or all) and Namespace reflector, and the future that drives both (spawn it).
pub fn standalone(
    config: ApiConfig,
    client: Client,
    ids: Arc<IdAllocator>,
    namespace: Option<&str>,
) -> (ApiState, BoxFuture<'static, ()>) {
    let (jobs, drive_jobs) = job_reflector(client.clone(), namespace);
    let (namespaces, drive_namespaces) = namespace_reflector(client.clone());
    let state = ApiState::from_client(config, jobs, namespaces, client, ids);
    let drive = async move {
        futures::future::join(drive_jobs, drive_namespaces).await;
    }
    .boxed();
    (state, drive)
}
