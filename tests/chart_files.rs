//! Checks of the Helm chart's files that need no cluster and no helm binary: the chart's
//! CRD is the generated one, every value is declared in the schema and documented, and
//! the chart deploys the crate's version.
//!
//! After changing the CRD types, `ANTENNA_BLESS_CRD=1 cargo test --test chart_files`
//! rewrites both CRD files from the types.

use std::path::{Path, PathBuf};

use serde_json::Value;

const CRD_FILE: &str = "capturejobs.antenna.insectai.org.yaml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/antenna-operator")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml_file(path: &Path) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

#[test]
fn chart_crd_is_the_generated_crd() {
    let generated = antenna_operator::crd_yaml();
    let repo_copy = repo().join("crds").join(CRD_FILE);
    let chart_copy = chart().join("crds").join(CRD_FILE);
    if std::env::var_os("ANTENNA_BLESS_CRD").is_some() {
        std::fs::write(&repo_copy, &generated).expect("writing crds/");
        std::fs::write(&chart_copy, &generated).expect("writing the chart's crds/");
    }
    let fix = format!(
        "regenerate both copies: `cargo run -q -- crd > crds/{CRD_FILE} && cp crds/{CRD_FILE} \
         charts/antenna-operator/crds/` (or ANTENNA_BLESS_CRD=1 cargo test --test chart_files)"
    );
    let repo_bytes = read(&repo_copy);
    let chart_bytes = read(&chart_copy);
    assert!(
        repo_bytes == generated,
        "crds/{CRD_FILE} differs from the CRD generated from the Rust types; {fix}"
    );
    assert!(
        chart_bytes == repo_bytes,
        "charts/antenna-operator/crds/{CRD_FILE} differs from crds/{CRD_FILE}; {fix}"
    );
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart_yaml = yaml_file(&chart().join("Chart.yaml"));
    assert_eq!(
        chart_yaml["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "Chart.yaml appVersion must equal the version in Cargo.toml (the default image tag)"
    );
    assert_eq!(chart_yaml["name"].as_str(), Some("antenna-operator"));
}

/// Values whose defaults are maps but that are passed through to Kubernetes whole (their
/// keys are Kubernetes fields, not chart settings).
const PASS_THROUGH: &[&str] = &["resources", "podSecurityContext", "securityContext"];

/// Dotted paths of the chart's settings in values.yaml: leaves, empty maps, lists and the
/// pass-through objects.
fn value_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() && !PASS_THROUGH.contains(&prefix) => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                value_paths(child, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

fn values_paths() -> Vec<String> {
    let values = yaml_file(&chart().join("values.yaml"));
    let mut paths = Vec::new();
    value_paths(&values, "", &mut paths);
    assert!(paths.len() > 40, "values.yaml looks truncated: {paths:?}");
    paths
}

/// The schema node that declares `path`, following `properties`.
fn schema_node<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(schema, |node, key| node.get("properties")?.get(key))
}

fn schema_types(node: &Value) -> Vec<&str> {
    match &node["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => node["anyOf"]
            .as_array()
            .map(|alts| alts.iter().flat_map(schema_types).collect())
            .unwrap_or_default(),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[test]
fn every_value_is_declared_in_the_schema_with_its_type() {
    let schema: Value = serde_json::from_str(&read(&chart().join("values.schema.json")))
        .expect("values.schema.json is JSON");
    assert_eq!(
        schema["additionalProperties"],
        Value::Bool(false),
        "the schema must refuse unknown top-level keys (typos)"
    );
    let values = yaml_file(&chart().join("values.yaml"));
    for path in values_paths() {
        let node = schema_node(&schema, &path)
            .unwrap_or_else(|| panic!("values.yaml key {path} is not in values.schema.json"));
        let default = path.split('.').fold(&values, |node, key| &node[key]);
        let types = schema_types(node);
        assert!(
            types.contains(&json_type(default)),
            "{path}: the default {default} is a {} but the schema allows {types:?}",
            json_type(default)
        );
    }
}

#[test]
fn every_value_is_documented() {
    let docs = read(&repo().join("docs/chart.md"));
    let missing: Vec<String> = values_paths()
        .into_iter()
        .filter(|path| !docs.contains(&format!("| `{path}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "values missing from the table in docs/chart.md: {missing:?}"
    );
}

#[test]
fn schema_refuses_a_negative_replica_count() {
    let schema: Value = serde_json::from_str(&read(&chart().join("values.schema.json")))
        .expect("values.schema.json is JSON");
    let replicas = &schema["properties"]["replicaCount"];
    assert_eq!(replicas["type"], "integer");
    assert_eq!(replicas["minimum"], 0);
}
