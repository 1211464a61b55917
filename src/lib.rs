//! antenna-operator: runs the batch jobs of an insect-monitoring platform as CaptureJob
//! objects on Kubernetes and serves them at the old `/api/v2/jobs/` REST view.

pub mod api;
pub mod controller;
pub mod crd;
pub mod health;
pub mod ids;
pub mod leader;
pub mod metrics;
pub mod telemetry;
pub mod worker;

/// The CRD YAML, as `antenna-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = crd::CaptureJob::crd();
    serde_yaml::to_string(&crd).expect("CRD serializes")
}

#[cfg(test)]
mod tests {
    /// `kubectl explain capturejob.spec` shows a description for every field.
    #[test]
    fn every_spec_field_has_a_description() {
        let crd: serde_json::Value = serde_yaml::from_str(&super::crd_yaml()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut missing = vec![];
        fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>, depth: usize) {
            if let Some(props) = v["properties"].as_object() {
                for (k, p) in props {
                    let here = format!("{path}.{k}");
                    if p["description"]
                        .as_str()
                        .is_none_or(|d| d.trim().is_empty())
                    {
                        missing.push(here.clone());
                    }
                    // Our own types fully; Kubernetes' own types (template.*) as k8s-openapi documents them.
                    if depth < 2 {
                        walk(&here, p, missing, depth + 1);
                    }
                }
            }
        }
        walk("spec", spec, &mut missing, 0);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }

    #[test]
    fn committed_crd_is_the_generated_one() {
        let committed = include_str!("../crds/capturejobs.antenna.insectai.org.yaml");
        assert!(
            committed == super::crd_yaml(),
            "crds/ is stale: run `cargo run -q -- crd > crds/capturejobs.antenna.insectai.org.yaml` and copy it to charts/antenna-operator/crds/"
        );
    }
}
