//! The readable HTML view (`?format=api`, browsers): the same JSON, pretty-printed in a page,
//! with every URL a link, so a person can click through jobs.

use std::fmt::Write;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method};
use axum::response::Response;
use serde_json::Value;

use super::query::Query;
use super::RouteKind;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// Pretty-prints `v` (4-space indent, keys in order) as HTML, http(s) URLs as links.
pub fn json_html(v: &Value, indent: usize, out: &mut String) {
    let pad = |n: usize| " ".repeat(n * 4);
    match v {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            let last = map.len() - 1;
            for (i, (k, val)) in map.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str("<span class=\"key\">");
                out.push_str(&escape(&json_string(k)));
                out.push_str("</span>: ");
                json_html(val, indent + 1, out);
                out.push_str(if i == last { "\n" } else { ",\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            let last = items.len() - 1;
            for (i, val) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                json_html(val, indent + 1, out);
                out.push_str(if i == last { "\n" } else { ",\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
            let _ = write!(
                out,
                "<a href=\"{}\">{}</a>",
                escape(s),
                escape(&json_string(s))
            );
        }
        Value::String(s) => {
            out.push_str("<span class=\"str\">");
            out.push_str(&escape(&json_string(s)));
            out.push_str("</span>");
        }
        other => out.push_str(&escape(&other.to_string())),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.4em}pre{background:#f6f8fa;padding:1em;overflow-x:auto;\
font-size:13px;line-height:1.4}.key{color:#0550ae}.str{color:#0a3069}\
.req{color:#555}a{color:#8250df}";

/// The page of a response: heading, request line, status and headers, the pretty JSON.
pub fn page(
    title: &str,
    method: &Method,
    path: &str,
    q: &Query,
    status_line: &str,
    headers: &[(&str, String)],
    body: Option<&Value>,
) -> String {
    let query = q.with_value("format", Some("api"));
    let json_link = format!("{path}?{}", q.with_value("format", Some("json")));
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"robots\" content=\"NONE,NOARCHIVE\">\
         <title>{title} – Antenna jobs API</title><style>{STYLE}</style></head><body>\
         <h1>{title}</h1><p class=\"req\"><b>{method}</b> {path}?{query} · \
         <a href=\"{json}\">json</a></p><pre><b>HTTP {status}</b>\n",
        title = escape(title),
        method = escape(method.as_str()),
        path = escape(path),
        query = escape(&query),
        json = escape(&json_link),
        status = escape(status_line),
    );
    for (name, value) in headers {
        let _ = writeln!(out, "<b>{}:</b> {}", escape(name), escape(value));
    }
    if let Some(body) = body {
        out.push('\n');
        json_html(body, 0, &mut out);
    }
    out.push_str("</pre></body></html>\n");
    out
}

/// Turns a JSON response into its page (other responses pass unchanged).
pub async fn into_page(
    response: Response,
    method: &Method,
    path: &str,
    q: &Query,
    kind: Option<RouteKind>,
) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return Response::from_parts(parts, Body::empty()),
    };
    let value: Option<Value> = serde_json::from_slice(&bytes).ok();
    let status = parts.status;
    let status_line = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut shown: Vec<(&str, String)> = Vec::new();
    for (label, name) in [
        ("Allow", header::ALLOW),
        ("Content-Type", header::CONTENT_TYPE),
        ("Vary", header::VARY),
    ] {
        if let Some(v) = parts.headers.get(&name).and_then(|v| v.to_str().ok()) {
            shown.push((label, v.to_string()));
        }
    }
    let title = kind.map_or("Antenna API", RouteKind::title);
    let html = page(title, method, path, q, &status_line, &shown, value.as_ref());
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(html))
}
