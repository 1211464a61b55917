//! Authentication and authorization of callers: the [`Authorizer`] trait, and its real
//! implementation over the Kubernetes API server ([`KubeAuthorizer`]: TokenReview to learn
//! who holds a token, SubjectAccessReview to learn whether they may act on `capturejobs` in a
//! namespace), with short-lived caches so that a burst of requests costs a few reviews.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::Client;

use crate::crd::GROUP;

/// The resource (plural) the reviews are about.
pub const RESOURCE: &str = "capturejobs";

/// An authenticated caller, as the TokenReview described them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct User {
    /// Kubernetes user name (`system:serviceaccount:ns:name` for service accounts).
    pub username: String,
    /// User uid, if any.
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (e.g. the pod the token is bound to).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The verbs checked with SubjectAccessReview on `capturejobs` (group `antenna.insectai.org`).
/// `run` (run and retry) and `cancel` are custom verbs: grant them in a Role's `verbs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Read one job (only checked when anonymous reads are off).
    Get,
    /// List jobs (only checked when anonymous reads are off).
    List,
    /// POST /api/v2/jobs/.
    Create,
    /// PUT/PATCH /api/v2/jobs/{id}/.
    Update,
    /// DELETE /api/v2/jobs/{id}/.
    Delete,
    /// POST .../run/ and .../retry/ (and `?start_now` on create).
    Run,
    /// POST .../cancel/.
    Cancel,
}

impl Verb {
    /// The verb as RBAC spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Run => "run",
            Verb::Cancel => "cancel",
        }
    }
}

/// A failure to reach a decision (the API server failed); the facade answers 503.
#[derive(Debug, thiserror::Error)]
#[error("authorization backend: {0}")]
pub struct AuthError(pub String);

/// Who is calling and what they may do. Implementations must be cheap to call repeatedly
/// (cache their answers): the facade asks once per verb and namespace on each request.
pub trait Authorizer: Send + Sync {
    /// The user a token belongs to; `Ok(None)` when the token is not valid.
    fn authenticate<'a>(&'a self, token: &'a str)
        -> BoxFuture<'a, Result<Option<User>, AuthError>>;

    /// Whether `user` may do `verb` on `capturejobs` in `namespace`.
    fn allowed<'a>(
        &'a self,
        user: &'a User,
        verb: Verb,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<bool, AuthError>>;
}

/// What the `Authorization` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No header, or a scheme other than `Token`/`Bearer` (treated as anonymous, as DRF's
    /// TokenAuthentication does).
    None,
    /// `Token <t>` or `Bearer <t>`.
    Token(String),
    /// A `Token`/`Bearer` header that is malformed: the 401 detail to answer with.
    Malformed(&'static str),
}

/// Parses an `Authorization` header value (`Token <t>` or `Bearer <t>`, scheme
/// case-insensitive).
pub fn parse_authorization(header: Option<&[u8]>) -> Credentials {
    let Some(raw) = header else {
        return Credentials::None;
    };
    let mut parts = raw
        .split(|b| b.is_ascii_whitespace())
        .filter(|p| !p.is_empty());
    let Some(scheme) = parts.next() else {
        return Credentials::None;
    };
    if !(scheme.eq_ignore_ascii_case(b"token") || scheme.eq_ignore_ascii_case(b"bearer")) {
        return Credentials::None;
    }
    let Some(token) = parts.next() else {
        return Credentials::Malformed("Invalid token header. No credentials provided.");
    };
    if parts.next().is_some() {
        return Credentials::Malformed(
            "Invalid token header. Token string should not contain spaces.",
        );
    }
    match std::str::from_utf8(token) {
        Ok(t) if t.chars().all(|c| c.is_ascii_graphic()) => Credentials::Token(t.to_string()),
        _ => Credentials::Malformed(
            "Invalid token header. Token string should not contain invalid characters.",
        ),
    }
}

/// A small map whose entries expire after a fixed time. Bounded: when full, expired entries
/// are dropped, and if that is not enough, everything.
struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new(ttl: Duration, max: usize) -> Self {
        TtlCache {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

const CACHE_MAX_ENTRIES: usize = 10_000;

/// The real [`Authorizer`]: TokenReview and SubjectAccessReview through the API server, as
/// the operator's service account (which needs `create` on `tokenreviews` and
/// `subjectaccessreviews`). Answers (including "invalid token" and "denied") are cached for
/// `ttl`, keyed by token, and by user + verb + namespace; failures are not cached.
pub struct KubeAuthorizer {
    client: Client,
    audiences: Option<Vec<String>>,
    tokens: TtlCache<String, Option<User>>,
    decisions: TtlCache<(User, Verb, String), bool>,
}

impl KubeAuthorizer {
    /// An authorizer that caches answers for `ttl` (a few seconds is the intent: a revoked
    /// RoleBinding takes effect after at most `ttl`).
    pub fn new(client: Client, ttl: Duration) -> Self {
        KubeAuthorizer {
            client,
            audiences: None,
            tokens: TtlCache::new(ttl, CACHE_MAX_ENTRIES),
            decisions: TtlCache::new(ttl, CACHE_MAX_ENTRIES),
        }
    }

    /// Restricts accepted tokens to these audiences (TokenReview `spec.audiences`); by default
    /// the API server's own audiences.
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = Some(audiences);
        self
    }

    async fn review_token(&self, token: &str) -> Result<Option<User>, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: self.audiences.clone(),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError(format!("TokenReview: {e}")))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let info = status.user.unwrap_or_default();
        Ok(Some(User {
            username: info.username.unwrap_or_default(),
            uid: info.uid,
            groups: info.groups.unwrap_or_default(),
            extra: info.extra.unwrap_or_default(),
        }))
    }

    async fn review_access(
        &self,
        user: &User,
        verb: Verb,
        namespace: &str,
    ) -> Result<bool, AuthError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.username.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.to_string()),
                    resource: Some(RESOURCE.to_string()),
                    namespace: Some(namespace.to_string()),
                    verb: Some(verb.as_str().to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError(format!("SubjectAccessReview: {e}")))?;
        Ok(answer
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true)))
    }
}

impl Authorizer for KubeAuthorizer {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, AuthError>> {
        Box::pin(async move {
            let key = token.to_string();
            if let Some(hit) = self.tokens.get(&key) {
                return Ok(hit);
            }
            let user = self.review_token(token).await?;
            self.tokens.put(key, user.clone());
            Ok(user)
        })
    }

    fn allowed<'a>(
        &'a self,
        user: &'a User,
        verb: Verb,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let key = (user.clone(), verb, namespace.to_string());
            if let Some(hit) = self.decisions.get(&key) {
                return Ok(hit);
            }
            let allowed = self.review_access(user, verb, namespace).await?;
            self.decisions.put(key, allowed);
            Ok(allowed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_header_forms() {
        assert_eq!(parse_authorization(None), Credentials::None);
        assert_eq!(
            parse_authorization(Some(b"Token abc")),
            Credentials::Token("abc".into())
        );
        assert_eq!(
            parse_authorization(Some(b"bearer  abc ")),
            Credentials::Token("abc".into())
        );
        assert_eq!(
            parse_authorization(Some(b"Basic dXNlcjpw")),
            Credentials::None
        );
        assert!(matches!(
            parse_authorization(Some(b"Token")),
            Credentials::Malformed(_)
        ));
        assert!(matches!(
            parse_authorization(Some(b"Token a b")),
            Credentials::Malformed(_)
        ));
        assert!(matches!(
            parse_authorization(Some(b"Token \xff\xfe")),
            Credentials::Malformed(_)
        ));
    }

    #[test]
    fn ttl_cache_expires_and_stays_bounded() {
        let cache: TtlCache<u32, bool> = TtlCache::new(Duration::from_millis(30), 3);
        cache.put(1, true);
        assert_eq!(cache.get(&1), Some(true));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&1), None);
        for i in 0..10 {
            cache.put(i, false);
        }
        assert!(cache.entries.lock().map(|e| e.len()).unwrap_or(0) <= 3);
        let off: TtlCache<u32, bool> = TtlCache::new(Duration::ZERO, 3);
        off.put(1, true);
        assert_eq!(off.get(&1), None);
    }
}
