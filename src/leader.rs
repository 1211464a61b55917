//! Leader election with a coordination.k8s.io Lease, so that of several replicas only one
//! runs the controller.
//!
//! Expiry is judged the way client-go does it: by how long the Lease record has stayed
//! unchanged as this process observed it, never by comparing clocks across machines.
//! Every write carries the resourceVersion it read, so two candidates cannot both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tracing::{info, warn};

/// Lease-based leader election.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    observed: Option<(String, Instant)>,
}

/// The outcome of one round.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    /// We hold the lease.
    Leading,
    /// Someone else does.
    Following(String),
}

impl LeaderElector {
    /// An elector for Lease `name` in `namespace`, as `identity`, with a lease `duration`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            observed: None,
        }
    }

    /// The interval at which a leader renews (a third of the duration).
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire().await {
                Ok(Round::Leading) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(Round::Following(holder)) => {
                    tracing::debug!(%holder, "following");
                }
                Err(e) => warn!(error = %e, "leader election round failed"),
            }
            tokio::time::sleep(self.renew_every()).await;
        }
    }

    /// Renews the lease until it cannot be held any more; returns then.
    pub async fn hold(&mut self) {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.renew_every()).await;
            match self.try_acquire().await {
                Ok(Round::Leading) => last_ok = Instant::now(),
                Ok(Round::Following(holder)) => {
                    warn!(%holder, "lost the lease");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "lease renewal failed");
                    // Stop acting before another candidate may take over.
                    if last_ok.elapsed() + self.renew_every() >= self.duration {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up (on shutdown), so that another replica takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() == Some(&self.identity) {
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                let _ = self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await;
            }
        }
    }

    /// One round: take or renew the lease if it is ours, free or expired.
    pub async fn try_acquire(&mut self) -> Result<Round, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let secs = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let mut lease = Lease::default();
            lease.metadata.name = Some(self.name.clone());
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            });
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Round::Leading),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::Following("?".into())),
                Err(e) => Err(e),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        // How long has the record stood still, as we saw it?
        let still_for = match &self.observed {
            Some((seen_rv, since)) if *seen_rv == rv => since.elapsed(),
            _ => {
                self.observed = Some((rv.clone(), Instant::now()));
                Duration::ZERO
            }
        };
        let their_duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(secs).max(0) as u64);
        let free = holder.is_empty() || still_for >= their_duration;
        if !mine && !free {
            return Ok(Round::Following(holder));
        }
        let s = lease.spec.get_or_insert_with(Default::default);
        if !mine {
            s.acquire_time = Some(now.clone());
            s.lease_transitions = Some(s.lease_transitions.unwrap_or(0) + 1);
        }
        s.holder_identity = Some(self.identity.clone());
        s.lease_duration_seconds = Some(secs);
        s.renew_time = Some(now);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                self.observed = l.metadata.resource_version.map(|rv| (rv, Instant::now()));
                Ok(Round::Leading)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::Following(holder)),
            Err(e) => Err(e),
        }
    }
}
