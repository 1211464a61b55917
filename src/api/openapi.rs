//! The OpenAPI 3 document served at `/api/v2/schema/`, built from the same tables the server
//! uses (routes and their methods, list parameters, detail keys), so that it stays true to
//! what the server does; tests compare the two.

use serde_json::{json, Map, Value};

use super::body::{DELAY_MAX, NAME_MAX_CHARS};
use super::query::LIST_PARAMS;
use super::serialize::{DETAIL_KEYS, LOGS_LIMIT_DEFAULT, LOGS_LIMIT_MAX};
use super::RouteKind;
use crate::crd::{JobState, JobType};

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn resp(description: &str, schema: Option<Value>) -> Value {
    match schema {
        Some(s) => json!({ "description": description, "content": content(s) }),
        None => json!({ "description": description }),
    }
}

fn error(description: &str) -> Value {
    resp(description, Some(r("ErrorDetail")))
}

fn responses(pairs: &[(&str, Value)]) -> Value {
    let mut m = Map::new();
    for (code, v) in pairs {
        m.insert((*code).to_string(), v.clone());
    }
    Value::Object(m)
}

fn query_param(name: &str, kind: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description,
            "schema": { "type": kind } })
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": "The job's id.",
            "schema": { "type": "integer" } })
}

fn format_param() -> Value {
    let (name, kind, description) = LIST_PARAMS[LIST_PARAMS.len() - 1];
    let mut p = query_param(name, kind, description);
    p["schema"]["enum"] = json!(["json", "api"]);
    p
}

fn logs_limit_param() -> Value {
    json!({ "name": "logs_limit", "in": "query", "required": false,
            "description": "Log lines per stream (400 outside 1-5000).",
            "schema": { "type": "integer", "minimum": 1, "maximum": LOGS_LIMIT_MAX,
                        "default": LOGS_LIMIT_DEFAULT } })
}

fn writes() -> Value {
    json!([{ "tokenAuth": [] }, { "bearerAuth": [] }])
}

fn options_op(kind: RouteKind) -> Value {
    json!({
        "summary": format!("Describe {}", kind.title()),
        "operationId": format!("{}_options", op_prefix(kind)),
        "security": [{}],
        "responses": responses(&[("200", resp("Allow header and a description.", Some(r("Options"))))]),
    })
}

fn head_op(kind: RouteKind, params: Value) -> Value {
    json!({
        "summary": "Headers of the GET",
        "operationId": format!("{}_head", op_prefix(kind)),
        "parameters": params,
        "responses": responses(&[("200", resp("As GET, without a body.", None))]),
    })
}

fn op_prefix(kind: RouteKind) -> &'static str {
    match kind {
        RouteKind::List => "jobs_list",
        RouteKind::Detail => "jobs",
        RouteKind::Run => "jobs_run",
        RouteKind::Retry => "jobs_retry",
        RouteKind::Cancel => "jobs_cancel",
        RouteKind::Schema => "schema",
    }
}

fn action_op(kind: RouteKind) -> Value {
    json!({
        "summary": kind.description(),
        "operationId": op_prefix(kind),
        "parameters": [id_param(), format_param()],
        "security": writes(),
        "responses": responses(&[
            ("200", resp("The job; its status shows where the action sends it (e.g. PENDING, CANCELING, REVOKED).", Some(r("Job")))),
            ("401", error("No or invalid credentials.")),
            ("403", error("Not allowed (SubjectAccessReview on capturejobs, verb run or cancel).")),
            ("404", error("Unknown id.")),
            ("503", error("The API server failed or the caches are not synced.")),
        ]),
    })
}

fn path_item(kind: RouteKind) -> Value {
    let mut item = Map::new();
    match kind {
        RouteKind::List => {
            let params: Vec<Value> = LIST_PARAMS
                .iter()
                .map(|(n, k, d)| query_param(n, k, d))
                .collect();
            item.insert(
                "get".into(),
                json!({
                    "summary": "List jobs",
                    "operationId": "jobs_list",
                    "parameters": params,
                    "responses": responses(&[
                        ("200", resp("A page of jobs.", Some(r("PaginatedJobList")))),
                        ("400", resp("An invalid filter value.", Some(r("ValidationError")))),
                        ("401", error("Invalid token, or no token while anonymous reads are off.")),
                        ("503", error("The caches are not synced yet.")),
                    ]),
                }),
            );
            item.insert("post".into(), json!({
                "summary": "Create a job",
                "operationId": "jobs_create",
                "parameters": [
                    query_param("start_now", "boolean", "Queue the job at once (present, or true, 1, yes). Needs the run verb too."),
                    format_param(),
                ],
                "security": writes(),
                "requestBody": { "required": true, "content": content(r("JobWrite")) },
                "responses": responses(&[
                    ("201", resp("The created job.", Some(r("Job")))),
                    ("400", resp("Invalid fields, malformed JSON, unknown project.", Some(r("ValidationError")))),
                    ("401", error("No or invalid credentials.")),
                    ("403", error("Not allowed (SubjectAccessReview: create, and run with start_now).")),
                    ("413", error("Body larger than 1 MiB.")),
                    ("415", error("Body not application/json.")),
                    ("503", error("The API server or the id allocator failed.")),
                ]),
            }));
            item.insert("head".into(), head_op(kind, json!([])));
        }
        RouteKind::Detail => {
            let write = |summary: &str, op: &str, required_fields: bool| {
                json!({
                    "summary": summary,
                    "operationId": op,
                    "parameters": [id_param(), format_param()],
                    "security": writes(),
                    "requestBody": { "required": required_fields,
                                     "content": content(r(if required_fields { "JobWrite" } else { "PatchedJobWrite" })) },
                    "responses": responses(&[
                        ("200", resp("The updated job.", Some(r("Job")))),
                        ("400", resp("Invalid fields or malformed JSON.", Some(r("ValidationError")))),
                        ("401", error("No or invalid credentials.")),
                        ("403", error("Not allowed (SubjectAccessReview: update).")),
                        ("404", error("Unknown id.")),
                        ("413", error("Body larger than 1 MiB.")),
                        ("415", error("Body not application/json.")),
                        ("503", error("The API server failed.")),
                    ]),
                })
            };
            item.insert(
                "get".into(),
                json!({
                    "summary": "Retrieve a job",
                    "operationId": "jobs_retrieve",
                    "parameters": [id_param(), logs_limit_param(), format_param()],
                    "responses": responses(&[
                        ("200", resp("The job.", Some(r("Job")))),
                        ("400", resp("Invalid logs_limit.", Some(r("ValidationError")))),
                        ("401", error("Invalid token, or no token while anonymous reads are off.")),
                        ("404", error("Unknown or non-numeric id.")),
                    ]),
                }),
            );
            item.insert(
                "put".into(),
                write(
                    "Update a job (name, delay and project_id required)",
                    "jobs_update",
                    true,
                ),
            );
            item.insert(
                "patch".into(),
                write("Update some fields of a job", "jobs_partial_update", false),
            );
            item.insert(
                "delete".into(),
                json!({
                    "summary": "Delete a job and its Pods",
                    "operationId": "jobs_destroy",
                    "parameters": [id_param()],
                    "security": writes(),
                    "responses": responses(&[
                        ("204", resp("Deleted (propagationPolicy Background).", None)),
                        ("401", error("No or invalid credentials.")),
                        ("403", error("Not allowed (SubjectAccessReview: delete).")),
                        ("404", error("Unknown id.")),
                        ("503", error("The API server failed.")),
                    ]),
                }),
            );
            item.insert("head".into(), head_op(kind, json!([id_param()])));
        }
        RouteKind::Run | RouteKind::Retry | RouteKind::Cancel => {
            item.insert("post".into(), action_op(kind));
        }
        RouteKind::Schema => {
            item.insert("get".into(), json!({
                "summary": "This document",
                "operationId": "schema_retrieve",
                "security": [{}],
                "parameters": [format_param()],
                "responses": responses(&[("200", resp("OpenAPI 3 document.", Some(json!({ "type": "object" }))))]),
            }));
            item.insert("head".into(), head_op(kind, json!([])));
        }
    }
    item.insert("options".into(), options_op(kind));
    Value::Object(item)
}

fn nullable(mut schema: Value) -> Value {
    schema["nullable"] = json!(true);
    schema
}

fn time() -> Value {
    nullable(json!({ "type": "string", "format": "date-time",
                     "example": "2024-04-30T04:18:48.365585Z" }))
}

fn state_names() -> Vec<&'static str> {
    [
        JobState::Created,
        JobState::Pending,
        JobState::Started,
        JobState::Success,
        JobState::Failure,
        JobState::Retry,
        JobState::Canceling,
        JobState::Revoked,
    ]
    .iter()
    .map(|s| s.as_str())
    .collect()
}

fn job_property(key: &str) -> Value {
    let states = state_names();
    match key {
        "id" | "delay" => json!({ "type": "integer" }),
        "details" => json!({ "type": "string", "format": "uri" }),
        "name" => json!({ "type": "string" }),
        "limit" => nullable(json!({ "type": "integer" })),
        "shuffle" => json!({ "type": "boolean" }),
        "project" => r("NestedRef"),
        "deployment" | "source_image_collection" | "source_image_single" => {
            json!({ "allOf": [r("NestedRef")], "nullable": true })
        }
        "pipeline" => json!({ "allOf": [r("PipelineRef")], "nullable": true }),
        "status" => json!({ "type": "string", "enum": states }),
        "created_at" | "updated_at" | "started_at" | "finished_at" => time(),
        "duration" => {
            nullable(json!({ "type": "string", "description": "Seconds, e.g. \"1.442684\"." }))
        }
        "progress" => r("JobProgress"),
        "logs" => r("JobLogs"),
        "job_type" => r("JobType"),
        "data_export" | "result" => nullable(json!({ "type": "object" })),
        "dispatch_mode" => json!({ "type": "string", "enum": ["internal"] }),
        "user_permissions" => json!({ "type": "array",
            "items": { "type": "string", "enum": ["update", "delete", "run"] } }),
        _ => json!({}),
    }
}

fn job_schema(with_result: bool) -> Value {
    let mut props = Map::new();
    for key in DETAIL_KEYS {
        if key == "result" && !with_result {
            continue;
        }
        props.insert(key.to_string(), job_property(key));
    }
    let required: Vec<&String> = props.keys().collect();
    json!({ "type": "object", "required": required, "properties": props })
}

fn write_schema(required: bool) -> Value {
    let keys: Vec<&str> = JobType::ALL.iter().map(|t| t.key()).collect();
    let reference =
        |what: &str| nullable(json!({ "type": "integer", "minimum": 1, "description": what }));
    let mut schema = json!({
        "type": "object",
        "description": "Numeric strings are accepted for numbers; other keys (read-only fields) are ignored.",
        "properties": {
            "name": { "type": "string", "minLength": 1, "maxLength": NAME_MAX_CHARS },
            "delay": { "type": "integer", "minimum": 0, "maximum": DELAY_MAX },
            "limit": nullable(json!({ "type": "integer", "minimum": 1 })),
            "shuffle": { "type": "boolean", "default": true },
            "project_id": { "type": "integer", "minimum": 1,
                            "description": "On update: only the job's own project." },
            "deployment_id": reference("Deployment id."),
            "source_image_collection_id": reference("Capture set id."),
            "source_image_single_id": reference("Capture id."),
            "pipeline_id": reference("Pipeline id."),
            "job_type_key": { "type": "string", "enum": keys, "default": "ml" },
        },
    });
    if required {
        schema["required"] = json!(["name", "delay", "project_id"]);
    }
    schema
}

/// The document, with `base` (the public base URL) as its server.
pub fn document(base: &str) -> Value {
    let mut paths = Map::new();
    for kind in RouteKind::ALL {
        paths.insert(kind.path().to_string(), path_item(kind));
    }
    let states = state_names();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Antenna jobs API (antenna-operator)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The /api/v2/jobs/ API of the insect-monitoring platform, served by antenna-operator from CaptureJob objects. Reads may be anonymous; writes need `Authorization: Token <t>` or `Bearer <t>` (a Kubernetes token) and RBAC on capturejobs.antenna.insectai.org (verbs create, update, delete, run, cancel).",
        },
        "servers": [{ "url": base }],
        "security": [{}, { "tokenAuth": [] }, { "bearerAuth": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "tokenAuth": { "type": "apiKey", "in": "header", "name": "Authorization",
                               "description": "`Token <kubernetes token>`" },
                "bearerAuth": { "type": "http", "scheme": "bearer" },
            },
            "schemas": {
                "Job": job_schema(true),
                "JobListItem": job_schema(false),
                "JobIdsOnly": {
                    "type": "object",
                    "required": ["id", "pipeline_slug", "user_permissions"],
                    "properties": {
                        "id": { "type": "integer" },
                        "pipeline_slug": nullable(json!({ "type": "string" })),
                        "user_permissions": job_property("user_permissions"),
                    },
                },
                "PaginatedJobList": {
                    "type": "object",
                    "required": ["count", "next", "previous", "results", "user_permissions"],
                    "properties": {
                        "count": { "type": "integer" },
                        "next": nullable(json!({ "type": "string", "format": "uri" })),
                        "previous": nullable(json!({ "type": "string", "format": "uri" })),
                        "results": { "type": "array", "items": { "oneOf": [r("JobListItem"), r("JobIdsOnly")] } },
                        "user_permissions": { "type": "array", "items": { "type": "string", "enum": ["create"] } },
                    },
                },
                "JobWrite": write_schema(true),
                "PatchedJobWrite": write_schema(false),
                "NestedRef": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "integer" },
                        "name": nullable(json!({ "type": "string" })),
                        "details": { "type": "string", "format": "uri" },
                        "user_permissions": { "type": "array", "items": { "type": "string" } },
                    },
                },
                "PipelineRef": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "integer" },
                        "name": nullable(json!({ "type": "string" })),
                        "slug": nullable(json!({ "type": "string" })),
                        "details": { "type": "string", "format": "uri" },
                        "user_permissions": { "type": "array", "items": { "type": "string" } },
                    },
                },
                "JobProgress": {
                    "type": "object",
                    "properties": {
                        "summary": {
                            "type": "object",
                            "properties": {
                                "status": { "type": "string", "enum": states },
                                "progress": { "type": "number", "minimum": 0, "maximum": 1 },
                            },
                        },
                        "stages": { "type": "array", "items": r("Stage") },
                        "errors": { "type": "array", "items": { "type": "string" } },
                        "logs": { "type": "array", "items": { "type": "string" } },
                    },
                },
                "Stage": {
                    "type": "object",
                    "properties": {
                        "status": { "type": "string", "enum": states },
                        "progress": { "type": "number", "minimum": 0, "maximum": 1 },
                        "key": { "type": "string" },
                        "name": { "type": "string" },
                        "params": { "type": "array", "items": r("StageParam") },
                    },
                },
                "StageParam": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "key": { "type": "string" },
                        "category": { "type": "string", "enum": ["default"] },
                        "value": { "description": "A number, a string, or \"\" while unknown." },
                    },
                },
                "JobLogs": {
                    "type": "object",
                    "properties": {
                        "stdout": { "type": "array", "items": { "type": "string" } },
                        "stderr": { "type": "array", "items": { "type": "string" } },
                    },
                },
                "JobType": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "key": { "type": "string", "enum": JobType::ALL.iter().map(|t| t.key()).collect::<Vec<_>>() },
                    },
                },
                "Options": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "description": { "type": "string" },
                        "renders": { "type": "array", "items": { "type": "string" } },
                        "parses": { "type": "array", "items": { "type": "string" } },
                    },
                },
                "ErrorDetail": {
                    "type": "object",
                    "required": ["detail"],
                    "properties": { "detail": { "type": "string" } },
                },
                "ValidationError": {
                    "type": "object",
                    "description": "Field name (or detail, or non_field_errors) to messages.",
                    "additionalProperties": {
                        "oneOf": [{ "type": "array", "items": { "type": "string" } }, { "type": "string" }],
                    },
                },
            },
        },
    })
}
