//! Sequenced tokens: clone detection for client identities (ADR 0006).
//!
//! Every client holds a token (`COUNTER.SECRET`) that it sends with each authenticated request.
//! The server keeps only SHA-256 hashes: of the current token, and of the tokens it replaced less
//! than a grace window ago (with when each was replaced). When the current token is presented
//! and the rotation interval has passed, the server issues the next one in the response; the
//! client stores it and uses it from then on. A replaced token stays valid for the grace window,
//! so requests that were already in flight when the token rotated (one honest client, many
//! concurrent requests, several processes on one home) still pass, however short the interval.
//!
//! An answer that carried a new token can be lost (a connection reset, a crash before the
//! client stored it). So the server derives every token it issues from the keyring (an HMAC over
//! the fingerprint, the counter and a salt) and can compute the current one again, and it
//! records whether the current token has been presented since it was issued (`confirmed`).
//! While it has not, the token it replaced is answered with the current token again, however
//! late: nobody has shown that they hold the newer one, so the caller is, as far as anyone can
//! tell, the client whose answer was lost. Once it has been presented, an older token gets no
//! copy of it.
//!
//! A copy of the client's home used elsewhere keeps presenting the token it was copied with.
//! Once the original has moved on (and presented its new token) and the grace window has
//! passed, that token is neither current nor recently replaced: the server marks the client
//! `suspected-clone`, refuses both copies, and records why. A copy that talks first after a
//! rotation, before the original presented its new token, is handed the current token too (it
//! cannot be told from a lost answer); the two copies then hold one token until the next
//! rotation, and the first of them to use the token it gets then exposes the other. An
//! administrator investigates and resets the token; the next request is issued a fresh one.
//!
//! A request without a token is refused (`token_required`) but does not lock the client out:
//! somebody holding only the private key cannot lock the real client out by omitting it.

use super::Service;
use crate::error::CoreError;
use crate::secrets;
use crate::store::{
    ClientRecord, Mutation, ReplacedToken, StoreError, TokenDerivation, TokenState,
};
use base64::Engine;
use keysafe_proto::Timestamp;
use keysafe_proto::api::ClientState;

/// A token just issued to the client; the server sends it back in `x-keysafe-token`.
pub struct IssuedToken(pub String);

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedToken([redacted])")
    }
}

/// At most this many replaced tokens are remembered (the grace window bounds them too).
const MAX_RECENT: usize = 64;
/// Rotations one request may lose to concurrent requests before it reports the conflict.
const MAX_LOST_ROTATIONS: u32 = 8;
/// Bytes of the random salt of a derived token.
const SALT_LEN: usize = 16;

fn encode(counter: u64, secret: &[u8]) -> String {
    format!(
        "{counter}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    )
}

/// A new random token for `counter` (one that cannot be derived again), and its state record.
pub(crate) fn new_token(
    counter: u64,
    recent: Vec<ReplacedToken>,
    now: Timestamp,
) -> Result<(IssuedToken, TokenState), CoreError> {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    crate::crypto::random_bytes(&mut raw[..])?;
    let value = encode(counter, &raw[..]);
    let state = TokenState {
        counter,
        hash: Some(secrets::token_hash(&value)),
        recent,
        rotated_at: now,
        confirmed: false,
        derivation: None,
    };
    Ok((IssuedToken(value), state))
}

/// The counter a token claims (for the record of why a client was locked; never trusted).
fn claimed_counter(token: &str) -> String {
    token
        .split_once('.')
        .map(|(c, _)| c)
        .filter(|c| c.len() <= 20 && c.chars().all(|ch| ch.is_ascii_digit()))
        .unwrap_or("?")
        .to_owned()
}

enum Verdict {
    Accept,
    /// Accept, and record that the current token has been presented (and, the first time,
    /// the first use since registration). No new token.
    Confirm,
    /// Accept and rotate (or, after a reset, issue) a token; `replaced` stays valid for the
    /// grace window.
    Rotate {
        replaced: Option<String>,
    },
    /// Accept, and hand the current token again: the token presented is the one the current
    /// token replaced, and the current one has never been presented (its answer was lost).
    Reissue,
    Missing,
    Diverged,
}

fn millis_since(now: Timestamp, then: Timestamp) -> u128 {
    u128::try_from(now.unix_millis().saturating_sub(then.unix_millis())).unwrap_or(0)
}

impl Service {
    fn judge(&self, rec: &ClientRecord, token: Option<&str>, now: Timestamp) -> Verdict {
        let t = &rec.token;
        let presented = token.map(secrets::token_hash);
        let Some(current) = &t.hash else {
            // Reset by an administrator: whatever this client presents, issue a fresh token, and
            // let requests already in flight with the old one pass for the grace window.
            return Verdict::Rotate {
                replaced: presented,
            };
        };
        let Some(presented) = presented else {
            return Verdict::Missing;
        };
        let age = millis_since(now, t.rotated_at);
        let grace = self.limits.token_grace.as_millis();
        if secrets::hashes_equal(&presented, current) {
            if age >= self.limits.token_rotation.as_millis() {
                Verdict::Rotate {
                    replaced: Some(current.clone()),
                }
            } else if !t.confirmed || rec.last_seen_at.is_none() {
                Verdict::Confirm
            } else {
                Verdict::Accept
            }
        } else if !t.confirmed
            && t.derivation.is_some()
            && t.recent
                .first()
                .is_some_and(|r| secrets::hashes_equal(&presented, &r.hash))
        {
            Verdict::Reissue
        } else if t.recent.iter().any(|r| {
            secrets::hashes_equal(&presented, &r.hash) && millis_since(now, r.replaced_at) < grace
        }) {
            Verdict::Accept
        } else {
            Verdict::Diverged
        }
    }

    /// Issues token `counter` for `fingerprint`: derived from the current keyring version
    /// (so it can be issued again), or random while the keyring is sealed.
    fn issue(
        &self,
        fingerprint: &str,
        counter: u64,
        recent: Vec<ReplacedToken>,
        now: Timestamp,
    ) -> Result<(IssuedToken, TokenState), CoreError> {
        let Ok(ring) = self.keyring() else {
            return new_token(counter, recent, now);
        };
        let mut salt = vec![0u8; SALT_LEN];
        crate::crypto::random_bytes(&mut salt)?;
        let version = ring.current_version();
        let secret = ring
            .token_secret(version, fingerprint, counter, &salt)
            .ok_or_else(|| CoreError::Internal("the current keyring version is missing".into()))?;
        let value = encode(counter, &secret);
        let state = TokenState {
            counter,
            hash: Some(secrets::token_hash(&value)),
            recent,
            rotated_at: now,
            confirmed: false,
            derivation: Some(TokenDerivation {
                kek_version: version,
                salt,
            }),
        };
        Ok((IssuedToken(value), state))
    }

    /// The current token of `rec` computed again, if it was derived and the keyring (reloaded
    /// if needed: another process may have rotated) still holds its version.
    async fn derive_again(&self, rec: &ClientRecord) -> Option<IssuedToken> {
        let d = rec.token.derivation.as_ref()?;
        let mut ring = self.keyring().ok()?;
        if !ring.has_version(d.kek_version) {
            let seen = self.reloads_seen();
            self.reload_keyring_since(seen).await.ok()?;
            ring = self.keyring().ok()?;
        }
        let secret = ring.token_secret(
            d.kek_version,
            rec.fingerprint.as_str(),
            rec.token.counter,
            &d.salt,
        )?;
        let value = encode(rec.token.counter, &secret);
        // Only ever the token the state names (a keyring version retired and re-created, or a
        // row edited, must not mint another).
        let current = rec.token.hash.as_deref()?;
        secrets::hashes_equal(&secrets::token_hash(&value), current).then_some(IssuedToken(value))
    }

    /// Checks the token an active client presented; may issue the next one. Called by
    /// [`Service::authenticate`].
    pub(crate) async fn check_token(
        &self,
        rec: &ClientRecord,
        token: Option<&str>,
    ) -> Result<Option<IssuedToken>, CoreError> {
        let mut rec = std::borrow::Cow::Borrowed(rec);
        let mut fresh = false;
        // Rotations this request lost to concurrent ones: each loss re-reads a newer record,
        // so a few are enough however many requests race (the presented token stays valid
        // through the grace window); only an endless stream of losses is reported.
        let mut lost = 0u32;
        loop {
            let now = self.clock.now();
            match self.judge(&rec, token, now) {
                Verdict::Accept => return Ok(None),
                Verdict::Confirm => {
                    let mut state = rec.token.clone();
                    state.confirmed = true;
                    let result = self
                        .store
                        .apply(Mutation::RotateToken {
                            fingerprint: rec.fingerprint.clone(),
                            expected_counter: rec.token.counter,
                            token: state,
                            at: now,
                        })
                        .await;
                    self.forget_identity(&rec.fingerprint);
                    match result {
                        // Read-only database (a failover): the confirmation is recorded by a
                        // later request; the token stays current meanwhile.
                        Ok(_) | Err(StoreError::Conflict | StoreError::ReadOnly) => {
                            return Ok(None);
                        }
                        Err(e) => return Err(CoreError::from_store(e, "client")),
                    }
                }
                Verdict::Missing => return Err(CoreError::TokenRequired),
                // Decided on the stored record only: the identity cache may not know yet that
                // the current token was presented through another node.
                Verdict::Reissue if !fresh => {}
                Verdict::Reissue => {
                    return match self.derive_again(&rec).await {
                        Some(t) => {
                            tracing::info!(
                                client = %rec.fingerprint,
                                counter = rec.token.counter,
                                "the current sequenced token was never presented: issued again"
                            );
                            Ok(Some(t))
                        }
                        // Not derivable any more: what an older token always got.
                        None if rec.token.recent.first().is_some_and(|r| {
                            millis_since(now, r.replaced_at) < self.limits.token_grace.as_millis()
                        }) =>
                        {
                            Ok(None)
                        }
                        None => Err(self.diverged(&rec, token, now).await),
                    };
                }
                Verdict::Rotate { replaced } => {
                    let reset = rec.token.hash.is_none();
                    let counter = rec.token.counter.saturating_add(1);
                    let grace = self.limits.token_grace.as_millis();
                    let recent: Vec<ReplacedToken> = replaced
                        .map(|hash| ReplacedToken {
                            hash,
                            replaced_at: now,
                        })
                        .into_iter()
                        .chain(
                            rec.token
                                .recent
                                .iter()
                                .filter(|r| millis_since(now, r.replaced_at) < grace)
                                .cloned(),
                        )
                        .take(MAX_RECENT)
                        .collect();
                    let (issued, state) =
                        self.issue(rec.fingerprint.as_str(), counter, recent, now)?;
                    let result = self
                        .store
                        .apply(Mutation::RotateToken {
                            fingerprint: rec.fingerprint.clone(),
                            expected_counter: rec.token.counter,
                            token: state,
                            at: now,
                        })
                        .await;
                    self.forget_identity(&rec.fingerprint);
                    match result {
                        Ok(_) => return Ok(Some(issued)),
                        // Another request (maybe on another node) rotated first.
                        Err(StoreError::Conflict) if reset => return Ok(None),
                        // Read-only database (a failover): no rotation, the current token
                        // stays current and is accepted (docs/adr/0012). A token reset by an
                        // administrator has no current token to accept: refused until a fresh
                        // one can be stored.
                        Err(StoreError::ReadOnly) if !reset => return Ok(None),
                        Err(StoreError::Conflict) if lost < MAX_LOST_ROTATIONS => lost += 1,
                        Err(e) => return Err(CoreError::from_store(e, "client")),
                    }
                }
                Verdict::Diverged if !fresh => {}
                Verdict::Diverged => return Err(self.diverged(&rec, token, now).await),
            }
            // The cached record may be stale (another node rotated): judge again on the stored one.
            fresh = true;
            let stored = self
                .verified_client(&rec.fingerprint)
                .await?
                .ok_or(CoreError::UnknownClient)?;
            match stored.state {
                ClientState::Active => {}
                ClientState::SuspectedClone => return Err(CoreError::SuspectedClone),
                ClientState::Disabled => return Err(CoreError::ClientDisabled),
                ClientState::Pending => return Err(CoreError::ClientPending),
            }
            rec = std::borrow::Cow::Owned(stored);
        }
    }

    /// Marks the client a suspected clone, with the reason, and returns the error to answer.
    async fn diverged(&self, rec: &ClientRecord, token: Option<&str>, now: Timestamp) -> CoreError {
        let reason = format!(
            "sequenced token #{} presented at {} is not the current token #{} (issued {}) nor \
             one replaced within the grace window: a copy of this client's identity is in use \
             elsewhere",
            token.map(claimed_counter).unwrap_or_default(),
            now.to_rfc3339(),
            rec.token.counter,
            rec.token.rotated_at.to_rfc3339(),
        );
        tracing::warn!(
            client = %rec.fingerprint,
            reason = %reason,
            "client marked suspected-clone"
        );
        let marked = self
            .store
            .apply(Mutation::MarkSuspectedClone {
                fingerprint: rec.fingerprint.clone(),
                reason,
                at: now,
            })
            .await;
        self.forget_identity(&rec.fingerprint);
        match marked {
            Ok(_) => CoreError::SuspectedClone,
            Err(e) => CoreError::from_store(e, "client"),
        }
    }
}
