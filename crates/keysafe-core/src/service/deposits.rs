//! Deposits: versioned opaque objects owned by the client that created them. Every version is
//! sealed with AES-256-GCM under its own data key; the associated data binds organisation, owner,
//! name and version, so a row copied elsewhere fails to open. The data key is wrapped by the
//! current keyring version under the same binding.

use super::access::Role;
use super::etag::{ContentTag, IfNoneMatch};
use super::{Caller, Service};
use crate::crypto::{self, AadBuilder, SecretKey};
use crate::error::CoreError;
use crate::store::{
    DepositKey, DepositListing, DepositRecord, Mutation, VersionMeta, VersionRecord,
};
use base64::Engine;
use keysafe_proto::api::{
    DepositInfo, DepositList, Encoding, ListQuery, PurgeResponse, PutResponse, VersionInfo,
    VersionList,
};
use keysafe_proto::{DepositName, DepositVersion, OrgName, Principal, Timestamp};
use zeroize::Zeroizing;

/// A decrypted deposit version, as returned to its owner.
pub struct Deposit {
    pub owner: Principal,
    pub name: DepositName,
    pub version: DepositVersion,
    pub created_at: Timestamp,
    pub encoding: Encoding,
    /// The ACL serial the reader saw: a writer that encrypts for this ACL names it on put.
    pub acl_serial: u64,
    /// Names exactly these bytes and headers (see [`ContentTag`]).
    pub etag: ContentTag,
    /// Zeroised when dropped.
    pub payload: Zeroizing<Vec<u8>>,
}

/// The outcome of a conditional read.
#[derive(Debug)]
pub enum DepositRead {
    /// The version, decrypted by the server's envelope (the client's ciphertext for age).
    Full(Deposit),
    /// The caller already holds exactly this version as served: nothing was decrypted.
    NotModified {
        version: DepositVersion,
        encoding: Encoding,
        acl_serial: u64,
        etag: ContentTag,
    },
}

impl std::fmt::Debug for Deposit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deposit")
            .field("name", &self.name)
            .field("version", &self.version)
            .field(
                "payload",
                &format_args!("[{} bytes redacted]", self.payload.len()),
            )
            .finish()
    }
}

/// A write precondition (HTTP `If-Match` / `If-None-Match: *`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// The current version must be exactly this.
    IfMatch(DepositVersion),
    /// The deposit must not exist yet.
    IfAbsent,
}

/// How a put is to be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOptions {
    pub precondition: Precondition,
    pub encoding: Encoding,
    /// The ACL serial the writer encrypted for (a changed ACL is a version conflict).
    pub acl_serial: Option<u64>,
}

impl Default for PutOptions {
    fn default() -> Self {
        Self {
            precondition: Precondition::None,
            encoding: Encoding::Raw,
            acl_serial: None,
        }
    }
}

/// How many times a put without precondition retries when another writer got in first.
const PUT_RETRIES: usize = 8;

fn bind(
    domain: &str,
    org: &OrgName,
    owner: &Principal,
    name: &DepositName,
    v: DepositVersion,
) -> Vec<u8> {
    AadBuilder::new(domain)
        .field(org.as_str().as_bytes())
        .field(owner.stored().as_bytes())
        .field(name.as_str().as_bytes())
        .number(v.get())
        .finish()
}

pub(crate) fn payload_aad(
    org: &OrgName,
    owner: &Principal,
    name: &DepositName,
    v: DepositVersion,
) -> Vec<u8> {
    bind("keysafe/deposit/v1", org, owner, name, v)
}

pub(crate) fn dek_aad(
    org: &OrgName,
    owner: &Principal,
    name: &DepositName,
    v: DepositVersion,
) -> Vec<u8> {
    bind("keysafe/dek/v1", org, owner, name, v)
}

pub(crate) fn deposit_info(r: &DepositRecord) -> DepositInfo {
    DepositInfo {
        owner: r.owner.wire(),
        name: r.name.clone(),
        version: r.current_version,
        size: r.current_size,
        deleted: r.deleted,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

fn version_info(m: &VersionMeta) -> VersionInfo {
    VersionInfo {
        version: m.version,
        size: m.size,
        created_at: m.created_at,
        creator: m.creator.clone(),
        encoding: m.encoding,
    }
}

impl Service {
    /// Seals one version's payload under a fresh data key bound to where it lives.
    pub(crate) async fn seal_version(
        &self,
        org: &OrgName,
        key: &DepositKey,
        meta: VersionMeta,
        payload: &[u8],
    ) -> Result<VersionRecord, CoreError> {
        let keyring = self.keyring()?;
        let dek = SecretKey::generate()?;
        let ciphertext = crypto::seal(
            &dek,
            &payload_aad(org, &key.owner, &key.name, meta.version),
            payload,
        )?;
        let (kek_version, wrapped_dek) = self
            .wrap_dek(
                &keyring,
                dek_aad(org, &key.owner, &key.name, meta.version),
                &dek,
            )
            .await?;
        Ok(VersionRecord {
            meta,
            kek_version,
            wrapped_dek,
            ciphertext,
        })
    }

    /// Stores a new version. Without a precondition, a concurrent writer is retried around;
    /// with one, a lost race is a [`CoreError::VersionConflict`].
    pub async fn put_deposit(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
        payload: &[u8],
        opts: PutOptions,
    ) -> Result<PutResponse, CoreError> {
        if payload.len() > self.limits.max_deposit_size {
            return Err(CoreError::PayloadTooLarge {
                limit: self.limits.max_deposit_size,
            });
        }
        let pre = opts.precondition;
        self.keyring()?;
        let (key, _) = self.resolve_for(caller, owner, name, Role::Writer).await?;
        // Writers to the same deposit through this node take turns instead of racing for the
        // next version number (the version is sealed into the ciphertext, so it must be chosen
        // before the write). An unconditional put ends its turn once its version is queued, so
        // the versions of a busy deposit share commits; a conditional one settles first and
        // keeps its turn until it commits, so it judges its condition on what is stored.
        // Writers on other nodes are handled by the store's compare-and-set.
        let pipelined = pre == Precondition::None && opts.acl_serial.is_none();
        for _ in 0..PUT_RETRIES {
            let mut turn = self.write_turns.take(&key).await;
            if !pipelined {
                turn.settle().await;
            }
            let current = self.verified_deposit(&key).await?;
            if current.as_ref().is_some_and(|d| d.deleted) {
                return Err(CoreError::Deleted);
            }
            let stored = current.as_ref().map(|d| d.current_version);
            let current_version = match turn.pending() {
                Some(p) if stored.is_none_or(|s| p > s) => Some(p),
                _ => stored,
            };
            match pre {
                Precondition::IfMatch(v) if current_version != Some(v) => {
                    return Err(CoreError::VersionConflict {
                        current: current_version,
                    });
                }
                Precondition::IfAbsent if current_version.is_some() => {
                    return Err(CoreError::VersionConflict {
                        current: current_version,
                    });
                }
                _ => {}
            }
            let version = current_version.map_or(DepositVersion::FIRST, DepositVersion::next);
            let created_at = self.clock.now();
            let size = payload.len() as u64;
            let record = self
                .seal_version(
                    &caller.org,
                    &key,
                    VersionMeta {
                        version,
                        size,
                        created_at,
                        creator: caller.fingerprint.clone(),
                        encoding: opts.encoding,
                    },
                    payload,
                )
                .await?;
            crate::audit::note(|e| e.version = Some(version.get()));
            let wrapped_with = record.kek_version;
            let reloads = self.reloads_seen();
            let queued = self
                .submit_audited(Mutation::PutVersion {
                    org: caller.org.clone(),
                    key: key.clone(),
                    expected_current: current_version,
                    expected_acl_serial: opts.acl_serial,
                    version: record,
                })
                .await
                .map_err(|e| CoreError::from_store(e, "deposit"))?;
            let (kept, in_flight) = if pipelined {
                (None, Some(turn.queued(version)))
            } else {
                (Some(turn), None)
            };
            let result = queued.await;
            drop((kept, in_flight));
            match result {
                Ok(_) => {
                    return Ok(PutResponse {
                        name: key.name,
                        version,
                        size,
                        created_at,
                    });
                }
                // Another writer came first, or the write this one was queued behind failed.
                Err(crate::store::StoreError::VersionConflict { .. }) if pipelined => {
                    continue;
                }
                // The keyring version it was wrapped with was retired by another process:
                // seal it again with the keyring the store has now.
                Err(crate::store::StoreError::Unavailable(_))
                    if self.kek_retired(wrapped_with, reloads).await =>
                {
                    continue;
                }
                Err(e) => return Err(CoreError::from_store(e, "deposit")),
            }
        }
        Err(CoreError::Unavailable(
            "too many concurrent writers to this deposit; retry".into(),
        ))
    }

    /// Returns the current (or a given) version, decrypted. Other clients' deposits do not exist
    /// as far as the caller can tell.
    pub async fn get_deposit(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
        version: Option<DepositVersion>,
    ) -> Result<Deposit, CoreError> {
        match self
            .read_deposit(caller, owner, name, version, &IfNoneMatch::Absent)
            .await?
        {
            DepositRead::Full(d) => Ok(d),
            // Unreachable with `Absent`, which matches nothing; an error rather than a panic.
            DepositRead::NotModified { .. } => Err(CoreError::Internal(
                "an unconditional read answered not-modified".into(),
            )),
        }
    }

    /// A conditional read: like [`Self::get_deposit`], but when `known` matches the version's
    /// tag, answers [`DepositRead::NotModified`] without decrypting anything. Every check of an
    /// unconditional read (sealed, access, deleted, version exists) comes first, so a caller
    /// that lost access learns it (`not_found`) instead of hearing that its copy is current.
    pub async fn read_deposit(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
        version: Option<DepositVersion>,
        known: &IfNoneMatch,
    ) -> Result<DepositRead, CoreError> {
        let keyring = self.keyring()?;
        let (key, _) = self.resolve(caller, owner, name).await?;
        let row = self
            .store
            .get_version(&key, version)
            .await?
            .ok_or(CoreError::NotFound("deposit"))?;
        let (dep, ver, memo) = &*row;
        self.verify_deposit(dep)?;
        if dep.deleted {
            return Err(CoreError::Deleted);
        }
        let v = ver.meta.version;
        crate::audit::note(|e| e.version = Some(v.get()));
        let etag = match memo.etag() {
            Some(tag) => ContentTag::from_shared(tag.clone()),
            None => {
                let tag = ContentTag::compute(
                    &key.owner,
                    &key.name,
                    v,
                    dep.acl_serial,
                    ver.meta.encoding,
                    &ver.ciphertext,
                );
                memo.keep_etag(tag.shared());
                tag
            }
        };
        if known.matches(&etag) {
            return Ok(DepositRead::NotModified {
                version: v,
                encoding: ver.meta.encoding,
                acl_serial: dep.acl_serial,
                etag,
            });
        }
        let unwrapped;
        // A key kept in keyring mode is never used in per-deposit mode, where every read must
        // reach the HSM (the mode changes only offline today; this holds if that changes).
        let dek = match memo.dek().filter(|_| !keyring.per_deposit()) {
            Some(dek) => dek,
            None => {
                unwrapped = self
                    .unwrap_dek(
                        &keyring,
                        ver.kek_version,
                        dek_aad(&dep.org, &key.owner, &key.name, v),
                        &ver.wrapped_dek,
                        || format!("data key of {}@{v}", key.name),
                    )
                    .await?;
                if !keyring.per_deposit() {
                    self.keep_dek(memo, &unwrapped);
                }
                &unwrapped
            }
        };
        let payload = crypto::open(
            dek,
            &payload_aad(&dep.org, &key.owner, &key.name, v),
            &ver.ciphertext,
        )
        .map_err(|_| CoreError::Integrity(format!("payload of {}@{v} does not open", key.name)))?;
        Ok(DepositRead::Full(Deposit {
            owner: key.owner,
            name: key.name,
            version: v,
            created_at: ver.meta.created_at,
            encoding: ver.meta.encoding,
            acl_serial: dep.acl_serial,
            etag,
            payload: Zeroizing::new(payload),
        }))
    }

    pub async fn list_deposits(
        &self,
        caller: &Caller,
        q: ListQuery,
    ) -> Result<DepositList, CoreError> {
        let owner = Self::owner_principal(caller, q.owner.as_deref())?;
        if let Principal::Client(fp) = &owner
            && fp != &caller.fingerprint
        {
            return Err(CoreError::Forbidden(
                "list another client's deposits? only its own; see `GET /v1/shared`".into(),
            ));
        }
        if owner.is_group() && !self.is_member(caller, &owner).await? {
            return Err(CoreError::NotFound("group"));
        }
        let prefix = q.prefix.unwrap_or_default();
        DepositName::validate_prefix(&prefix)?;
        let limit = q
            .limit
            .unwrap_or(ListQuery::DEFAULT_LIMIT)
            .clamp(1, ListQuery::MAX_LIMIT);
        let after = match q.page_token.as_deref() {
            None | Some("") => None,
            Some(t) => {
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| CoreError::InvalidInput("invalid page_token".into()))?;
                Some(raw)
            }
        };
        // Ask for one more than the page to learn whether another page follows.
        let mut rows = self
            .store
            .list_deposits(DepositListing {
                owner: &owner,
                prefix: &prefix,
                after: after.as_deref(),
                limit: limit + 1,
                include_deleted: q.deleted.unwrap_or(false),
            })
            .await?;
        for d in &rows {
            self.verify_deposit(d)?;
        }
        let next_page_token = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last()
                .map(|r| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r.name.as_str()))
        } else {
            None
        };
        Ok(DepositList {
            deposits: rows.iter().map(deposit_info).collect(),
            next_page_token,
        })
    }

    pub async fn list_versions(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
    ) -> Result<VersionList, CoreError> {
        let (key, _) = self.resolve(caller, owner, name).await?;
        let dep = self
            .verified_deposit(&key)
            .await?
            .ok_or(CoreError::NotFound("deposit"))?;
        let versions = self.store.list_versions(&key).await?;
        Ok(VersionList {
            name: key.name,
            deleted: dep.deleted,
            versions: versions.iter().map(version_info).collect(),
        })
    }

    async fn set_deleted(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
        deleted: bool,
    ) -> Result<DepositInfo, CoreError> {
        let (key, _) = self.resolve_for(caller, owner, name, Role::Owner).await?;
        let mut dep = self
            .verified_deposit(&key)
            .await?
            .ok_or(CoreError::NotFound("deposit"))?;
        if dep.deleted == deleted {
            return Err(CoreError::InvalidState(if deleted {
                "the deposit is deleted already".into()
            } else {
                "the deposit is not deleted".into()
            }));
        }
        let at = self.clock.now();
        self.apply_audited(Mutation::SetDeleted { key, deleted, at })
            .await
            .map_err(|e| CoreError::from_store(e, "deposit"))?;
        dep.deleted = deleted;
        dep.updated_at = at;
        Ok(deposit_info(&dep))
    }

    /// Soft delete: hidden from get and ls, restorable with undelete.
    pub async fn delete_deposit(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
    ) -> Result<DepositInfo, CoreError> {
        self.set_deleted(caller, owner, name, true).await
    }

    pub async fn undelete_deposit(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
    ) -> Result<DepositInfo, CoreError> {
        self.set_deleted(caller, owner, name, false).await
    }

    /// Destroys every version, deleted or not. Irreversible.
    pub async fn purge_deposit(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
    ) -> Result<PurgeResponse, CoreError> {
        let (key, _) = self.resolve_for(caller, owner, name, Role::Owner).await?;
        let applied = self
            .apply_audited(Mutation::Purge { key: key.clone() })
            .await
            .map_err(|e| CoreError::from_store(e, "deposit"))?;
        let purged_versions = match applied {
            crate::store::Applied::Purged(n) => n,
            _ => 0,
        };
        Ok(PurgeResponse {
            name: key.name,
            purged_versions,
        })
    }
}
