//! Cluster-unique, never-reused integer ids for CaptureJobs.
//!
//! The counter lives in one ConfigMap (`data.next` = the next id nobody holds). A process
//! reserves a block of ids with an optimistic-concurrency replace (the write carries the
//! resourceVersion it read; a 409 means someone else won, so it reads again). Ids of a
//! block a process did not hand out before it stopped are skipped, never reused.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::Mutex;

/// Key of the counter in the ConfigMap's data.
pub const NEXT_KEY: &str = "next";

/// Errors of the allocator.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    /// The API server refused or failed a request.
    #[error("id allocator: {0}")]
    Kube(#[from] kube::Error),
    /// The counter object holds something that is not a number.
    #[error("id allocator: ConfigMap {0} has a malformed data.next: {1:?}")]
    Malformed(String, String),
    /// Too many writers raced for the counter.
    #[error("id allocator: gave up after {0} conflicting writes")]
    Contended(u32),
}

/// Reserves ids in blocks from the counter ConfigMap and hands them out one by one.
pub struct IdAllocator {
    api: Api<ConfigMap>,
    name: String,
    block: i64,
    first: i64,
    held: Mutex<std::ops::Range<i64>>,
}

impl IdAllocator {
    /// An allocator over ConfigMap `name` in `namespace`, reserving `block` ids per write.
    /// A counter that does not exist yet starts at `first`.
    pub fn new(client: Client, namespace: &str, name: &str, block: i64, first: i64) -> Self {
        IdAllocator {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            block: block.max(1),
            first: first.max(1),
            held: Mutex::new(0..0),
        }
    }

    /// The next id: unique in the cluster and never handed out before.
    pub async fn allocate(&self) -> Result<i64, IdError> {
        let mut held = self.held.lock().await;
        if held.is_empty() {
            let start = self.reserve(self.block).await?;
            *held = start..start + self.block;
        }
        let id = held.start;
        held.start += 1;
        Ok(id)
    }

    /// Drops the ids this process holds but has not handed out (after the counter was
    /// found behind ids in use), so that the next allocation reads the counter again.
    pub async fn forget_block(&self) {
        *self.held.lock().await = 0..0;
    }

    /// Makes sure the counter is above `id` (for ids chosen outside the allocator, e.g. a
    /// label set by hand), so that the allocator never hands `id` out.
    pub async fn observe(&self, id: i64) -> Result<(), IdError> {
        for _ in 0..MAX_CONFLICTS {
            let (next, cm) = self.read().await?;
            if next > id {
                return Ok(());
            }
            match self.write(cm, id + 1).await {
                Ok(()) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IdError::Contended(MAX_CONFLICTS))
    }

    /// Reserves `n` ids; returns the first.
    async fn reserve(&self, n: i64) -> Result<i64, IdError> {
        for _ in 0..MAX_CONFLICTS {
            let (next, cm) = self.read().await?;
            match self.write(cm, next + n).await {
                Ok(()) => return Ok(next),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IdError::Contended(MAX_CONFLICTS))
    }

    async fn read(&self) -> Result<(i64, Option<ConfigMap>), IdError> {
        match self.api.get_opt(&self.name).await? {
            None => Ok((self.first, None)),
            Some(cm) => {
                let raw = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(NEXT_KEY))
                    .cloned()
                    .unwrap_or_default();
                let next = parse_next(&raw)
                    .ok_or_else(|| IdError::Malformed(self.name.clone(), raw.clone()))?;
                Ok((next.max(self.first), Some(cm)))
            }
        }
    }

    /// Writes `next`: a create when there was no object (409 if another writer created it
    /// first), else a replace guarded by the resourceVersion that was read.
    async fn write(&self, cm: Option<ConfigMap>, next: i64) -> Result<(), kube::Error> {
        let data = BTreeMap::from([(NEXT_KEY.to_string(), next.to_string())]);
        match cm {
            None => {
                let mut fresh = ConfigMap::default();
                fresh.metadata.name = Some(self.name.clone());
                fresh.data = Some(data);
                self.api.create(&PostParams::default(), &fresh).await?;
            }
            Some(mut cm) => {
                cm.data = Some(data);
                self.api
                    .replace(&self.name, &PostParams::default(), &cm)
                    .await?;
            }
        }
        Ok(())
    }
}

const MAX_CONFLICTS: u32 = 100;

/// Parses the counter; `None` for anything but a positive integer.
pub fn parse_next(raw: &str) -> Option<i64> {
    raw.trim().parse::<i64>().ok().filter(|n| *n >= 1)
}

#[cfg(test)]
mod tests {
    use super::parse_next;

    #[test]
    fn counter_parses_only_positive_integers() {
        assert_eq!(parse_next("42"), Some(42));
        assert_eq!(parse_next(" 7\n"), Some(7));
        assert_eq!(parse_next("0"), None);
        assert_eq!(parse_next("-3"), None);
        assert_eq!(parse_next("abc"), None);
        assert_eq!(parse_next(""), None);
    }
}
