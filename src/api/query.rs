//! Query strings: parsing, the list's parameters (pagination, filters, search, ordering) with
//! the old API's rules and messages, and the pure selection of a page of jobs.

use std::cmp::Ordering;

use super::error::FieldErrors;
use super::serialize::{self, LOGS_LIMIT_DEFAULT, LOGS_LIMIT_MAX};
use crate::crd::{CaptureJob, JobState, JobType};

/// A parsed query string: every pair, in order (repeated keys kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string (`a=1&b`); invalid percent-encodings are decoded lossily.
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .map(|r| {
                form_urlencoded::parse(r.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Query { pairs }
    }

    /// The last value of `key` (as Django's `QueryDict.get`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// A boolean flag: present with no value, or `true`, `1`, `yes`, `on`, `t`, `y` (any
    /// case). Absent or anything else: false.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "true" | "1" | "yes" | "on" | "t" | "y"
            )
        })
    }

    /// The query string with every `key` removed and, if `value` is given, `key=value`
    /// appended. No leading `?`.
    pub fn with_value(&self, key: &str, value: Option<&str>) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.pairs.iter().filter(|(k, _)| k != key) {
            out.append_pair(k, v);
        }
        if let Some(v) = value {
            out.append_pair(key, v);
        }
        out.finish()
    }

    /// The query string with `limit` and `offset` set (in place when present, else appended;
    /// `None` removes), every other pair kept. No leading `?`.
    pub fn with_page(&self, limit: usize, offset: Option<usize>) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        let (mut limit_done, mut offset_done) = (false, false);
        for (k, v) in &self.pairs {
            match k.as_str() {
                "limit" => {
                    if !limit_done {
                        out.append_pair("limit", &limit.to_string());
                        limit_done = true;
                    }
                }
                "offset" => {
                    if let (Some(o), false) = (offset, offset_done) {
                        out.append_pair("offset", &o.to_string());
                        offset_done = true;
                    }
                }
                _ => {
                    out.append_pair(k, v);
                }
            }
        }
        if !limit_done {
            out.append_pair("limit", &limit.to_string());
        }
        if let (Some(o), false) = (offset, offset_done) {
            out.append_pair("offset", &o.to_string());
        }
        out.finish()
    }
}

/// Default page size.
pub const LIMIT_DEFAULT: usize = 20;

/// A positive integer in a query value (digits, optional `+`, surrounding spaces); values too
/// large for the platform saturate.
fn positive(raw: &str) -> Option<usize> {
    let t = raw.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = t.bytes().fold(0usize, |acc, b| {
        acc.saturating_mul(10).saturating_add(usize::from(b - b'0'))
    });
    Some(n)
}

/// The ordering fields of `?ordering=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    /// `name` (case-insensitive, then exact).
    Name,
    /// `created_at`.
    CreatedAt,
    /// `updated_at`.
    UpdatedAt,
    /// `status` (alphabetical, as the old text column).
    Status,
    /// `started_at`.
    StartedAt,
    /// `finished_at`.
    FinishedAt,
    /// `project` (its id).
    Project,
    /// `deployment` (its id).
    Deployment,
    /// `source_image_collection` (its id).
    SourceImageCollection,
    /// `pipeline` (its id).
    Pipeline,
}

/// Every ordering term, as the query spells it.
pub const ORDERING_FIELDS: [(&str, SortField); 10] = [
    ("name", SortField::Name),
    ("created_at", SortField::CreatedAt),
    ("updated_at", SortField::UpdatedAt),
    ("status", SortField::Status),
    ("started_at", SortField::StartedAt),
    ("finished_at", SortField::FinishedAt),
    ("project", SortField::Project),
    ("deployment", SortField::Deployment),
    ("source_image_collection", SortField::SourceImageCollection),
    ("pipeline", SortField::Pipeline),
];

/// The query parameters of the list (and some of the detail), with what they do; the OpenAPI
/// document is generated from this table.
pub const LIST_PARAMS: [(&str, &str, &str); 20] = [
    ("limit", "integer", "Page size (default 20; non-numeric, zero or negative values fall back to the default; with ids_only and no limit: 1)."),
    ("offset", "integer", "Index of the first result (non-numeric or negative: 0)."),
    ("status", "string", "Exact state: CREATED, PENDING, STARTED, SUCCESS, FAILURE, RETRY, CANCELING, REVOKED."),
    ("project", "integer", "Project id."),
    ("deployment", "integer", "Deployment id."),
    ("source_image_collection", "integer", "Capture set id."),
    ("source_image_single", "integer", "Capture id."),
    ("pipeline", "integer", "Pipeline id."),
    ("job_type_key", "string", "Job type key: ml, data_storage_sync, populate_captures_collection, regroup_events, data_export, post_processing."),
    ("dispatch_mode", "string", "internal, sync_api or async_api (every job here is internal)."),
    ("pipeline__slug", "string", "Pipeline slug."),
    ("pipeline__slug__in", "string", "Comma-separated pipeline slugs."),
    ("project_id", "integer", "Only the jobs of this project (non-integer: 400)."),
    ("search", "string", "Words that must all appear (case-insensitive) in the job name or the pipeline name."),
    ("ordering", "string", "Comma-separated terms, '-' for descending, nulls last, unknown terms ignored: name, created_at, updated_at, status, started_at, finished_at, project, deployment, source_image_collection, pipeline. Default -created_at."),
    ("incomplete_only", "boolean", "Only jobs that are not final (SUCCESS, FAILURE, REVOKED)."),
    ("ids_only", "boolean", "Items are {id, pipeline_slug, user_permissions}; one per page unless limit is given."),
    ("cutoff_hours", "integer", "Non-negative integer: hide FAILURE jobs not updated for this many hours."),
    ("logs_limit", "integer", "Log lines per stream, 1-5000 (default 1000)."),
    ("format", "string", "json, or api for the readable HTML page."),
];

/// Job filters (exact matches; `None` = not filtered).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// `status`.
    pub status: Option<JobState>,
    /// `project` and `project_id` (both must match when both are given).
    pub project: Vec<i64>,
    /// `deployment`.
    pub deployment: Option<i64>,
    /// `source_image_collection`.
    pub source_image_collection: Option<i64>,
    /// `source_image_single`.
    pub source_image_single: Option<i64>,
    /// `pipeline`.
    pub pipeline: Option<i64>,
    /// `job_type_key`.
    pub job_type: Option<JobType>,
    /// `dispatch_mode` (false = a valid mode other than internal: matches nothing).
    pub dispatch_internal: Option<bool>,
    /// `pipeline__slug`.
    pub pipeline_slug: Option<String>,
    /// `pipeline__slug__in`.
    pub pipeline_slug_in: Option<Vec<String>>,
    /// `incomplete_only`.
    pub incomplete_only: bool,
    /// `cutoff_hours`.
    pub cutoff_hours: Option<i64>,
    /// `search` words, lowercased.
    pub search: Vec<String>,
}

/// The parsed list parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ListParams {
    /// Page size actually used.
    pub limit: usize,
    /// Offset actually used.
    pub offset: usize,
    /// Filters.
    pub filters: Filters,
    /// `project_id`, if given.
    pub project_id: Option<i64>,
    /// Ordering terms (field, descending), never empty.
    pub ordering: Vec<(SortField, bool)>,
    /// `ids_only`.
    pub ids_only: bool,
    /// `logs_limit`.
    pub logs_limit: usize,
}

const INVALID_CHOICE: &str =
    "Select a valid choice. That choice is not one of the available choices.";

fn choice_error(value: &str) -> String {
    format!("Select a valid choice. {value} is not one of the available choices.")
}

/// Reads `?logs_limit=` (1..=5000, default 1000) into `errors`.
pub fn logs_limit(q: &Query, errors: &mut FieldErrors) -> usize {
    match q.get("logs_limit") {
        None => LOGS_LIMIT_DEFAULT,
        Some(raw) => match super::body::parse_int_str(raw) {
            None => {
                errors.add("logs_limit", "A valid integer is required.");
                LOGS_LIMIT_DEFAULT
            }
            Some(n) if n < 1 => {
                errors.add(
                    "logs_limit",
                    "Ensure this value is greater than or equal to 1.",
                );
                LOGS_LIMIT_DEFAULT
            }
            Some(n) if n > LOGS_LIMIT_MAX => {
                errors.add(
                    "logs_limit",
                    format!("Ensure this value is less than or equal to {LOGS_LIMIT_MAX}."),
                );
                LOGS_LIMIT_DEFAULT
            }
            Some(n) => usize::try_from(n).unwrap_or(LOGS_LIMIT_DEFAULT),
        },
    }
}

/// Parses the ordering terms; unknown ones are dropped, none left means `-created_at`.
pub fn ordering(raw: Option<&str>) -> Vec<(SortField, bool)> {
    let terms: Vec<(SortField, bool)> = raw
        .unwrap_or("")
        .split(',')
        .filter_map(|t| {
            let t = t.trim();
            let (name, desc) = match t.strip_prefix('-') {
                Some(rest) => (rest, true),
                None => (t, false),
            };
            ORDERING_FIELDS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, f)| (*f, desc))
        })
        .collect();
    if terms.is_empty() {
        vec![(SortField::CreatedAt, true)]
    } else {
        terms
    }
}

/// Parses the list parameters; every invalid value is reported (400) at once.
pub fn list_params(q: &Query) -> Result<ListParams, FieldErrors> {
    let mut errors = FieldErrors::new();
    let mut f = Filters::default();
    let nonempty = |key: &str| q.get(key).map(str::trim).filter(|v| !v.is_empty());

    if let Some(v) = nonempty("status") {
        match JobState::parse(v) {
            Some(s) => f.status = Some(s),
            None => errors.add("status", choice_error(v)),
        }
    }
    let id_filter = |key: &str, errors: &mut FieldErrors| -> Option<i64> {
        let v = nonempty(key)?;
        match super::body::parse_int_str(v) {
            Some(id) if id >= 1 => Some(id),
            _ => {
                errors.add(key, INVALID_CHOICE);
                None
            }
        }
    };
    if let Some(p) = id_filter("project", &mut errors) {
        f.project.push(p);
    }
    f.deployment = id_filter("deployment", &mut errors);
    f.source_image_collection = id_filter("source_image_collection", &mut errors);
    f.source_image_single = id_filter("source_image_single", &mut errors);
    f.pipeline = id_filter("pipeline", &mut errors);
    if let Some(v) = nonempty("job_type_key") {
        match JobType::from_key(v) {
            Some(t) => f.job_type = Some(t),
            None => errors.add("job_type_key", choice_error(v)),
        }
    }
    if let Some(v) = nonempty("dispatch_mode") {
        match v {
            "internal" => f.dispatch_internal = Some(true),
            "sync_api" | "async_api" => f.dispatch_internal = Some(false),
            other => errors.add("dispatch_mode", choice_error(other)),
        }
    }
    f.pipeline_slug = nonempty("pipeline__slug").map(str::to_string);
    f.pipeline_slug_in = nonempty("pipeline__slug__in").map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    });

    let project_id = match q.get("project_id") {
        None => None,
        Some(raw) => match super::body::parse_int_str(raw) {
            Some(id) => Some(id),
            None => {
                errors.add("project_id", "A valid integer is required.");
                None
            }
        },
    };
    f.project.extend(project_id);

    if let Some(raw) = q.get("cutoff_hours") {
        match super::body::parse_int_str(raw) {
            None => errors.add("cutoff_hours", "A valid integer is required."),
            Some(h) if h < 0 => errors.add(
                "cutoff_hours",
                "Ensure this value is greater than or equal to 0.",
            ),
            Some(h) => f.cutoff_hours = Some(h),
        }
    }
    f.incomplete_only = q.flag("incomplete_only");
    f.search = q
        .get("search")
        .unwrap_or("")
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let logs_limit = logs_limit(q, &mut errors);

    let ids_only = q.flag("ids_only");
    let default_limit = if ids_only && !q.has("limit") {
        1
    } else {
        LIMIT_DEFAULT
    };
    let limit = q
        .get("limit")
        .and_then(positive)
        .filter(|n| *n > 0)
        .unwrap_or(default_limit);
    let offset = q.get("offset").and_then(positive).unwrap_or(0);

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ListParams {
        limit,
        offset,
        filters: f,
        project_id,
        ordering: ordering(q.get("ordering")),
        ids_only,
        logs_limit,
    })
}

/// A job as the list sees it: the object and its REST id.
pub type Entry<'a> = (&'a CaptureJob, i64);

/// Whether `job` passes the filters; `now_us` is the time for `cutoff_hours`.
pub fn matches(f: &Filters, job: &CaptureJob, now_us: i64) -> bool {
    let spec = &job.spec;
    let state = job.state();
    let pipeline_slug = spec.pipeline.as_ref().and_then(|p| p.slug.as_deref());
    let id_eq = |want: Option<i64>, have: Option<i64>| want.is_none() || want == have;
    if f.status.is_some_and(|s| s != state) {
        return false;
    }
    if f.project.iter().any(|p| *p != spec.project.id) {
        return false;
    }
    if !id_eq(f.deployment, spec.deployment.as_ref().map(|r| r.id))
        || !id_eq(
            f.source_image_collection,
            spec.source_image_collection.as_ref().map(|r| r.id),
        )
        || !id_eq(
            f.source_image_single,
            spec.source_image_single.as_ref().map(|r| r.id),
        )
        || !id_eq(f.pipeline, spec.pipeline.as_ref().map(|r| r.id))
    {
        return false;
    }
    if f.job_type.is_some_and(|t| t != spec.job_type) || f.dispatch_internal == Some(false) {
        return false;
    }
    if let Some(slug) = &f.pipeline_slug {
        if pipeline_slug != Some(slug.as_str()) {
            return false;
        }
    }
    if let Some(slugs) = &f.pipeline_slug_in {
        if !pipeline_slug.is_some_and(|s| slugs.iter().any(|w| w == s)) {
            return false;
        }
    }
    if f.incomplete_only && state.is_final() {
        return false;
    }
    if let Some(hours) = f.cutoff_hours {
        let cutoff = now_us.saturating_sub(hours.saturating_mul(3_600_000_000));
        if state == JobState::Failure && serialize::updated_at(job).is_some_and(|u| u < cutoff) {
            return false;
        }
    }
    if !f.search.is_empty() {
        let name = spec.name.to_lowercase();
        let pipeline = spec
            .pipeline
            .as_ref()
            .and_then(|p| p.name.as_deref())
            .map(str::to_lowercase)
            .unwrap_or_default();
        if !f
            .search
            .iter()
            .all(|w| name.contains(w.as_str()) || pipeline.contains(w.as_str()))
        {
            return false;
        }
    }
    true
}

/// The sort key of a job for one field.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Int(i64),
    Text(String, String),
}

fn key(field: SortField, job: &CaptureJob) -> Option<Key> {
    let spec = &job.spec;
    match field {
        SortField::Name => Some(Key::Text(spec.name.to_lowercase(), spec.name.clone())),
        SortField::CreatedAt => serialize::created_at(job).map(Key::Int),
        SortField::UpdatedAt => serialize::updated_at(job).map(Key::Int),
        SortField::Status => Some(Key::Text(job.state().as_str().to_string(), String::new())),
        SortField::StartedAt => serialize::started_at(job).map(Key::Int),
        SortField::FinishedAt => serialize::finished_at(job).map(Key::Int),
        SortField::Project => Some(Key::Int(spec.project.id)),
        SortField::Deployment => spec.deployment.as_ref().map(|r| Key::Int(r.id)),
        SortField::SourceImageCollection => spec
            .source_image_collection
            .as_ref()
            .map(|r| Key::Int(r.id)),
        SortField::Pipeline => spec.pipeline.as_ref().map(|r| Key::Int(r.id)),
    }
}

/// Compares precomputed sort keys term by term, nulls last in both directions.
fn compare_keys(ordering: &[(SortField, bool)], a: &[Option<Key>], b: &[Option<Key>]) -> Ordering {
    for ((_, desc), (x, y)) in ordering.iter().zip(a.iter().zip(b.iter())) {
        let o = match (x, y) {
            (Some(x), Some(y)) if *desc => y.cmp(x),
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// Matching items before pagination.
    pub count: usize,
    /// The items of the page.
    pub items: Vec<T>,
    /// Query string of the next page (`None` exactly when offset + limit ≥ count).
    pub next: Option<String>,
    /// Query string of the previous page (`None` when offset is 0).
    pub previous: Option<String>,
}

/// Filters, sorts and cuts `jobs` into the page `p` asks for. `q` is the request's query (the
/// links keep its other parameters).
pub fn select<'a>(jobs: Vec<Entry<'a>>, p: &ListParams, q: &Query, now_us: i64) -> Page<Entry<'a>> {
    // Each job's sort keys are computed once (not per comparison), and only the first
    // offset + limit jobs are put in order (a selection, then a sort of those).
    let mut keyed: Vec<(Vec<Option<Key>>, Entry<'a>)> = jobs
        .into_iter()
        .filter(|(j, _)| matches(&p.filters, j, now_us))
        .map(|e| (p.ordering.iter().map(|(f, _)| key(*f, e.0)).collect(), e))
        .collect();
    let cmp = |a: &(Vec<Option<Key>>, Entry<'a>), b: &(Vec<Option<Key>>, Entry<'a>)| {
        compare_keys(&p.ordering, &a.0, &b.0).then_with(|| b.1 .1.cmp(&a.1 .1))
    };
    let count = keyed.len();
    let end = p.offset.saturating_add(p.limit);
    if end > 0 && end < count {
        keyed.select_nth_unstable_by(end - 1, cmp);
        keyed.truncate(end);
    }
    keyed.sort_by(cmp);
    let items: Vec<Entry<'a>> = keyed
        .into_iter()
        .skip(p.offset)
        .take(p.limit)
        .map(|(_, e)| e)
        .collect();
    let next = (end < count).then(|| q.with_page(p.limit, Some(end)));
    let previous = if p.offset == 0 {
        None
    } else if p.offset <= p.limit {
        Some(q.with_page(p.limit, None))
    } else {
        Some(q.with_page(p.limit, Some(p.offset - p.limit)))
    };
    Page {
        count,
        items,
        next,
        previous,
    }
}

/// `base + path + ?query`.
pub fn absolute(base: &str, path: &str, query: &str) -> String {
    if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{query}")
    }
}
