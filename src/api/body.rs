//! Request bodies of create and update: media type, JSON parsing, and field validation with
//! the old API's (DRF's) messages, all pure.

use serde_json::{json, Map, Value};

use super::error::{ApiError, FieldErrors};
use crate::crd::{CaptureJobSpec, JobType};

/// Largest accepted `delay` (the CRD's bound): one week.
pub const DELAY_MAX: i64 = 604_800;
/// Largest `limit` (as the CRD's schema allows).
pub const LIMIT_MAX: i64 = 1_000_000_000;
/// Largest accepted `name`, in characters.
pub const NAME_MAX_CHARS: usize = 255;

/// The writable fields of the body, in the order errors are reported.
pub const WRITABLE_FIELDS: [&str; 10] = [
    "name",
    "delay",
    "limit",
    "shuffle",
    "project_id",
    "deployment_id",
    "source_image_collection_id",
    "source_image_single_id",
    "pipeline_id",
    "job_type_key",
];

const REQUIRED: &str = "This field is required.";
const NOT_NULL: &str = "This field may not be null.";
const BAD_INT: &str = "A valid integer is required.";
const BAD_BOOL: &str = "Must be a valid boolean.";

/// Parses a body: empty means `{}`; otherwise it must be `application/json` (any parameters,
/// e.g. charset) and a JSON object.
pub fn parse_json_object(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let ct = content_type.unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType(ct.to_string()));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::ParseError(e.to_string()))?;
    match value {
        Value::Object(map) => Ok(map),
        other => {
            let kind = match other {
                Value::Array(_) => "list",
                Value::String(_) => "str",
                Value::Bool(_) => "bool",
                Value::Number(n) if n.is_f64() => "float",
                Value::Number(_) => "int",
                _ => "NoneType",
            };
            let mut errors = FieldErrors::new();
            errors.add(
                "non_field_errors",
                format!("Invalid data. Expected a dictionary, but got {kind}."),
            );
            Err(ApiError::Validation(errors))
        }
    }
}

/// An integer the way DRF's IntegerField reads it: a JSON integer, a float with no fraction,
/// or a string holding one (`"5"`, `" 5 "`, `"+5"`, `"5.0"`). Booleans are not integers.
pub fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => parse_int_str(s),
        _ => None,
    }
}

/// `"5"`, `" 5 "`, `"+5"`, `"-5"`, `"5.0"`, `"5."` → 5; anything else `None`.
pub fn parse_int_str(s: &str) -> Option<i64> {
    let t = s.trim();
    let t = match t.find('.') {
        Some(dot) if t[dot + 1..].bytes().all(|b| b == b'0') => &t[..dot],
        Some(_) => return None,
        None => t,
    };
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.strip_prefix('+').unwrap_or(t).parse().ok()
}

/// A boolean the way DRF's BooleanField reads it.
pub fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(_) => match integer(v) {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.as_str() {
            "t" | "T" | "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on"
            | "On" | "ON" | "1" => Some(true),
            "f" | "F" | "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off"
            | "Off" | "OFF" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The Python type name DRF puts in "Incorrect type" messages.
fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// How a value is shown inside DRF messages (`"foo"` → `foo`, `5` → `5`).
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// The validated writable fields. `None` = not given; for nullable fields `Some(None)` = null.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobInput {
    /// `name`.
    pub name: Option<String>,
    /// `delay`.
    pub delay: Option<i64>,
    /// `limit` (null = no cap).
    pub limit: Option<Option<i64>>,
    /// `shuffle`.
    pub shuffle: Option<bool>,
    /// `project_id`.
    pub project_id: Option<i64>,
    /// `deployment_id`.
    pub deployment_id: Option<Option<i64>>,
    /// `source_image_collection_id`.
    pub source_image_collection_id: Option<Option<i64>>,
    /// `source_image_single_id`.
    pub source_image_single_id: Option<Option<i64>>,
    /// `pipeline_id`.
    pub pipeline_id: Option<Option<i64>>,
    /// `job_type_key`.
    pub job_type: Option<JobType>,
}

fn pk(field: &str, v: &Value, nullable: bool, errors: &mut FieldErrors) -> Option<Option<i64>> {
    if v.is_null() {
        if nullable {
            return Some(None);
        }
        errors.add(field, NOT_NULL);
        return None;
    }
    let id = match v {
        Value::Number(_) | Value::String(_) => integer(v),
        _ => None,
    };
    match id {
        Some(id) if id >= 1 => Some(Some(id)),
        Some(id) => {
            errors.add(
                field,
                format!("Invalid pk \"{id}\" - object does not exist."),
            );
            None
        }
        None => {
            errors.add(
                field,
                format!(
                    "Incorrect type. Expected pk value, received {}.",
                    py_type(v)
                ),
            );
            None
        }
    }
}

fn int_field(
    field: &str,
    v: &Value,
    min: i64,
    max: Option<i64>,
    errors: &mut FieldErrors,
) -> Option<i64> {
    match integer(v) {
        None => {
            errors.add(field, BAD_INT);
            None
        }
        Some(n) if n < min => {
            errors.add(
                field,
                format!("Ensure this value is greater than or equal to {min}."),
            );
            None
        }
        Some(n) if max.is_some_and(|m| n > m) => {
            errors.add(
                field,
                format!(
                    "Ensure this value is less than or equal to {}.",
                    max.unwrap_or(n)
                ),
            );
            None
        }
        Some(n) => Some(n),
    }
}

/// Validates the writable fields of `body`. `partial` (PATCH) makes every field optional;
/// otherwise (POST, PUT) `name`, `delay` and `project_id` are required. Unknown and read-only
/// keys are ignored. Returns the valid fields and every error (so that the caller can add its
/// own, e.g. an unknown project, and report all at once).
pub fn validate(body: &Map<String, Value>, partial: bool) -> (JobInput, FieldErrors) {
    let mut errors = FieldErrors::new();
    let mut input = JobInput::default();
    let required = |field: &str, errors: &mut FieldErrors| {
        if !partial && !body.contains_key(field) {
            errors.add(field, REQUIRED);
        }
    };

    required("name", &mut errors);
    if let Some(v) = body.get("name") {
        let text = match v {
            Value::String(s) => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::Null => {
                errors.add("name", NOT_NULL);
                None
            }
            _ => {
                errors.add("name", "Not a valid string.");
                None
            }
        };
        match text {
            Some(t) if t.is_empty() => errors.add("name", "This field may not be blank."),
            Some(t) if t.chars().count() > NAME_MAX_CHARS => errors.add(
                "name",
                format!("Ensure this field has no more than {NAME_MAX_CHARS} characters."),
            ),
            Some(t) => input.name = Some(t),
            None => {}
        }
    }

    required("delay", &mut errors);
    if let Some(v) = body.get("delay") {
        if v.is_null() {
            errors.add("delay", NOT_NULL);
        } else {
            input.delay = int_field("delay", v, 0, Some(DELAY_MAX), &mut errors);
        }
    }

    if let Some(v) = body.get("limit") {
        if v.is_null() {
            input.limit = Some(None);
        } else if let Some(n) = int_field("limit", v, 1, Some(LIMIT_MAX), &mut errors) {
            input.limit = Some(Some(n));
        }
    }

    if let Some(v) = body.get("shuffle") {
        if v.is_null() {
            errors.add("shuffle", NOT_NULL);
        } else {
            match boolean(v) {
                Some(b) => input.shuffle = Some(b),
                None => errors.add("shuffle", BAD_BOOL),
            }
        }
    }

    required("project_id", &mut errors);
    if let Some(v) = body.get("project_id") {
        input.project_id = pk("project_id", v, false, &mut errors).flatten();
    }
    if let Some(v) = body.get("deployment_id") {
        input.deployment_id = pk("deployment_id", v, true, &mut errors);
    }
    if let Some(v) = body.get("source_image_collection_id") {
        input.source_image_collection_id = pk("source_image_collection_id", v, true, &mut errors);
    }
    if let Some(v) = body.get("source_image_single_id") {
        input.source_image_single_id = pk("source_image_single_id", v, true, &mut errors);
    }
    if let Some(v) = body.get("pipeline_id") {
        input.pipeline_id = pk("pipeline_id", v, true, &mut errors);
    }

    if let Some(v) = body.get("job_type_key") {
        match v {
            Value::Null => errors.add("job_type_key", NOT_NULL),
            Value::String(s) => match JobType::from_key(s.trim()) {
                Some(t) => input.job_type = Some(t),
                None => errors.add(
                    "job_type_key",
                    format!("\"{}\" is not a valid choice.", shown(v)),
                ),
            },
            other => errors.add(
                "job_type_key",
                format!("\"{}\" is not a valid choice.", shown(other)),
            ),
        }
    }

    (input, errors)
}

/// The JSON merge patch of `spec` that applies `input` to `current`: only fields whose value
/// changes. A reference whose id changes is replaced whole (its name and slug are cleared, as
/// the facade does not know them); `null` removes it. `project_id` is not part of it (see the
/// update handler).
pub fn spec_patch(current: &CaptureJobSpec, input: &JobInput) -> Map<String, Value> {
    let mut patch = Map::new();
    if let Some(name) = &input.name {
        if *name != current.name {
            patch.insert("name".into(), json!(name));
        }
    }
    if let Some(delay) = input.delay {
        if delay != current.delay {
            patch.insert("delay".into(), json!(delay));
        }
    }
    if let Some(limit) = input.limit {
        if limit != current.limit {
            patch.insert("limit".into(), json!(limit));
        }
    }
    if let Some(shuffle) = input.shuffle {
        if shuffle != current.shuffle {
            patch.insert("shuffle".into(), json!(shuffle));
        }
    }
    if let Some(t) = input.job_type {
        if t != current.job_type {
            patch.insert("jobType".into(), json!(t.key()));
        }
    }
    let mut reference =
        |key: &str, wanted: Option<Option<i64>>, have: Option<i64>, pipeline: bool| match wanted {
            Some(w) if w != have => {
                let v = match w {
                    None => Value::Null,
                    Some(id) if pipeline => json!({ "id": id, "name": null, "slug": null }),
                    Some(id) => json!({ "id": id, "name": null }),
                };
                patch.insert(key.into(), v);
            }
            _ => {}
        };
    reference(
        "deployment",
        input.deployment_id,
        current.deployment.as_ref().map(|r| r.id),
        false,
    );
    reference(
        "sourceImageCollection",
        input.source_image_collection_id,
        current.source_image_collection.as_ref().map(|r| r.id),
        false,
    );
    reference(
        "sourceImageSingle",
        input.source_image_single_id,
        current.source_image_single.as_ref().map(|r| r.id),
        false,
    );
    reference(
        "pipeline",
        input.pipeline_id,
        current.pipeline.as_ref().map(|r| r.id),
        true,
    );
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_drf_reads_them() {
        assert_eq!(integer(&json!(5)), Some(5));
        assert_eq!(integer(&json!("5")), Some(5));
        assert_eq!(integer(&json!(" +5 ")), Some(5));
        assert_eq!(integer(&json!("-5")), Some(-5));
        assert_eq!(integer(&json!(5.0)), Some(5));
        assert_eq!(integer(&json!("5.00")), Some(5));
        assert_eq!(integer(&json!(5.5)), None);
        assert_eq!(integer(&json!("5.5")), None);
        assert_eq!(integer(&json!("abc")), None);
        assert_eq!(integer(&json!("")), None);
        assert_eq!(integer(&json!("+")), None);
        assert_eq!(integer(&json!(true)), None);
        assert_eq!(integer(&json!("99999999999999999999")), None);
        assert_eq!(integer(&json!(1e300)), None);
    }

    #[test]
    fn booleans_as_drf_reads_them() {
        assert_eq!(boolean(&json!(true)), Some(true));
        assert_eq!(boolean(&json!("false")), Some(false));
        assert_eq!(boolean(&json!(1)), Some(true));
        assert_eq!(boolean(&json!("yes")), Some(true));
        assert_eq!(boolean(&json!("maybe")), None);
        assert_eq!(boolean(&json!(2)), None);
    }

    #[test]
    fn media_types() {
        assert!(parse_json_object(Some("application/json; charset=utf-8"), b"{}").is_ok());
        assert!(parse_json_object(None, b"  ").is_ok());
        assert_eq!(
            parse_json_object(Some("text/plain"), b"name=x"),
            Err(ApiError::UnsupportedMediaType("text/plain".into()))
        );
        assert_eq!(
            parse_json_object(None, b"{}"),
            Err(ApiError::UnsupportedMediaType(String::new()))
        );
    }
}
