//! Pure functions between CaptureJobs and their Pods: what a Pod tells us (`observe`) and
//! the Pod of a unit of work (`build_pod`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, Pod, PodSecurityContext, PodSpec, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::{
    CaptureJob, LABEL_ATTEMPT, LABEL_ID, LABEL_MANAGED_BY, LABEL_STAGE, LABEL_TRY, LABEL_UNIT,
    MANAGER,
};

/// What the controller needs to know of one of a job's Pods.
#[derive(Clone, Debug, PartialEq)]
pub struct PodObs {
    /// Pod name.
    pub name: String,
    /// Attempt label.
    pub attempt: i64,
    /// Stage key (with `_`).
    pub stage: String,
    /// Unit label: `d`, `s` or the batch index.
    pub unit: String,
    /// Try label (1-based).
    pub try_no: i32,
    /// Phase.
    pub phase: PodPhase,
    /// When the Pod was created.
    pub created: Option<k8s_openapi::jiff::Timestamp>,
    /// The Pod is being deleted.
    pub deleting: bool,
    /// Exit code of the worker container, once terminated.
    pub exit_code: Option<i32>,
    /// Termination message of the worker container (its result), once terminated.
    pub message: Option<String>,
    /// Why the Pod waits: the scheduler's message, or a container's waiting reason.
    pub waiting: Option<String>,
    /// The scheduler said the Pod fits no node.
    pub unschedulable: bool,
}

/// A Pod's phase as far as the controller cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    /// Not running yet.
    Pending,
    /// Running.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero or was failed by the kubelet.
    Failed,
}

/// Reads a Pod of ours; `None` when its labels are not the operator's (never ours to act on).
pub fn observe(pod: &Pod) -> Option<PodObs> {
    let labels = pod.metadata.labels.as_ref()?;
    let attempt = labels.get(LABEL_ATTEMPT)?.parse().ok()?;
    let stage = labels.get(LABEL_STAGE)?.replace('-', "_");
    let unit = labels.get(LABEL_UNIT)?.clone();
    let try_no = labels.get(LABEL_TRY)?.parse().ok()?;
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        _ => PodPhase::Pending,
    };
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.name == WORKER_CONTAINER)
                .or(cs.first())
        })
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let mut waiting = None;
    let mut unschedulable = false;
    if let Some(cond) = status.and_then(|s| s.conditions.as_ref()).and_then(|cs| {
        cs.iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    }) {
        unschedulable = cond.reason.as_deref() == Some("Unschedulable");
        waiting = cond.message.clone().or_else(|| cond.reason.clone());
    }
    if waiting.is_none() {
        waiting = status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
            .find_map(|w| {
                let reason = w.reason.clone()?;
                Some(match &w.message {
                    Some(m) => format!("{reason}: {m}"),
                    None => reason,
                })
            });
    }
    if waiting.is_none() && phase == PodPhase::Failed {
        waiting = status.and_then(|s| s.message.clone());
    }
    Some(PodObs {
        name: pod.name_any(),
        attempt,
        stage,
        unit,
        try_no,
        phase,
        created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        exit_code: terminated.map(|t| t.exit_code),
        message: terminated.and_then(|t| t.message.clone()),
        waiting,
        unschedulable,
    })
}

/// Name of the container that runs the work.
pub const WORKER_CONTAINER: &str = "worker";

/// What a unit of work does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reports the number of captures.
    Discover,
    /// Does a whole stage.
    Single,
    /// Does one slice of the captures.
    Batch,
}

impl Mode {
    /// The value of `ANTENNA_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Discover => "discover",
            Mode::Single => "single",
            Mode::Batch => "batch",
        }
    }
}

/// A Pod the plan asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRequest {
    /// Attempt.
    pub attempt: i64,
    /// Stage key.
    pub stage: String,
    /// Unit: `d`, `s` or the batch index.
    pub unit: String,
    /// Try (1-based).
    pub try_no: i32,
    /// What the Pod does.
    pub mode: Mode,
    /// First capture of its slice.
    pub offset: i64,
    /// Captures in its slice.
    pub count: i64,
    /// Captures in the attempt, when known.
    pub total: Option<i64>,
    /// Shuffle seed of the attempt.
    pub seed: i64,
}

/// Operator-wide defaults for Pods.
#[derive(Clone, Debug)]
pub struct PodDefaults {
    /// Image of the worker container.
    pub image: String,
    /// Command of the worker container.
    pub command: Vec<String>,
    /// Image pull policy, if set.
    pub pull_policy: Option<String>,
}

impl Default for PodDefaults {
    fn default() -> Self {
        PodDefaults {
            image: "ghcr.io/antenna/antenna-operator:latest".into(),
            command: vec!["antenna-operator".into(), "worker".into()],
            pull_policy: None,
        }
    }
}

/// The deterministic Pod name of a unit's try: `cj<id>-a<attempt>-<stage>-<unit>-t<try>`,
/// at most 63 characters.
pub fn pod_name(id: i64, req: &PodRequest) -> String {
    let stage = req.stage.replace('_', "-");
    let name = format!(
        "cj{id}-a{}-{stage}-{}-t{}",
        req.attempt, req.unit, req.try_no
    );
    if name.len() <= 63 {
        return name;
    }
    // Only reachable with absurd attempt/try numbers: shorten the stage part.
    let short: String = stage.chars().take(8).collect();
    format!(
        "cj{id}-a{}-{short}-{}-t{}",
        req.attempt, req.unit, req.try_no
    )
    .chars()
    .take(63)
    .collect()
}

/// The Pod for a unit's try of `job` (which must have an id).
pub fn build_pod(job: &CaptureJob, id: i64, req: &PodRequest, defaults: &PodDefaults) -> Pod {
    let spec = &job.spec;
    let tpl = spec.template.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = tpl.labels.clone().unwrap_or_default();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
    labels.insert(LABEL_ID.into(), id.to_string());
    labels.insert(LABEL_ATTEMPT.into(), req.attempt.to_string());
    labels.insert(LABEL_STAGE.into(), req.stage.replace('_', "-"));
    labels.insert(LABEL_UNIT.into(), req.unit.clone());
    labels.insert(LABEL_TRY.into(), req.try_no.to_string());

    let mut task: Vec<(&str, String)> = vec![
        ("ANTENNA_JOB_ID", id.to_string()),
        ("ANTENNA_JOB_NAME", spec.name.clone()),
        ("ANTENNA_JOB_TYPE", spec.job_type.key().to_string()),
        ("ANTENNA_ATTEMPT", req.attempt.to_string()),
        ("ANTENNA_TRY", req.try_no.to_string()),
        ("ANTENNA_STAGE", req.stage.clone()),
        ("ANTENNA_MODE", req.mode.as_str().to_string()),
        ("ANTENNA_UNIT", req.unit.clone()),
        ("ANTENNA_OFFSET", req.offset.to_string()),
        ("ANTENNA_COUNT", req.count.to_string()),
        ("ANTENNA_SHUFFLE", spec.shuffle.to_string()),
        ("ANTENNA_SEED", req.seed.to_string()),
        ("ANTENNA_PROJECT_ID", spec.project.id.to_string()),
    ];
    if let Some(t) = req.total {
        task.push(("ANTENNA_TOTAL", t.to_string()));
    }
    if let Some(l) = spec.limit {
        task.push(("ANTENNA_LIMIT", l.to_string()));
    }
    if req.stage == "delay" {
        task.push(("ANTENNA_DELAY", spec.delay.to_string()));
    }
    if let Some(d) = &spec.deployment {
        task.push(("ANTENNA_DEPLOYMENT_ID", d.id.to_string()));
    }
    if let Some(c) = &spec.source_image_collection {
        task.push(("ANTENNA_COLLECTION_ID", c.id.to_string()));
    }
    if let Some(c) = &spec.source_image_single {
        task.push(("ANTENNA_CAPTURE_ID", c.id.to_string()));
    }
    if let Some(p) = &spec.pipeline {
        task.push(("ANTENNA_PIPELINE_ID", p.id.to_string()));
        if let Some(slug) = &p.slug {
            task.push(("ANTENNA_PIPELINE_SLUG", slug.clone()));
        }
    }
    // The task variables come first and win over user variables of the same name.
    let mut env: Vec<EnvVar> = task
        .into_iter()
        .map(|(k, v)| EnvVar {
            name: k.to_string(),
            value: Some(v),
            value_from: None,
        })
        .collect();
    for e in tpl.env.clone().unwrap_or_default() {
        if !env.iter().any(|t| t.name == e.name) {
            env.push(e);
        }
    }

    let owner = job
        .controller_owner_ref(&())
        .expect("a CaptureJob from the API server has a name and uid");
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(id, req)),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: tpl.annotations.clone(),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![Container {
                name: WORKER_CONTAINER.into(),
                image: Some(tpl.image.clone().unwrap_or_else(|| defaults.image.clone())),
                image_pull_policy: defaults.pull_policy.clone(),
                command: Some(
                    tpl.command
                        .clone()
                        .unwrap_or_else(|| defaults.command.clone()),
                ),
                args: tpl.args.clone(),
                env: Some(env),
                resources: tpl.resources.clone(),
                volume_mounts: tpl.volume_mounts.clone(),
                termination_message_path: Some("/dev/termination-log".into()),
                // The "restricted" Pod Security Standard, so that jobs run in hardened
                // namespaces; the worker image runs as a non-root user.
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        add: None,
                    }),
                    ..Default::default()
                }),
                termination_message_policy: Some("File".into()),
                ..Default::default()
            }],
            node_selector: tpl.node_selector.clone(),
            tolerations: tpl.tolerations.clone(),
            volumes: tpl.volumes.clone(),
            automount_service_account_token: Some(tpl.service_account_name.is_some()),
            service_account_name: tpl.service_account_name.clone(),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CaptureJobSpec;

    fn job() -> CaptureJob {
        let spec: CaptureJobSpec = serde_json::from_value(serde_json::json!({
            "name": "Sync captures for deployment 118",
            "jobType": "data_storage_sync",
            "project": {"id": 45, "name": "AMBER - Costa Rica"},
            "deployment": {"id": 118, "name": "Costa Rica - Dry Forest"},
            "limit": 100,
            "template": {"env": [{"name": "ANTENNA_SEED", "value": "evil"}, {"name": "EXTRA", "value": "1"}],
                         "annotations": {"sim.kwok.test/after": "2s"}}
        }))
        .unwrap();
        let mut j = CaptureJob::new("sync-118", spec);
        j.metadata.namespace = Some("ns1".into());
        j.metadata.uid = Some("uid-1".into());
        j
    }

    fn req() -> PodRequest {
        PodRequest {
            attempt: 2,
            stage: "data_storage_sync".into(),
            unit: "3".into(),
            try_no: 1,
            mode: Mode::Batch,
            offset: 75,
            count: 25,
            total: Some(100),
            seed: 42,
        }
    }

    #[test]
    fn pod_snapshot() {
        let pod = build_pod(&job(), 630, &req(), &PodDefaults::default());
        let yaml = serde_yaml::to_string(&pod).unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/controller/snapshots/pod.yaml"
        );
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(path, &yaml).unwrap();
        }
        let expected = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            yaml, expected,
            "Pod changed; if intended, run with UPDATE_SNAPSHOTS=1:\n{yaml}"
        );
    }

    #[test]
    fn pod_names_are_deterministic_and_short() {
        let r = req();
        assert_eq!(pod_name(630, &r), "cj630-a2-data-storage-sync-3-t1");
        let mut long = r.clone();
        long.stage = "populate_captures_collection".into();
        long.attempt = 1_000_000;
        long.unit = "99999".into();
        long.try_no = 21;
        let n = pod_name(9_999_999_999, &long);
        assert!(n.len() <= 63, "{n}");
        assert_eq!(n, pod_name(9_999_999_999, &long));
    }

    #[test]
    fn observe_reads_labels_phase_and_result() {
        let mut pod = build_pod(&job(), 630, &req(), &PodDefaults::default());
        let o = observe(&pod).unwrap();
        assert_eq!(
            (o.attempt, o.stage.as_str(), o.unit.as_str(), o.try_no),
            (2, "data_storage_sync", "3", 1)
        );
        assert_eq!(o.phase, PodPhase::Pending);
        pod.status = Some(serde_json::from_value(serde_json::json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "worker", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
               "state": {"terminated": {"exitCode": 3, "message": "boom"}}}]
        })).unwrap());
        let o = observe(&pod).unwrap();
        assert_eq!(o.phase, PodPhase::Failed);
        assert_eq!(o.exit_code, Some(3));
        assert_eq!(o.message.as_deref(), Some("boom"));
        pod.metadata.labels.as_mut().unwrap().remove(LABEL_TRY);
        assert!(observe(&pod).is_none());
    }

    #[test]
    fn observe_quotes_the_scheduler() {
        let mut pod = build_pod(&job(), 1, &req(), &PodDefaults::default());
        pod.status = Some(serde_json::from_value(serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector."}]
        })).unwrap());
        let o = observe(&pod).unwrap();
        assert!(o.unschedulable);
        assert!(o.waiting.unwrap().starts_with("0/4 nodes are available"));
    }
}
