//! antenna-operator: runs the batch jobs of an insect-monitoring platform as CaptureJob
//! objects on Kubernetes and serves them at the old `/api/v2/jobs/` REST view.

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
