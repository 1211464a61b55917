//! Writes: the [`JobBackend`] trait (allocate an id, create, merge-patch the spec, delete) and
//! its real implementation over the API server ([`KubeBackend`]). Reads never come here: they
//! are served from the watch cache.

use std::sync::Arc;

use futures::future::BoxFuture;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::Client;
use serde_json::{json, Value};

use crate::crd::CaptureJob;
use crate::ids::IdAllocator;

/// The field manager the facade's writes are recorded under.
pub const FIELD_MANAGER: &str = "antenna-operator-api";

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object is gone (404 from the API server).
    #[error("not found")]
    NotFound,
    /// A conflicting object or write (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The API server refused the object (400/422: schema or CEL validation).
    #[error("invalid: {0}")]
    Invalid(String),
    /// Anything else: the API server is unreachable, forbids the operator, times out...
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<kube::Error> for BackendError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) if s.code == 404 => BackendError::NotFound,
            kube::Error::Api(s) if s.code == 409 => BackendError::Conflict(s.message.clone()),
            kube::Error::Api(s) if s.code == 400 || s.code == 422 => {
                BackendError::Invalid(s.message.clone())
            }
            other => BackendError::Unavailable(other.to_string()),
        }
    }
}

/// The writes of the facade. The real implementation is [`KubeBackend`]; tests use one that
/// applies the writes to a seeded store.
pub trait JobBackend: Send + Sync {
    /// A new job id, unique in the cluster and never reused.
    fn allocate_id(&self) -> BoxFuture<'_, Result<i64, BackendError>>;

    /// Creates `job` in its `metadata.namespace`; returns the object as stored.
    fn create<'a>(&'a self, job: &'a CaptureJob)
        -> BoxFuture<'a, Result<CaptureJob, BackendError>>;

    /// Applies the JSON merge patch `{"spec": spec_patch}` to the job; returns the object as
    /// stored.
    fn patch_spec<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        spec_patch: &'a Value,
    ) -> BoxFuture<'a, Result<CaptureJob, BackendError>>;

    /// Deletes the job with propagationPolicy Background (its Pods go by ownerReferences).
    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
}

/// [`JobBackend`] over the API server, as the operator's service account, with ids from the
/// [`IdAllocator`].
pub struct KubeBackend {
    client: Client,
    ids: Arc<IdAllocator>,
}

impl KubeBackend {
    /// A backend writing with `client` and taking ids from `ids`.
    pub fn new(client: Client, ids: Arc<IdAllocator>) -> Self {
        KubeBackend { client, ids }
    }

    fn api(&self, namespace: &str) -> Api<CaptureJob> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

impl JobBackend for KubeBackend {
    fn allocate_id(&self) -> BoxFuture<'_, Result<i64, BackendError>> {
        Box::pin(async move {
            self.ids
                .allocate()
                .await
                .map_err(|e| BackendError::Unavailable(e.to_string()))
        })
    }

    fn create<'a>(
        &'a self,
        job: &'a CaptureJob,
    ) -> BoxFuture<'a, Result<CaptureJob, BackendError>> {
        Box::pin(async move {
            let namespace = job.metadata.namespace.as_deref().unwrap_or("default");
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            };
            Ok(self.api(namespace).create(&params, job).await?)
        })
    }

    fn patch_spec<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        spec_patch: &'a Value,
    ) -> BoxFuture<'a, Result<CaptureJob, BackendError>> {
        Box::pin(async move {
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            };
            let patch = Patch::Merge(json!({ "spec": spec_patch }));
            Ok(self.api(namespace).patch(name, &params, &patch).await?)
        })
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            self.api(namespace).delete(name, &params).await?;
            Ok(())
        })
    }
}
