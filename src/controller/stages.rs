//! The stages of each job type, with the keys, names and params of the old API, and how
//! each stage's work is split into Pods.

use crate::crd::{JobState, JobType, Stage, StageParam};

/// How a stage's work is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// One Pod does the whole stage.
    Single,
    /// One discovery Pod reports the number of captures (`total`).
    Discover,
    /// Batch Pods split the captures into `batchSize` slices; with `discover`, a
    /// discovery Pod runs first in the same stage.
    Batched { discover: bool },
    /// No Pod: the stage's params are folded from the other stages' results.
    Fold,
}

/// A stage definition.
#[derive(Clone, Copy, Debug)]
pub struct StageDef {
    /// Stage key (unique in a job).
    pub key: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Params as (key, name).
    pub params: &'static [(&'static str, &'static str)],
    /// How the work is done.
    pub work: Work,
}

const REGROUP_PARAMS: &[(&str, &str)] = &[
    ("captures_grouped", "Captures grouped"),
    ("events_created", "Events created"),
    ("events_touched", "Events touched"),
    ("empty_events_deleted", "Empty events deleted"),
    ("duplicate_timestamps", "Duplicate timestamps"),
    ("ungrouped_captures", "Ungrouped captures"),
    ("captures_missing_timestamp", "Captures missing timestamp"),
];

/// The `delay` stage a job with `delay > 0` runs first.
pub const DELAY: StageDef = StageDef {
    key: "delay",
    name: "Delay",
    params: &[("delay", "Delay")],
    work: Work::Single,
};

const ML: &[StageDef] = &[
    StageDef {
        key: "collect",
        name: "Collect",
        params: &[("total_images", "Total Images")],
        work: Work::Discover,
    },
    StageDef {
        key: "process",
        name: "Process",
        params: &[
            ("processed", "Processed"),
            ("remaining", "Remaining"),
            ("failed", "Failed"),
        ],
        work: Work::Batched { discover: false },
    },
    StageDef {
        key: "results",
        name: "Results",
        params: &[
            ("captures", "Captures"),
            ("detections", "Detections"),
            ("classifications", "Classifications"),
        ],
        work: Work::Fold,
    },
];

const SYNC: &[StageDef] = &[
    StageDef {
        key: "data_storage_sync",
        name: "Data storage sync",
        params: &[("total_files", "Total files"), ("failed", "Failed")],
        work: Work::Batched { discover: true },
    },
    StageDef {
        key: "regroup_sessions",
        name: "Regroup sessions",
        params: REGROUP_PARAMS,
        work: Work::Single,
    },
];

const REGROUP: &[StageDef] = &[StageDef {
    key: "regroup_events",
    name: "Regroup sessions",
    params: REGROUP_PARAMS,
    work: Work::Single,
}];

const POPULATE: &[StageDef] = &[StageDef {
    key: "populate_captures_collection",
    name: "Populate capture set",
    params: &[("captures_added", "Captures added")],
    work: Work::Single,
}];

const EXPORT: &[StageDef] = &[
    StageDef {
        key: "data_export",
        name: "Exporting data",
        params: &[
            ("records_exported", "Records exported"),
            ("total_records", "Total records"),
        ],
        work: Work::Batched { discover: true },
    },
    StageDef {
        key: "uploading_snapshot",
        name: "Uploading snapshot",
        params: &[("file_url", "File URL")],
        work: Work::Single,
    },
];

const POST: &[StageDef] = &[StageDef {
    key: "post_processing",
    name: "Post Processing",
    params: &[],
    work: Work::Single,
}];

/// The stages a job of this type runs, the `delay` stage first when `delay > 0`.
pub fn stages_for(job_type: JobType, delay: i64) -> Vec<StageDef> {
    let body: &[StageDef] = match job_type {
        JobType::Ml => ML,
        JobType::DataStorageSync => SYNC,
        JobType::RegroupEvents => REGROUP,
        JobType::PopulateCapturesCollection => POPULATE,
        JobType::DataExport => EXPORT,
        JobType::PostProcessing => POST,
    };
    let mut out = Vec::with_capacity(body.len() + 1);
    if delay > 0 {
        out.push(DELAY);
    }
    out.extend_from_slice(body);
    out
}

/// The initial (CREATED, progress 0, empty values) stage list of a job.
pub fn initial_stages(job_type: JobType, delay: i64) -> Vec<Stage> {
    stages_for(job_type, delay)
        .iter()
        .map(|d| Stage {
            key: d.key.to_string(),
            name: d.name.to_string(),
            status: JobState::Created,
            progress: 0.0,
            params: d
                .params
                .iter()
                .map(|(k, n)| StageParam {
                    key: k.to_string(),
                    name: n.to_string(),
                    category: "default".to_string(),
                    value: serde_json::Value::String(String::new()),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn keys(t: JobType, delay: i64) -> Vec<&'static str> {
        stages_for(t, delay).iter().map(|s| s.key).collect()
    }

    #[test]
    fn stage_keys_per_job_type_follow_the_contract() {
        assert_eq!(keys(JobType::Ml, 0), ["collect", "process", "results"]);
        assert_eq!(
            keys(JobType::DataStorageSync, 0),
            ["data_storage_sync", "regroup_sessions"]
        );
        assert_eq!(keys(JobType::RegroupEvents, 0), ["regroup_events"]);
        assert_eq!(
            keys(JobType::PopulateCapturesCollection, 0),
            ["populate_captures_collection"]
        );
        assert_eq!(
            keys(JobType::DataExport, 0),
            ["data_export", "uploading_snapshot"]
        );
        assert_eq!(keys(JobType::PostProcessing, 0), ["post_processing"]);
        assert_eq!(
            keys(JobType::PostProcessing, 5),
            ["delay", "post_processing"]
        );
    }

    #[test]
    fn stage_keys_and_param_keys_never_repeat() {
        for t in JobType::ALL {
            let stages = stages_for(t, 3);
            let unique: HashSet<_> = stages.iter().map(|s| s.key).collect();
            assert_eq!(unique.len(), stages.len(), "{t:?}");
            for s in &stages {
                let p: HashSet<_> = s.params.iter().map(|p| p.0).collect();
                assert_eq!(p.len(), s.params.len(), "{t:?} {}", s.key);
            }
        }
    }

    #[test]
    fn initial_stages_have_default_category_and_empty_values() {
        let st = initial_stages(JobType::Ml, 2);
        assert_eq!(st[0].key, "delay");
        assert_eq!(st[1].params[0].name, "Total Images");
        assert!(st
            .iter()
            .flat_map(|s| &s.params)
            .all(|p| p.category == "default" && p.value == ""));
        let sync = initial_stages(JobType::DataStorageSync, 0);
        assert_eq!(sync[1].params.len(), 7);
        assert_eq!(sync[1].params[4].name, "Duplicate timestamps");
    }
}
