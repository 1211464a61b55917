//! The axum handlers: each one reads the watch cache, checks the caller, and (for writes)
//! goes through the [`JobBackend`](super::JobBackend).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::actions::{self, Action};
use super::auth::{parse_authorization, AuthError, Credentials, User, Verb};
use super::backend::BackendError;
use super::body::{self, JobInput};
use super::error::{ApiError, FieldErrors};
use super::query::{self, Query};
use super::serialize::{self, Format, Links, RenderCtx, LOGS_LIMIT_DEFAULT};
use super::{openapi, ApiState, RouteKind};
use crate::crd::{CaptureJob, CaptureJobSpec, LABEL_ID};

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotFound => ApiError::NotFound,
            BackendError::Conflict(m) => ApiError::Conflict(m),
            BackendError::Invalid(m) => ApiError::Rejected(m),
            BackendError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Caller {
    Anonymous,
    User(User),
}

/// The order of `user_permissions` on a job, and the verb each one stands for.
const JOB_PERMISSIONS: [(&str, Verb); 3] = [
    ("update", Verb::Update),
    ("delete", Verb::Delete),
    ("run", Verb::Run),
];

/// `scheme://host` of the request, when no public URL is configured: the `Host` header (or
/// the URI's authority), `https` when `X-Forwarded-Proto: https`.
fn request_base(headers: &HeaderMap, uri: &Uri) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

impl ApiState {
    fn ensure_ready(&self) -> Result<(), ApiError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(ApiError::Unavailable("watch caches not synced yet".into()))
        }
    }

    /// The public base of absolute URLs for this request.
    pub(crate) fn base(&self, headers: &HeaderMap, uri: &Uri) -> String {
        match &self.inner.config.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => request_base(headers, uri),
        }
    }

    fn links(&self, headers: &HeaderMap, uri: &Uri, q: &Query) -> Links {
        let format = q.get("format").and_then(Format::parse);
        Links::new(&self.base(headers, uri), format)
    }

    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        match parse_authorization(headers.get(header::AUTHORIZATION).map(|h| h.as_bytes())) {
            Credentials::None => Ok(Caller::Anonymous),
            Credentials::Malformed(msg) => Err(ApiError::AuthenticationFailed(msg)),
            Credentials::Token(token) => match self.inner.auth.authenticate(&token).await? {
                Some(user) => Ok(Caller::User(user)),
                None => Err(ApiError::AuthenticationFailed("Invalid token.")),
            },
        }
    }

    /// The caller of a read: anonymous callers only when anonymous reads are on.
    async fn reader(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let caller = self.caller(headers).await?;
        if caller == Caller::Anonymous && !self.inner.config.anonymous_reads {
            return Err(ApiError::NotAuthenticated);
        }
        Ok(caller)
    }

    /// The caller of a write: always authenticated.
    async fn writer(&self, headers: &HeaderMap) -> Result<User, ApiError> {
        match self.caller(headers).await? {
            Caller::Anonymous => Err(ApiError::NotAuthenticated),
            Caller::User(u) => Ok(u),
        }
    }

    /// Whether the caller may read jobs of `namespace` with `verb`: everyone when anonymous
    /// reads are on, else the SubjectAccessReview's answer.
    async fn may_read(
        &self,
        caller: &Caller,
        verb: Verb,
        namespace: &str,
    ) -> Result<bool, ApiError> {
        if self.inner.config.anonymous_reads {
            return Ok(true);
        }
        match caller {
            Caller::Anonymous => Ok(false),
            Caller::User(u) => Ok(self.inner.auth.allowed(u, verb, namespace).await?),
        }
    }

    async fn authorize(&self, user: &User, verb: Verb, namespace: &str) -> Result<(), ApiError> {
        if self.inner.auth.allowed(user, verb, namespace).await? {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied)
        }
    }

    /// `user_permissions` of a job in `namespace`.
    async fn permissions(
        &self,
        caller: &Caller,
        namespace: &str,
    ) -> Result<Vec<&'static str>, ApiError> {
        let Caller::User(user) = caller else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (name, verb) in JOB_PERMISSIONS {
            if self.inner.auth.allowed(user, verb, namespace).await? {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// The job with REST id `raw` (digits only), from the cache. Should two objects claim the
    /// same id, the oldest wins (then namespace, then name), so the answer is stable.
    fn find_job(&self, raw: &str) -> Result<Arc<CaptureJob>, ApiError> {
        if raw.is_empty() || raw.len() > 18 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::NotFound);
        }
        let id: i64 = raw.parse().map_err(|_| ApiError::NotFound)?;
        // Ids are unique (the controller sees to it): the first match, found without
        // copying the cache.
        self.inner
            .jobs
            .find(|j| j.job_id() == Some(id))
            .ok_or(ApiError::NotFound)
    }

    /// The namespace of a project's jobs and the project's name: the namespace labelled
    /// `antenna.insectai.org/project-id=<id>` (the first by name if several; namespaces being
    /// deleted are skipped), its annotation `antenna.insectai.org/project-name`; else the
    /// default namespace (no name); else `None`.
    pub(crate) fn place(&self, project_id: i64) -> Option<(String, Option<String>)> {
        let labelled = self
            .inner
            .namespaces
            .state()
            .into_iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
            .filter(|ns| {
                ns.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(crate::crd::LABEL_PROJECT_ID))
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    == Some(project_id)
            })
            .filter_map(|ns| {
                let name = ns.metadata.name.clone()?;
                let project_name = ns
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(super::ANNOTATION_PROJECT_NAME))
                    .cloned();
                Some((name, project_name))
            })
            .min_by(|a, b| a.0.cmp(&b.0));
        labelled.or_else(|| {
            self.inner
                .config
                .default_namespace
                .clone()
                .map(|ns| (ns, None))
        })
    }

    /// Reads the body, at most `max_body_bytes` (else 413), as a JSON object.
    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<serde_json::Map<String, Value>, ApiError> {
        let limit = self.inner.config.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(limit))?;
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        body::parse_json_object(content_type.as_deref(), &bytes)
    }

    async fn detail_response(
        &self,
        job: &CaptureJob,
        caller: &Caller,
        links: &Links,
        logs_limit: usize,
    ) -> Result<Value, ApiError> {
        let id = job.job_id().ok_or(ApiError::NotFound)?;
        let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
        let permissions = self.permissions(caller, namespace).await?;
        let ctx = RenderCtx {
            links,
            logs_limit,
            permissions: &permissions,
        };
        Ok(serialize::job_value(job, id, ctx, true))
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|_| ApiError::NotFound)
}

fn namespace_of(job: &CaptureJob) -> &str {
    job.metadata.namespace.as_deref().unwrap_or_default()
}

fn name_of(job: &CaptureJob) -> &str {
    job.metadata.name.as_deref().unwrap_or_default()
}

/// GET /api/v2/jobs/
pub(crate) async fn list(
    State(s): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    s.ensure_ready()?;
    let q = Query::parse(raw.as_deref());
    let caller = s.reader(&headers).await?;
    let params = query::list_params(&q)?;
    let links = s.links(&headers, &uri, &q);

    let all = s.inner.jobs.state();
    let mut entries: Vec<query::Entry<'_>> = all
        .iter()
        .filter_map(|j| j.job_id().map(|id| (j.as_ref(), id)))
        .collect();
    if !s.inner.config.anonymous_reads {
        let mut readable: HashMap<&str, bool> = HashMap::new();
        for (job, _) in &entries {
            let ns = namespace_of(job);
            if !readable.contains_key(ns) {
                readable.insert(ns, s.may_read(&caller, Verb::List, ns).await?);
            }
        }
        entries.retain(|(job, _)| readable.get(namespace_of(job)).copied().unwrap_or(false));
    }

    let page = query::select(entries, &params, &q, now_us());

    let mut permissions: HashMap<&str, Vec<&'static str>> = HashMap::new();
    for (job, _) in &page.items {
        let ns = namespace_of(job);
        if !permissions.contains_key(ns) {
            permissions.insert(ns, s.permissions(&caller, ns).await?);
        }
    }
    let none: Vec<&'static str> = Vec::new();
    let results: Vec<Value> = page
        .items
        .iter()
        .map(|(job, id)| {
            let perms = permissions.get(namespace_of(job)).unwrap_or(&none);
            if params.ids_only {
                serialize::ids_only_value(job, *id, perms)
            } else {
                let ctx = RenderCtx {
                    links: &links,
                    logs_limit: params.logs_limit,
                    permissions: perms,
                };
                serialize::job_value(job, *id, ctx, false)
            }
        })
        .collect();

    let envelope_permissions = match &caller {
        Caller::Anonymous => Vec::new(),
        Caller::User(user) => {
            let namespace = match params.project_id {
                Some(pid) => s.place(pid).map(|(ns, _)| ns),
                None => s.inner.config.default_namespace.clone(),
            };
            match namespace {
                Some(ns) if s.inner.auth.allowed(user, Verb::Create, &ns).await? => vec!["create"],
                _ => Vec::new(),
            }
        }
    };

    let path = RouteKind::List.path();
    let link = |qs: Option<String>| qs.map(|qs| query::absolute(links.base(), path, &qs));
    Ok(Json(serialize::envelope(
        page.count,
        link(page.next),
        link(page.previous),
        results,
        &envelope_permissions,
    )))
}

/// The spec of a new job, through serde so that fields the facade does not set take their
/// CRD defaults.
fn new_spec(
    input: &JobInput,
    project_id: i64,
    project_name: Option<String>,
    start: bool,
) -> Result<CaptureJobSpec, ApiError> {
    let reference = |id: Option<Option<i64>>| id.flatten().map(|id| json!({ "id": id }));
    let mut spec = json!({
        "name": input.name.clone().unwrap_or_default(),
        "jobType": input.job_type.unwrap_or_default().key(),
        "project": { "id": project_id, "name": project_name },
        "delay": input.delay.unwrap_or(0),
        "shuffle": input.shuffle.unwrap_or(true),
        "start": start,
        "cancel": false,
        "attempt": 1,
    });
    if let Value::Object(map) = &mut spec {
        let optional = [
            ("limit", input.limit.flatten().map(|l| json!(l))),
            ("deployment", reference(input.deployment_id)),
            (
                "sourceImageCollection",
                reference(input.source_image_collection_id),
            ),
            ("sourceImageSingle", reference(input.source_image_single_id)),
            ("pipeline", reference(input.pipeline_id)),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                map.insert(key.into(), v);
            }
        }
    }
    serde_json::from_value(spec).map_err(|e| ApiError::Rejected(e.to_string()))
}

/// POST /api/v2/jobs/[?start_now]
pub(crate) async fn create(
    State(s): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
    req_body: Body,
) -> Result<Response, ApiError> {
    s.ensure_ready()?;
    let q = Query::parse(raw.as_deref());
    let user = s.writer(&headers).await?;
    let body = s.read_body(&headers, req_body).await?;
    let (input, mut errors) = body::validate(&body, false);
    let placement = match input.project_id {
        Some(pid) => {
            let p = s.place(pid);
            if p.is_none() {
                errors.add(
                    "project_id",
                    format!("Invalid pk \"{pid}\" - object does not exist."),
                );
            }
            p.map(|p| (pid, p))
        }
        None => None,
    };
    errors.into_result()?;
    let Some((project_id, (namespace, project_name))) = placement else {
        // Unreachable: project_id is required and validated above.
        let mut e = FieldErrors::new();
        e.add("project_id", "This field is required.");
        return Err(e.into());
    };
    let start = q.flag("start_now");
    s.authorize(&user, Verb::Create, &namespace).await?;
    if start {
        s.authorize(&user, Verb::Run, &namespace).await?;
    }

    let spec = new_spec(&input, project_id, project_name, start)?;
    let id = s.inner.backend.allocate_id().await?;
    let mut job = CaptureJob::new(&format!("job-{id}"), spec);
    job.metadata.namespace = Some(namespace);
    job.metadata.labels = Some([(LABEL_ID.to_string(), id.to_string())].into());
    let created = s.inner.backend.create(&job).await?;

    let links = s.links(&headers, &uri, &q);
    let shown = serialize::project(&created);
    let value = s
        .detail_response(&shown, &Caller::User(user), &links, LOGS_LIMIT_DEFAULT)
        .await?;
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// GET /api/v2/jobs/{id}/
pub(crate) async fn detail(
    State(s): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    s.ensure_ready()?;
    let q = Query::parse(raw.as_deref());
    let caller = s.reader(&headers).await?;
    let job = s.find_job(&path_id(path)?)?;
    if !s.may_read(&caller, Verb::Get, namespace_of(&job)).await? {
        return Err(ApiError::NotFound);
    }
    let mut errors = FieldErrors::new();
    let logs_limit = query::logs_limit(&q, &mut errors);
    errors.into_result()?;
    let links = s.links(&headers, &uri, &q);
    Ok(Json(
        s.detail_response(&job, &caller, &links, logs_limit).await?,
    ))
}

/// PUT and PATCH /api/v2/jobs/{id}/
async fn update(
    s: ApiState,
    headers: HeaderMap,
    uri: Uri,
    raw: Option<String>,
    path: Result<Path<String>, PathRejection>,
    req_body: Body,
    partial: bool,
) -> Result<Json<Value>, ApiError> {
    s.ensure_ready()?;
    let q = Query::parse(raw.as_deref());
    let user = s.writer(&headers).await?;
    let job = s.find_job(&path_id(path)?)?;
    s.authorize(&user, Verb::Update, namespace_of(&job)).await?;
    let body = s.read_body(&headers, req_body).await?;
    let (input, mut errors) = body::validate(&body, partial);
    if input.project_id.is_some_and(|p| p != job.spec.project.id) {
        errors.add(
            "project_id",
            "A job cannot be moved to another project; create a new job instead.",
        );
    }
    errors.into_result()?;
    let patch = body::spec_patch(&job.spec, &input);
    let updated = if patch.is_empty() {
        (*job).clone()
    } else {
        s.inner
            .backend
            .patch_spec(namespace_of(&job), name_of(&job), &Value::Object(patch))
            .await?
    };
    let links = s.links(&headers, &uri, &q);
    let value = s
        .detail_response(&updated, &Caller::User(user), &links, LOGS_LIMIT_DEFAULT)
        .await?;
    Ok(Json(value))
}

/// PUT /api/v2/jobs/{id}/
pub(crate) async fn put(
    State(s): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    update(s, headers, uri, raw, path, body, false).await
}

/// PATCH /api/v2/jobs/{id}/
pub(crate) async fn patch(
    State(s): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    update(s, headers, uri, raw, path, body, true).await
}

/// DELETE /api/v2/jobs/{id}/
pub(crate) async fn delete(
    State(s): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    s.ensure_ready()?;
    let user = s.writer(&headers).await?;
    let job = s.find_job(&path_id(path)?)?;
    s.authorize(&user, Verb::Delete, namespace_of(&job)).await?;
    s.inner
        .backend
        .delete(namespace_of(&job), name_of(&job))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// POST /api/v2/jobs/{id}/{run,retry,cancel}/
async fn action(
    s: ApiState,
    headers: HeaderMap,
    uri: Uri,
    raw: Option<String>,
    path: Result<Path<String>, PathRejection>,
    action: Action,
) -> Result<Json<Value>, ApiError> {
    s.ensure_ready()?;
    let q = Query::parse(raw.as_deref());
    let user = s.writer(&headers).await?;
    let job = s.find_job(&path_id(path)?)?;
    s.authorize(&user, action.verb(), namespace_of(&job))
        .await?;
    let after = match actions::plan(action, &job) {
        Some(patch) => {
            s.inner
                .backend
                .patch_spec(namespace_of(&job), name_of(&job), &patch)
                .await?
        }
        None => (*job).clone(),
    };
    let links = s.links(&headers, &uri, &q);
    let shown = serialize::project(&after);
    let value = s
        .detail_response(&shown, &Caller::User(user), &links, LOGS_LIMIT_DEFAULT)
        .await?;
    Ok(Json(value))
}

macro_rules! action_handler {
    ($name:ident, $action:expr) => {
        /// POST on an action route.
        pub(crate) async fn $name(
            State(s): State<ApiState>,
            headers: HeaderMap,
            uri: Uri,
            RawQuery(raw): RawQuery,
            path: Result<Path<String>, PathRejection>,
        ) -> Result<Json<Value>, ApiError> {
            action(s, headers, uri, raw, path, $action).await
        }
    };
}

action_handler!(run, Action::Run);
action_handler!(retry, Action::Retry);
action_handler!(cancel, Action::Cancel);

/// GET /api/v2/schema/
pub(crate) async fn schema(State(s): State<ApiState>, headers: HeaderMap, uri: Uri) -> Json<Value> {
    Json(openapi::document(&s.base(&headers, &uri)))
}

/// OPTIONS on any route: the `Allow` header and a short description.
pub(crate) fn options(kind: RouteKind) -> Response {
    let mut response = Json(json!({
        "name": kind.title(),
        "description": kind.description(),
        "renders": ["application/json", "text/html"],
        "parses": ["application/json"],
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(kind.allow()));
    response
}

/// A method the route does not serve: 405.
pub(crate) fn method_not_allowed(kind: RouteKind, method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method, kind.allow())
}

/// Any other path under /api/v2: a GET or HEAD of a known route without its trailing slash
/// is redirected (301, as Django's APPEND_SLASH); every other request is 404. A POST is never
/// redirected.
pub(crate) async fn fallback(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if (method == Method::GET || method == Method::HEAD)
        && !path.ends_with('/')
        && RouteKind::of_path(&format!("{path}/")).is_some()
    {
        let location = match uri.query() {
            Some(q) => format!("{path}/?{q}"),
            None => format!("{path}/"),
        };
        if let Ok(value) = HeaderValue::from_str(&location) {
            let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
            response.headers_mut().insert(header::LOCATION, value);
            return response;
        }
    }
    ApiError::NotFound.into_response()
}
