//! The actions run, retry and cancel as pure decisions: which spec change (a JSON merge patch
//! of `spec`) each one writes, given the job as the cache shows it. The controller reacts to
//! the spec; the facade never writes status.

use serde_json::{json, Value};

use super::auth::Verb;
use super::serialize::projected_state;
use crate::crd::{CaptureJob, JobState};

/// An action of `/api/v2/jobs/{id}/<action>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Queue a CREATED job; start a new attempt of a final one; nothing for a running one.
    Run,
    /// Start a new attempt of a final or CREATED job; nothing for a running one.
    Retry,
    /// Cancel a job that is not final; nothing for a final (or already canceling) one.
    Cancel,
}

impl Action {
    /// The action of a path segment.
    pub fn from_segment(s: &str) -> Option<Action> {
        match s {
            "run" => Some(Action::Run),
            "retry" => Some(Action::Retry),
            "cancel" => Some(Action::Cancel),
            _ => None,
        }
    }

    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Run => "run",
            Action::Retry => "retry",
            Action::Cancel => "cancel",
        }
    }

    /// The verb checked with SubjectAccessReview: `run` for run and retry, `cancel` for cancel.
    pub fn verb(self) -> Verb {
        match self {
            Action::Run | Action::Retry => Verb::Run,
            Action::Cancel => Verb::Cancel,
        }
    }
}

/// The merge patch of a fresh attempt: the attempt after both the spec's and the status's,
/// queued, not canceled. Absolute values, so two concurrent retries from the same view write
/// the same thing.
fn fresh_attempt(job: &CaptureJob) -> Value {
    let current = job
        .spec
        .attempt
        .max(job.status.as_ref().map_or(0, |s| s.attempt));
    json!({ "attempt": current.saturating_add(1), "start": true, "cancel": false })
}

/// The spec patch `action` writes on `job`, or `None` when it changes nothing (the response
/// is then the job unchanged). Decided on the state the job is heading to
/// ([`projected_state`]), so repeating an action never writes twice: a second run of a
/// job whose new attempt is already requested, or a second cancel, writes nothing.
pub fn plan(action: Action, job: &CaptureJob) -> Option<Value> {
    let heading = projected_state(job);
    match action {
        Action::Run => match heading {
            JobState::Created => Some(json!({ "start": true })),
            s if s.is_final() => Some(fresh_attempt(job)),
            _ => None,
        },
        Action::Retry => match heading {
            s if s.is_final() || s == JobState::Created => Some(fresh_attempt(job)),
            _ => None,
        },
        Action::Cancel => match heading {
            s if s.is_final() || s == JobState::Canceling => None,
            _ => Some(json!({ "cancel": true })),
        },
    }
}
