//! Fetching a deposit from every configured server at once. The failover loop
//! ([`KeysafeClient::send`]) asks servers one after the other, so a first server that accepts
//! connections but never answers costs a whole timeout before the next is tried. A host that
//! needs a key to boot (a volume or a disk to unlock) cannot wait for that: [`get_racing`] sends
//! the same GET to every server at the same time and takes the first answer. An answer that
//! stands (a 4xx such as `not_found` or `client_disabled`, or a server whose key does not match
//! its pin) ends the race at once, as it ends the failover loop.
//!
//! A key release is always checked with a server: unlike [`KeysafeClient::get_of`], a fresh
//! cache entry does not answer on its own, so disabling a client or unsharing a key stops the
//! very next unlock. The cache covers outages only: when no server can answer, a copy up to
//! `max_stale` old is served (and reported as [`Source::Stale`]); a refusal that stands drops it.
//!
//! [`get_racing`]: KeysafeClient::get_racing

use super::fetch::from_cache;
use super::request::AttemptError;
use super::{KeysafeClient, Req};
use crate::cache::CacheKey;
use crate::client::{Fetched, Source, is_retryable};
use crate::error::ClientError;
use keysafe_proto::{DepositName, DepositVersion, HEADER_ACL_SERIAL, HEADER_DEPOSIT_VERSION};

impl KeysafeClient {
    /// Fetches a deposit version from every server at once (the first answer wins), falling
    /// back to the cache only when no server can answer.
    pub async fn get_racing(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        version: Option<DepositVersion>,
    ) -> Result<Fetched, ClientError> {
        let cache = self.inner.cache.as_ref().filter(|c| c.config.enabled);
        let key = CacheKey {
            owner: owner.unwrap_or(&self.inner.me),
            name: name.as_str(),
            version,
        };
        let cached = cache.and_then(|c| c.lookup(&key));
        let mut path = Self::deposit_path(owner, name, "");
        if let Some(v) = version {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&format!("version={v}"));
        }
        match self.race(Req::get(path)).await.and_then(fetched) {
            Ok((f, etag)) => {
                if let Some(c) = cache
                    && let Err(e) = c.store(
                        &key,
                        f.version,
                        f.encoding.as_deref(),
                        etag.as_deref(),
                        &f.payload,
                    )
                {
                    tracing::warn!(error = %e, "cannot cache a fetched deposit");
                }
                Ok(f)
            }
            Err(err) => {
                if let (Some(c), Some(e)) = (cache, &cached)
                    && is_retryable(&err)
                    && e.age <= c.config.max_stale
                    && let Some(f) = from_cache(
                        e,
                        Source::Stale {
                            age: e.age,
                            reason: err.to_string(),
                        },
                        None,
                    )
                {
                    return Ok(f);
                }
                if err.code().is_some() && !is_retryable(&err) {
                    self.invalidate(owner, name);
                }
                Err(err)
            }
        }
    }

    /// Sends `req` (an idempotent request) to every server at once, for up to `1 + retries`
    /// rounds with backoff between them; the first answer wins and the others are dropped.
    async fn race(&self, req: Req) -> Result<super::Answer, ClientError> {
        let n = self.inner.endpoints.len();
        let rounds = 1 + self.inner.failover.retries;
        let mut tried: Vec<(usize, String)> = Vec::new();
        let mut last: Option<ClientError> = None;
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(self.backoff(round - 1)).await;
            }
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                let client = self.clone();
                let req = req.clone();
                set.spawn(async move { (i, client.attempt(i, &req).await) });
            }
            while let Some(joined) = set.join_next().await {
                let Ok((i, result)) = joined else {
                    continue;
                };
                match result {
                    Ok(answer) => {
                        self.mark(i, true);
                        return Ok(answer);
                    }
                    Err(AttemptError::Final(e)) => {
                        if !matches!(e, ClientError::FingerprintMismatch { .. }) {
                            self.mark(i, true);
                        }
                        return Err(e);
                    }
                    Err(
                        AttemptError::NotSent(e)
                        | AttemptError::MaybeSent(e)
                        | AttemptError::ServerError(e),
                    ) => {
                        self.mark(i, false);
                        let msg = e.to_string();
                        match tried.iter_mut().find(|(j, _)| *j == i) {
                            Some(slot) => slot.1 = msg,
                            None => tried.push((i, msg)),
                        }
                        last = Some(e);
                    }
                }
            }
        }
        let last = last.unwrap_or_else(|| ClientError::Invalid("no server to try".into()));
        if n <= 1 {
            return Err(last);
        }
        Err(ClientError::AllServersFailed {
            tried: tried
                .into_iter()
                .map(|(i, msg)| {
                    let url = &self.inner.endpoints[i].base;
                    if msg.contains(url.as_str()) {
                        msg
                    } else {
                        format!("{url}: {msg}")
                    }
                })
                .collect(),
            last: Box::new(last),
            not_retried: false,
        })
    }
}

/// A deposit version from a GET answer.
/// The deposit an answer carries, and its entity tag (kept with a cached copy so that a later
/// ordinary `get` can revalidate it).
fn fetched(answer: super::Answer) -> Result<(Fetched, Option<String>), ClientError> {
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let version = header(HEADER_DEPOSIT_VERSION)
        .and_then(|v| DepositVersion::parse(&v).ok())
        .ok_or_else(|| ClientError::Unexpected {
            status: answer.status.as_u16(),
            detail: format!("missing {HEADER_DEPOSIT_VERSION} header"),
        })?;
    let etag = header("etag");
    Ok((
        Fetched {
            version,
            encoding: header(super::HEADER_ENCODING),
            acl_serial: header(HEADER_ACL_SERIAL).and_then(|v| v.parse().ok()),
            payload: answer.body,
            source: Source::Server,
        },
        etag,
    ))
}
