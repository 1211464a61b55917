//! The reference worker: `antenna-operator worker`, the default program of batch Pods.
//!
//! It documents the protocol that real processing containers implement:
//! - the task arrives as `ANTENNA_*` environment variables (`ANTENNA_MODE` is `discover`,
//!   `single` or `batch`; `ANTENNA_STAGE`, `ANTENNA_OFFSET`, `ANTENNA_COUNT`,
//!   `ANTENNA_TOTAL`, `ANTENNA_LIMIT`, `ANTENNA_SEED`, `ANTENNA_SHUFFLE`, ids of the
//!   project, deployment, capture set, capture and pipeline, `ANTENNA_DELAY` on the delay
//!   stage);
//! - the result is ONE JSON object of counts (and strings such as `file_url`) written to
//!   the termination message file (`/dev/termination-log`), e.g. `{"processed": 25,
//!   "failed": 0, "detections": 40}`; a discovery reports `{"total": N}`;
//! - exit 0 = done (no result = the whole slice was done); non-zero = the batch failed.
//!
//! The reference worker simulates the work: it sleeps `ANTENNA_DELAY` seconds on the
//! delay stage and `ANTENNA_SECONDS_PER_CAPTURE` (default 0.01) per capture of its slice.

use std::collections::BTreeMap;
use std::time::Duration;

/// Errors of the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A task variable is missing or malformed.
    #[error("{0}: {1}")]
    Env(&'static str, String),
    /// The result could not be written.
    #[error("writing the result to {0}: {1}")]
    Write(String, std::io::Error),
}

/// The task a Pod was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// `discover`, `single` or `batch`.
    pub mode: String,
    /// Stage key.
    pub stage: String,
    /// Captures in the slice.
    pub count: i64,
    /// Limit of the job, if any.
    pub limit: Option<i64>,
    /// Seconds of delay (delay stage).
    pub delay: i64,
    /// Shuffle seed.
    pub seed: i64,
}

fn var(env: &BTreeMap<String, String>, key: &'static str) -> Option<String> {
    env.get(key).cloned().filter(|v| !v.is_empty())
}

fn num(env: &BTreeMap<String, String>, key: &'static str) -> Result<Option<i64>, WorkerError> {
    var(env, key)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|e| WorkerError::Env(key, format!("{v:?}: {e}")))
        })
        .transpose()
}

/// Reads the task from the environment.
pub fn task_from_env(env: &BTreeMap<String, String>) -> Result<Task, WorkerError> {
    let mode =
        var(env, "ANTENNA_MODE").ok_or(WorkerError::Env("ANTENNA_MODE", "missing".into()))?;
    if !matches!(mode.as_str(), "discover" | "single" | "batch") {
        return Err(WorkerError::Env(
            "ANTENNA_MODE",
            format!("{mode:?} is not discover, single or batch"),
        ));
    }
    Ok(Task {
        mode,
        stage: var(env, "ANTENNA_STAGE")
            .ok_or(WorkerError::Env("ANTENNA_STAGE", "missing".into()))?,
        count: num(env, "ANTENNA_COUNT")?.unwrap_or(0).max(0),
        limit: num(env, "ANTENNA_LIMIT")?,
        delay: num(env, "ANTENNA_DELAY")?.unwrap_or(0).max(0),
        seed: num(env, "ANTENNA_SEED")?.unwrap_or(0),
    })
}

/// The simulated result of a task (deterministic in its seed).
pub fn simulate(task: &Task) -> serde_json::Value {
    let mix = |salt: i64| (task.seed.wrapping_mul(31).wrapping_add(salt)).rem_euclid(7);
    match task.mode.as_str() {
        "discover" => serde_json::json!({"total": task.limit.unwrap_or(1000)}),
        "batch" => serde_json::json!({
            "processed": task.count,
            "failed": 0,
            "detections": task.count * 2 + mix(1),
            "classifications": task.count * 2 + mix(2),
        }),
        _ => match task.stage.as_str() {
            "regroup_sessions" | "regroup_events" => serde_json::json!({
                "captures_grouped": task.count, "events_created": 1 + mix(3), "events_touched": 1 + mix(4),
                "empty_events_deleted": 0, "duplicate_timestamps": 0, "ungrouped_captures": 0,
                "captures_missing_timestamp": 0,
            }),
            "populate_captures_collection" => serde_json::json!({"captures_added": task.count}),
            "uploading_snapshot" => {
                serde_json::json!({"file_url": format!("exports/job-snapshot-{}.json", task.seed)})
            }
            _ => serde_json::json!({}),
        },
    }
}

/// Runs the worker: simulated work, then the result to the termination message.
pub async fn run() -> Result<(), WorkerError> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let task = task_from_env(&env)?;
    let per_capture: f64 = env
        .get("ANTENNA_SECONDS_PER_CAPTURE")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.01);
    let mut wait = task.delay as f64;
    if task.mode == "batch" {
        wait += per_capture * task.count as f64;
    }
    tokio::time::sleep(Duration::from_secs_f64(wait.clamp(0.0, 86400.0))).await;
    let result = simulate(&task);
    let path = env
        .get("ANTENNA_RESULT_PATH")
        .cloned()
        .unwrap_or_else(|| "/dev/termination-log".into());
    std::fs::write(&path, result.to_string()).map_err(|e| WorkerError::Write(path, e))?;
    println!("{result}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_a_batch_task_and_reports_its_slice() {
        let t = task_from_env(&env(&[
            ("ANTENNA_MODE", "batch"),
            ("ANTENNA_STAGE", "process"),
            ("ANTENNA_COUNT", "25"),
            ("ANTENNA_SEED", "7"),
        ]))
        .unwrap();
        assert_eq!(t.count, 25);
        let r = simulate(&t);
        assert_eq!(r["processed"], 25);
        assert_eq!(r["failed"], 0);
    }

    #[test]
    fn discovery_reports_the_limit() {
        let t = task_from_env(&env(&[
            ("ANTENNA_MODE", "discover"),
            ("ANTENNA_STAGE", "collect"),
            ("ANTENNA_LIMIT", "100"),
        ]))
        .unwrap();
        assert_eq!(simulate(&t), serde_json::json!({"total": 100}));
    }

    #[test]
    fn malformed_task_names_the_variable() {
        let e = task_from_env(&env(&[
            ("ANTENNA_MODE", "batch"),
            ("ANTENNA_STAGE", "p"),
            ("ANTENNA_COUNT", "x"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("ANTENNA_COUNT"), "{e}");
        let e =
            task_from_env(&env(&[("ANTENNA_MODE", "nope"), ("ANTENNA_STAGE", "p")])).unwrap_err();
        assert!(e.to_string().contains("ANTENNA_MODE"));
    }
}
