//! Reading a deposit version through the local cache: answered from a fresh entry (`ttl` mode),
//! revalidated with the server by entity tag, or served stale when no server can answer (see
//! [`crate::cache`] for the rules), and what a read gives back ([`Fetched`], [`Source`]).

use super::{HEADER_ENCODING, KeysafeClient, Req, is_retryable};
use crate::cache::{CacheKey, CacheMode};
use crate::error::ClientError;
use bytes::Bytes;
use keysafe_proto::{DepositName, DepositVersion, HEADER_ACL_SERIAL, HEADER_DEPOSIT_VERSION};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use std::time::Duration;

/// Where a fetched deposit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A server answered with the payload.
    Server,
    /// A server confirmed that the cached copy is current (`304 Not Modified`); the payload came
    /// from the local cache.
    Validated,
    /// The local cache, within its time-to-live (`ttl` mode only); no request was made.
    Cache { age: Duration },
    /// The local cache, older than the time-to-live, because no server could answer. `reason` is
    /// that failure. Callers should say so (the CLI warns on stderr).
    Stale { age: Duration, reason: String },
}

/// A fetched deposit version.
pub struct Fetched {
    pub version: DepositVersion,
    pub payload: Bytes,
    /// The `x-keysafe-encoding` header, if the server sent one.
    pub encoding: Option<String>,
    /// The ACL serial the server reported (absent for copies no server confirmed just now).
    pub acl_serial: Option<u64>,
    pub source: Source,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("version", &self.version)
            .field(
                "payload",
                &format_args!("[{} bytes redacted]", self.payload.len()),
            )
            .field("encoding", &self.encoding)
            .field("source", &self.source)
            .finish()
    }
}

/// How a `get` may use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheUse {
    /// As `[cache]` says: revalidate (or, in `ttl` mode, answer from a fresh entry), and fall
    /// back to a stale entry when no server answers.
    #[default]
    Normal,
    /// Always ask a server and never serve a cached copy; a successful answer refreshes the
    /// entry (`keysafe get --no-cache`).
    Refresh,
}

impl KeysafeClient {
    /// Fetches a deposit version through the cache (see [`crate::cache`]).
    pub async fn get(
        &self,
        name: &DepositName,
        version: Option<DepositVersion>,
    ) -> Result<Fetched, ClientError> {
        self.get_with(name, version, CacheUse::Normal).await
    }

    pub async fn get_with(
        &self,
        name: &DepositName,
        version: Option<DepositVersion>,
        cache_use: CacheUse,
    ) -> Result<Fetched, ClientError> {
        self.get_of(None, name, version, cache_use).await
    }

    /// Fetches a version of the caller's deposit or (`owner`) of one shared with it, through
    /// the cache (see [`crate::cache`] for the rules).
    pub async fn get_of(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        version: Option<DepositVersion>,
        cache_use: CacheUse,
    ) -> Result<Fetched, ClientError> {
        let cache = self.inner.cache.as_ref().filter(|c| c.config.enabled);
        let key = CacheKey {
            owner: owner.unwrap_or(&self.inner.me),
            name: name.as_str(),
            version,
        };
        let cached = match (cache, cache_use) {
            (Some(c), CacheUse::Normal) => c.lookup(&key),
            _ => None,
        };
        if let (Some(c), Some(e)) = (cache, &cached)
            && c.config.mode == CacheMode::Ttl
            && e.age <= c.config.ttl
            && let Some(f) = from_cache(e, Source::Cache { age: e.age }, None)
        {
            return Ok(f);
        }
        // Only a tag of the server's own form is sent back: a damaged or edited entry makes an
        // unconditional request rather than a malformed header the server would refuse.
        let known = cached
            .as_ref()
            .and_then(|e| e.meta.etag.as_deref())
            .filter(|t| plausible_etag(t));
        let answer = match self.fetch(owner, name, version, known).await {
            // A 304 for a copy other than the one named (a server bug): ask again in full.
            Ok(FetchAnswer::NotModified {
                version: v, etag, ..
            }) if cached.as_ref().is_none_or(|e| {
                e.meta.etag.as_deref() != Some(etag.as_str()) || e.meta.version != v.get()
            }) =>
            {
                tracing::warn!(%etag, "not-modified answer for a copy not held; fetching in full");
                self.fetch(owner, name, version, None).await
            }
            other => other,
        };
        match answer {
            Ok(FetchAnswer::Full(f, etag)) => {
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
            Ok(FetchAnswer::NotModified {
                version: v,
                etag,
                acl_serial,
            }) => {
                // Only sent with an entry's tag, and checked above: the server confirmed
                // exactly that entry.
                match (cache, &cached) {
                    (Some(c), Some(e))
                        if e.meta.etag.as_deref() == Some(etag.as_str())
                            && e.meta.version == v.get() =>
                    {
                        c.confirm(&key);
                        from_cache(e, Source::Validated, acl_serial).ok_or_else(|| {
                            ClientError::Home("cache: a damaged entry was confirmed".into())
                        })
                    }
                    _ => Err(ClientError::Unexpected {
                        status: 304,
                        detail: format!(
                            "not modified twice, for a copy this client does not hold ({etag})"
                        ),
                    }),
                }
            }
            Err(err) => {
                if let (Some(c), Some(e)) = (cache, &cached)
                    && is_retryable(&err)
                {
                    if e.age <= c.config.max_stale
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
                    return Err(ClientError::CacheTooOld {
                        age: e.age,
                        max_stale: c.config.max_stale,
                        cause: Box::new(err),
                    });
                }
                // A refusal that stands (not found, deleted, forbidden, client disabled, ...)
                // also drops what this host kept of the name.
                if err.code().is_some() && !is_retryable(&err) {
                    self.invalidate(owner, name);
                }
                Err(err)
            }
        }
    }

    /// One GET of a deposit version; with `known` (an entity tag this client holds) a
    /// conditional one.
    async fn fetch(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        version: Option<DepositVersion>,
        known: Option<&str>,
    ) -> Result<FetchAnswer, ClientError> {
        let mut path = Self::deposit_path(owner, name, "");
        if let Some(v) = version {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&format!("version={v}"));
        }
        let mut req = Req::get(path);
        if let Some(tag) = known
            && let Ok(v) = HeaderValue::from_str(&format!("\"{tag}\""))
        {
            req = req.header(reqwest::header::IF_NONE_MATCH, v);
            req.not_modified_ok = true;
        }
        let answer = self.send(req).await?;
        let version = answer
            .headers
            .get(HEADER_DEPOSIT_VERSION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DepositVersion::parse(v).ok())
            .ok_or_else(|| ClientError::Unexpected {
                status: answer.status.as_u16(),
                detail: format!("missing {HEADER_DEPOSIT_VERSION} header"),
            })?;
        let etag = answer
            .headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
            .map(str::to_owned);
        let acl_serial = answer
            .headers
            .get(HEADER_ACL_SERIAL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if answer.status == StatusCode::NOT_MODIFIED {
            let etag = etag.ok_or_else(|| ClientError::Unexpected {
                status: 304,
                detail: "not modified, without an ETag".into(),
            })?;
            return Ok(FetchAnswer::NotModified {
                version,
                etag,
                acl_serial,
            });
        }
        let encoding = answer
            .headers
            .get(HEADER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(FetchAnswer::Full(
            Fetched {
                version,
                payload: answer.body,
                encoding,
                acl_serial,
                source: Source::Server,
            },
            etag,
        ))
    }
}

/// Whether a cached tag has the form the server gives (`VERSION-HEX`), safe to send back.
fn plausible_etag(t: &str) -> bool {
    !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// What one deposit GET got.
enum FetchAnswer {
    /// The payload, and the entity tag that names it.
    Full(Fetched, Option<String>),
    /// `304`: the copy whose tag was sent is current.
    NotModified {
        version: DepositVersion,
        etag: String,
        acl_serial: Option<u64>,
    },
}

/// A cached entry as a fetch result; `None` if its version is not a valid one (a damaged file).
pub(super) fn from_cache(
    e: &crate::cache::CachedEntry,
    source: Source,
    acl_serial: Option<u64>,
) -> Option<Fetched> {
    Some(Fetched {
        version: DepositVersion::new(e.meta.version).ok()?,
        payload: e.payload.clone(),
        encoding: e.meta.encoding.clone(),
        acl_serial,
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn only_tags_of_the_servers_form_are_sent_back() {
        assert!(plausible_etag("3-00112233445566778899aabbccddeeff"));
        for bad in ["", "3\"-x", "a b", "x\r\nInjected: 1", &"a".repeat(129)] {
            assert!(!plausible_etag(bad), "{bad:?}");
        }
    }
}
