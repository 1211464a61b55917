//! The one error type of the facade: every failure a handler can meet, each mapped to the
//! status code and the Django REST Framework-shaped body the old API answered with.

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// Field errors in the DRF shape: `{"field": ["message", ...], ...}`, in insertion order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldErrors(Map<String, Value>);

impl FieldErrors {
    /// No errors yet.
    pub fn new() -> Self {
        FieldErrors(Map::new())
    }

    /// Adds `message` to the list of `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        let entry = self
            .0
            .entry(field.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(Value::String(message.into()));
        }
    }

    /// Whether no field has an error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields with errors, in the order they were added.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// `Ok(())` when empty, else the 400 error.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self))
        }
    }

    /// The JSON body.
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

/// Everything that can go wrong in a request, as the client sees it. Never a 500: failures of
/// the API server or of the id allocator are 503 (retryable), conflicts 409.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 404 `{"detail": "Not found."}`: unknown or non-numeric id, unknown route, bad `format`.
    #[error("not found")]
    NotFound,
    /// 405 `{"detail": "Method \"X\" not allowed."}` with the `Allow` header of the route.
    #[error("method {0} not allowed")]
    MethodNotAllowed(Method, &'static str),
    /// 401 `{"detail": "Authentication credentials were not provided."}`.
    #[error("not authenticated")]
    NotAuthenticated,
    /// 401 with the given detail (`Invalid token.` or a malformed-header message).
    #[error("authentication failed: {0}")]
    AuthenticationFailed(&'static str),
    /// 403 `{"detail": "You do not have permission to perform this action."}`.
    #[error("permission denied")]
    PermissionDenied,
    /// 400 with field errors.
    #[error("invalid input")]
    Validation(FieldErrors),
    /// 400 `{"detail": "JSON parse error - ..."}`.
    #[error("JSON parse error - {0}")]
    ParseError(String),
    /// 415 `{"detail": "Unsupported media type \"x\" in request."}`.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// 413: the body is larger than the limit (bytes).
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 400 `{"detail": ...}`: the API server refused the object (its schema validation).
    #[error("rejected by the API server: {0}")]
    Rejected(String),
    /// 409 `{"detail": ...}`: a conflicting write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 503 `{"detail": "Service temporarily unavailable, try again later."}`: caches not yet
    /// synced, or the API server (or the id allocator) failed. The cause is logged, not shown.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(..) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAuthenticated | ApiError::AuthenticationFailed(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::PermissionDenied => StatusCode::FORBIDDEN,
            ApiError::Validation(_) | ApiError::ParseError(_) | ApiError::Rejected(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The DRF-shaped JSON body.
    pub fn body(&self) -> Value {
        let detail = |s: String| json!({ "detail": s });
        match self {
            ApiError::NotFound => detail("Not found.".into()),
            ApiError::MethodNotAllowed(m, _) => detail(format!("Method \"{m}\" not allowed.")),
            ApiError::NotAuthenticated => {
                detail("Authentication credentials were not provided.".into())
            }
            ApiError::AuthenticationFailed(msg) => detail((*msg).into()),
            ApiError::PermissionDenied => {
                detail("You do not have permission to perform this action.".into())
            }
            ApiError::Validation(errors) => errors.to_value(),
            ApiError::ParseError(msg) => detail(format!("JSON parse error - {msg}")),
            ApiError::UnsupportedMediaType(ct) => {
                detail(format!("Unsupported media type \"{ct}\" in request."))
            }
            ApiError::PayloadTooLarge(limit) => detail(format!(
                "Request body is larger than the limit of {limit} bytes."
            )),
            ApiError::Rejected(msg) | ApiError::Conflict(msg) => detail(msg.clone()),
            ApiError::Unavailable(_) => {
                detail("Service temporarily unavailable, try again later.".into())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Unavailable(cause) = &self {
            tracing::warn!(%cause, "request failed: service unavailable");
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::MethodNotAllowed(_, allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::NotAuthenticated | ApiError::AuthenticationFailed(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        ApiError::Validation(errors)
    }
}
