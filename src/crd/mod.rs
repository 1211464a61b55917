//! The CaptureJob custom resource: types only, no behaviour beyond small accessors.
//!
//! The schema generated from these types (with the validation attributes and CEL rules
//! below) is what `antenna-operator crd` prints and what `crds/` holds.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the CaptureJob resource.
pub const GROUP: &str = "antenna.insectai.org";
/// Label carrying the job's integer id (on the CaptureJob and on its Pods).
pub const LABEL_ID: &str = "antenna.insectai.org/id";
/// Label carrying the attempt number on Pods.
pub const LABEL_ATTEMPT: &str = "antenna.insectai.org/attempt";
/// Label carrying the stage key (with `-` for `_`) on Pods.
pub const LABEL_STAGE: &str = "antenna.insectai.org/stage";
/// Label carrying the unit of work on Pods: `d` (discovery), `s` (single) or the batch index.
pub const LABEL_UNIT: &str = "antenna.insectai.org/unit";
/// Label carrying the try number (1-based) on Pods.
pub const LABEL_TRY: &str = "antenna.insectai.org/try";
/// Label on Namespaces mapping a project id to the namespace that holds its jobs.
pub const LABEL_PROJECT_ID: &str = "antenna.insectai.org/project-id";
/// Label set on every Pod the operator creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGER: &str = "antenna-operator";

/// A batch job of the insect-monitoring platform (a sync of captures, an ML pipeline run,
/// an export...). The operator runs it through batch Pods and reports its progress in the
/// status; the REST facade serves it at /api/v2/jobs/{status.id}/.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "antenna.insectai.org",
    version = "v1alpha1",
    kind = "CaptureJob",
    plural = "capturejobs",
    singular = "capturejob",
    shortname = "capjob",
    category = "antenna",
    namespaced,
    status = "CaptureJobStatus",
    printcolumn = r#"{"name":"ID","type":"integer","jsonPath":".status.id"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.jobType"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Progress","type":"number","format":"float","jsonPath":".status.progress.summary.progress"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CaptureJobSpec {
    /// Display name of the job, 1 to 255 characters.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("!self.matches('^\\\\s*$')").message("spec.name must not be blank"))]
    #[x_kube(validation = Rule::new("!self.matches('[\\\\x00-\\\\x1f\\\\x7f]')").message("spec.name must not contain control characters"))]
    pub name: String,

    /// Kind of work: ml, data_storage_sync, populate_captures_collection, regroup_events,
    /// data_export or post_processing. Defaults to ml.
    #[serde(default)]
    pub job_type: JobType,

    /// The project the job belongs to (its id cannot change).
    #[x_kube(validation = Rule::new("self.id == oldSelf.id").message("spec.project.id is immutable"))]
    pub project: ProjectRef,

    /// The deployment (station) whose captures the job works on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<NamedRef>,

    /// The capture set (source image collection) the job works on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image_collection: Option<NamedRef>,

    /// A single capture (source image) the job works on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image_single: Option<NamedRef>,

    /// The ML pipeline an ml job runs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineRef>,

    /// Seconds of simulated work done first, in a `delay` stage (test jobs). 0 = none.
    #[serde(default)]
    #[schemars(range(min = 0, max = 604800))]
    pub delay: i64,

    /// Cap on the number of captures processed, 1 to 1,000,000,000. Unset = no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000000))]
    pub limit: Option<i64>,

    /// Shuffle the captures with a seed kept in status.seed, so that a batch Pod and its
    /// retry see the same captures. Defaults to true.
    #[serde(default = "default_true")]
    pub shuffle: bool,

    /// Queue the job. false keeps it CREATED until this becomes true. Defaults to true.
    #[serde(default = "default_true")]
    pub start: bool,

    /// Stop the current attempt: its Pods are deleted and it ends REVOKED.
    #[serde(default)]
    pub cancel: bool,

    /// The attempt number. Raising it starts a fresh attempt with reset progress.
    #[serde(default = "default_attempt")]
    #[schemars(range(min = 1, max = 1000000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("spec.attempt may only be raised"))]
    pub attempt: i64,

    /// Captures per batch Pod; defaults to the operator's --default-batch-size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub batch_size: Option<i32>,

    /// Most batch Pods running at once; defaults to the operator's --default-parallelism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub parallelism: Option<i32>,

    /// Extra tries per batch after a failure (0 = no retry); defaults to the operator's
    /// --default-retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 20))]
    pub retries: Option<i32>,

    /// A Pod of the job that stays Pending longer than this fails the job; defaults to the
    /// operator's --pending-timeout (600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pending_timeout_seconds: Option<i64>,

    /// A started job that runs longer than this fails with DeadlineExceeded. Unset = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,

    /// Seconds after the job finishes before it and its Pods are deleted; defaults to the
    /// operator's --ttl-seconds-after-finished (unset = kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,

    /// Overrides for the Pods the job runs (image, command, env, resources, placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodTemplateOverride>,
}

fn default_true() -> bool {
    true
}

fn default_attempt() -> i64 {
    1
}

/// The kinds of job, with the keys of the old API.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum JobType {
    /// ML pipeline
    #[default]
    #[serde(rename = "ml")]
    Ml,
    /// Data storage sync
    #[serde(rename = "data_storage_sync")]
    DataStorageSync,
    /// Populate capture set
    #[serde(rename = "populate_captures_collection")]
    PopulateCapturesCollection,
    /// Regroup sessions
    #[serde(rename = "regroup_events")]
    RegroupEvents,
    /// Data Export
    #[serde(rename = "data_export")]
    DataExport,
    /// Post Processing
    #[serde(rename = "post_processing")]
    PostProcessing,
}

impl JobType {
    /// Every job type, in the order of the old API's documentation.
    pub const ALL: [JobType; 6] = [
        JobType::Ml,
        JobType::DataStorageSync,
        JobType::PopulateCapturesCollection,
        JobType::RegroupEvents,
        JobType::DataExport,
        JobType::PostProcessing,
    ];

    /// The key, as the old API shows it in `job_type.key`.
    pub fn key(self) -> &'static str {
        match self {
            JobType::Ml => "ml",
            JobType::DataStorageSync => "data_storage_sync",
            JobType::PopulateCapturesCollection => "populate_captures_collection",
            JobType::RegroupEvents => "regroup_events",
            JobType::DataExport => "data_export",
            JobType::PostProcessing => "post_processing",
        }
    }

    /// The display name, as the old API shows it in `job_type.name`.
    pub fn display_name(self) -> &'static str {
        match self {
            JobType::Ml => "ML pipeline",
            JobType::DataStorageSync => "Data storage sync",
            JobType::PopulateCapturesCollection => "Populate capture set",
            JobType::RegroupEvents => "Regroup sessions",
            JobType::DataExport => "Data Export",
            JobType::PostProcessing => "Post Processing",
        }
    }

    /// Parses a key of the old API.
    pub fn from_key(key: &str) -> Option<JobType> {
        JobType::ALL.into_iter().find(|t| t.key() == key)
    }
}

/// A reference to the project the job belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ProjectRef {
    /// Project id in the platform.
    #[schemars(range(min = 1))]
    pub id: i64,
    /// Project name, as shown by the REST view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A reference to a platform object (deployment, capture set, capture).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct NamedRef {
    /// Object id in the platform.
    #[schemars(range(min = 1))]
    pub id: i64,
    /// Object name, as shown by the REST view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A reference to an ML pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct PipelineRef {
    /// Pipeline id in the platform.
    #[schemars(range(min = 1))]
    pub id: i64,
    /// Pipeline name, as shown by the REST view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Pipeline slug (the `pipeline__slug` filter of the REST view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
}

/// Overrides for the job's Pods. Unset fields take the operator's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverride {
    /// Container image; defaults to the operator's --worker-image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Container command; defaults to the worker image's `antenna-operator worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Container arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Extra environment variables (the ANTENNA_* task variables are always set and win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector for the Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations for the Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Volumes of the Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    /// Volume mounts of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
    /// Service account the Pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra labels of the Pods (the operator's own labels win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Extra annotations of the Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The states of a job, with the names of the old API.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Created, not queued (spec.start is false).
    #[default]
    Created,
    /// Queued: waiting for a slot or for its Pods to start.
    Pending,
    /// Its Pods are running.
    Started,
    /// Finished: every stage succeeded. Final for the attempt.
    Success,
    /// Finished: failed, with the reason in the log and conditions. Final for the attempt.
    Failure,
    /// A batch failed and is being retried.
    Retry,
    /// Cancel requested; waiting for the Pods to be gone.
    Canceling,
    /// Canceled. Final for the attempt.
    Revoked,
}

impl JobState {
    /// The name used by the old API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Created => "CREATED",
            JobState::Pending => "PENDING",
            JobState::Started => "STARTED",
            JobState::Success => "SUCCESS",
            JobState::Failure => "FAILURE",
            JobState::Retry => "RETRY",
            JobState::Canceling => "CANCELING",
            JobState::Revoked => "REVOKED",
        }
    }

    /// Parses a name of the old API.
    pub fn parse(s: &str) -> Option<JobState> {
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
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// SUCCESS, FAILURE and REVOKED: nothing but a new attempt leaves them.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Success | JobState::Failure | JobState::Revoked
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Operator-owned state of a CaptureJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureJobStatus {
    /// The job's integer id in the REST view; unique in the cluster, never reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// The job's state.
    #[serde(default)]
    pub state: JobState,
    /// The attempt this status describes.
    #[serde(default)]
    pub attempt: i64,
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the attempt was queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Time>,
    /// When the first Pod of the attempt ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the attempt reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The time of the last real progress (the stall clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_at: Option<Time>,
    /// The seed the captures are shuffled with in this attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// The fields that shape the work, as the attempt started with them; changes to them
    /// in the spec apply from the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<WorkShape>,
    /// The number of captures the attempt works on, once discovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// Progress in the old API's shape.
    #[serde(default)]
    pub progress: JobProgress,
    /// Counts of batch Pods' units of work in this attempt.
    #[serde(default)]
    pub batches: BatchCounts,
    /// Every unit of work (one Pod per try) of this attempt and what it reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<WorkUnit>,
    /// Log lines, newest first, bounded.
    #[serde(default)]
    pub logs: JobLogs,
    /// Conditions, by Kubernetes conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The work-defining fields of a spec, frozen for an attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkShape {
    /// spec.jobType of the attempt.
    pub job_type: JobType,
    /// spec.delay of the attempt.
    #[serde(default)]
    pub delay: i64,
    /// spec.limit of the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// spec.batchSize of the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<i32>,
}

impl WorkShape {
    /// The shape of a spec.
    pub fn of(spec: &CaptureJobSpec) -> Self {
        WorkShape {
            job_type: spec.job_type,
            delay: spec.delay,
            limit: spec.limit,
            batch_size: spec.batch_size,
        }
    }

    /// Names of the spec fields that differ from this shape.
    pub fn changed_in(&self, spec: &CaptureJobSpec) -> Vec<&'static str> {
        let mut out = vec![];
        if self.job_type != spec.job_type {
            out.push("jobType");
        }
        if self.delay != spec.delay {
            out.push("delay");
        }
        if self.limit != spec.limit {
            out.push("limit");
        }
        if self.batch_size != spec.batch_size {
            out.push("batchSize");
        }
        out
    }
}

/// Progress of a job as the old API shows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct JobProgress {
    /// Summary: the job's state and the mean progress of its stages.
    #[serde(default)]
    pub summary: ProgressSummary,
    /// One entry per stage, keys unique.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Error messages of the attempt.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Summary of a job's progress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ProgressSummary {
    /// Always equal to the job's state.
    #[serde(default)]
    pub status: JobState,
    /// Mean progress of the stages, 0 to 1.
    #[serde(default)]
    pub progress: f64,
}

/// A stage of a job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Stage {
    /// Stage key, unique in the job.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Stage state.
    #[serde(default)]
    pub status: JobState,
    /// Stage progress, 0 to 1.
    #[serde(default)]
    pub progress: f64,
    /// Named values of the stage.
    #[serde(default)]
    pub params: Vec<StageParam>,
}

/// A named value of a stage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct StageParam {
    /// Param key.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Always "default".
    #[serde(default)]
    pub category: String,
    /// The value: a number, a string, or "" while unknown.
    #[serde(default)]
    #[schemars(schema_with = "any_value_schema")]
    pub value: serde_json::Value,
}

fn any_value_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"x-kubernetes-preserve-unknown-fields": true})
}

/// Counts of units of work (Pods' slices) in the attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct BatchCounts {
    /// Units of work known so far.
    #[serde(default)]
    pub total: i64,
    /// Units not yet running.
    #[serde(default)]
    pub pending: i64,
    /// Units whose Pod runs.
    #[serde(default)]
    pub running: i64,
    /// Units done.
    #[serde(default)]
    pub succeeded: i64,
    /// Units that failed for good.
    #[serde(default)]
    pub failed: i64,
}

/// The phase of a unit of work.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UnitPhase {
    /// No Pod runs yet for the current try.
    #[default]
    Pending,
    /// The Pod of the current try runs.
    Running,
    /// Done, result folded.
    Succeeded,
    /// The last try failed and a retry waits for its backoff.
    Retrying,
    /// Failed with no tries left.
    Failed,
}

/// A unit of work: the discovery, single or batch Pod of one stage, over its tries.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkUnit {
    /// Stage key.
    pub stage: String,
    /// `d` (discovery), `s` (single) or the batch index.
    pub unit: String,
    /// First capture of the batch (in the shuffled order).
    #[serde(default)]
    pub offset: i64,
    /// Captures in the batch.
    #[serde(default)]
    pub size: i64,
    /// Pods created so far (the current try number).
    #[serde(default)]
    pub tries: i32,
    /// Phase.
    #[serde(default)]
    pub phase: UnitPhase,
    /// The Pod of the current try has been seen in the cache.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seen: bool,
    /// When the Pod of the current try was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Time>,
    /// When the last try failed (for the backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Time>,
    /// Counts reported by the Pod's result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub result: BTreeMap<String, i64>,
    /// Strings reported by the Pod's result (e.g. file_url).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub text: BTreeMap<String, String>,
}

/// Log lines of a job, newest first.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct JobLogs {
    /// Every line, `[YYYY-MM-DD HH:MM:SS] LEVEL message`.
    #[serde(default)]
    pub stdout: Vec<String>,
    /// The ERROR lines.
    #[serde(default)]
    pub stderr: Vec<String>,
}

impl CaptureJob {
    /// The state, CREATED when there is no status yet.
    pub fn state(&self) -> JobState {
        self.status.as_ref().map(|s| s.state).unwrap_or_default()
    }

    /// The REST id, once assigned.
    pub fn job_id(&self) -> Option<i64> {
        self.status.as_ref().and_then(|s| s.id).or_else(|| {
            self.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_ID))
                .and_then(|v| v.parse().ok())
        })
    }
}
