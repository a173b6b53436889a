//! End-to-end encrypted deposits on top of [`KeysafeClient`]: put encrypts to the deposit's
//! recipients before anything leaves the host, get decrypts with this client's identity (or one
//! of its groups'), sharing re-encrypts every version for the new recipient set, and groups hand
//! their identity to members wrapped to each member's own recipient.

use crate::client::{CacheUse, KeysafeClient, Precondition, PutParams, Source};
use crate::e2e::{self, Identity};
use crate::error::ClientError;
use crate::home::ClientHome;
use base64::Engine;
use keysafe_proto::api::{
    Acl, AclChange, AclUpdate, Encoding, GroupAdmitRequest, GroupCreateRequest, GroupInfo,
    GroupRemoveMember, MemberKey, PutResponse, ReencryptedVersion, WrappedEpoch,
};
use keysafe_proto::{
    ClientFingerprint, DepositName, DepositVersion, ErrorCode, GroupName, OrgName,
};
use std::sync::Mutex;
use zeroize::Zeroizing;

/// How many times an operation that lost a race (a concurrent put or ACL change) starts over.
const RACE_RETRIES: usize = 5;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Result<Vec<u8>, ClientError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| ClientError::Unexpected {
            status: 200,
            detail: "a wrapped key is not base64".into(),
        })
}

fn is_conflict(e: &ClientError) -> bool {
    e.code() == Some(ErrorCode::VersionConflict)
}

/// A decrypted deposit version.
pub struct Opened {
    pub version: DepositVersion,
    pub encoding: Encoding,
    /// Zeroised when dropped.
    pub plaintext: Zeroizing<Vec<u8>>,
    pub source: Source,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("version", &self.version)
            .field("encoding", &self.encoding)
            .field(
                "plaintext",
                &format_args!("[{} bytes redacted]", self.plaintext.len()),
            )
            .finish()
    }
}

/// A client with its encryption identity.
pub struct Vault {
    client: KeysafeClient,
    me: Identity,
    groups: Mutex<Option<Vec<Identity>>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("client", &self.client)
            .field("recipient", &self.me.recipient())
            .finish()
    }
}

impl Vault {
    pub fn new(client: KeysafeClient, me: Identity) -> Self {
        Self {
            client,
            me,
            groups: Mutex::new(None),
        }
    }

    /// The vault of a registered home (`age.key` next to `client.key`).
    pub fn from_home(home: &ClientHome, client: KeysafeClient) -> Result<Self, ClientError> {
        let me = Identity::read_file(&home.dir.join(e2e::AGE_KEY_FILE)).map_err(|e| match e {
            ClientError::Home(m) if m.contains("cannot read") => ClientError::Home(format!(
                "{m}: this client has no encryption identity (registered before end-to-end \
                 encryption?); use --raw"
            )),
            other => other,
        })?;
        Ok(Self::new(client, me))
    }

    pub fn client(&self) -> &KeysafeClient {
        &self.client
    }

    pub fn recipient(&self) -> String {
        self.me.recipient()
    }

    /// The recipient of a principal (`None`: this client).
    async fn recipient_of(&self, principal: Option<&str>) -> Result<String, ClientError> {
        match principal {
            None => Ok(self.me.recipient()),
            Some(p) => Ok(self.client.recipient(p).await?.recipient),
        }
    }

    /// Every recipient for an ACL as it is, or as it will be after `change`.
    async fn recipients_for(
        &self,
        acl: &Acl,
        change: Option<&AclChange>,
    ) -> Result<Vec<String>, ClientError> {
        let mut principals: Vec<String> = vec![acl.owner.clone()];
        principals.extend(acl.grants.iter().map(|g| g.grantee.clone()));
        match change {
            Some(AclChange::Grant { grantee, .. }) => principals.push(grantee.clone()),
            Some(AclChange::Revoke { grantee }) => principals.retain(|p| p != grantee),
            None => {}
        }
        let mut out = Vec::with_capacity(principals.len());
        for p in principals {
            match self.client.recipient(&p).await {
                Ok(r) if !out.contains(&r.recipient) => out.push(r.recipient),
                Ok(_) => {}
                // A grantee without a recipient (registered for raw deposits) cannot be
                // encrypted to; it is left out and cannot read age deposits.
                Err(e) if e.code() == Some(ErrorCode::InvalidState) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Encrypts `plaintext` to the deposit's recipients and stores it as a new version.
    pub async fn put(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        plaintext: &[u8],
        pre: Precondition,
    ) -> Result<PutResponse, ClientError> {
        let mut last = None;
        for _ in 0..RACE_RETRIES {
            let (recipients, serial) = match self.client.acl(owner, name).await {
                Ok(acl) => (acl.recipients, Some(acl.acl_serial)),
                Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                    (vec![self.recipient_of(owner).await?], None)
                }
                Err(e) => return Err(e),
            };
            let ct = e2e::encrypt(&recipients, plaintext)?;
            match self
                .client
                .put_with(
                    owner,
                    name,
                    ct,
                    PutParams {
                        precondition: pre,
                        encoding: Encoding::Age,
                        acl_serial: serial,
                    },
                )
                .await
            {
                // The ACL changed (or the deposit appeared) between reading it and writing:
                // encrypt again for the current recipients, unless the caller set a condition.
                Err(e) if is_conflict(&e) && pre == Precondition::None => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Invalid("too many concurrent changes".into())))
    }

    /// This client's group identities (every epoch it holds), fetched once.
    async fn group_identities(&self) -> Result<Vec<Identity>, ClientError> {
        if let Ok(g) = self.groups.lock()
            && let Some(ids) = g.as_ref()
        {
            return Ok(ids.clone());
        }
        let mut ids = Vec::new();
        for g in self.client.groups().await?.groups {
            for k in self.client.group_keys(&g.name).await?.keys {
                if let Ok(id) = e2e::unwrap_identity(&self.me, &unb64(&k.wrapped)?) {
                    ids.push(id);
                }
            }
        }
        if let Ok(mut g) = self.groups.lock() {
            *g = Some(ids.clone());
        }
        Ok(ids)
    }

    /// Decrypts an age payload with this client's identity, then its groups'.
    pub async fn decrypt(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        self.decrypt_for(false, ciphertext).await
    }

    /// [`Self::decrypt`]; with `group_owned`, the groups' identities are tried first: a payload
    /// of a group's deposit is most likely for them, and a failed attempt with this client's
    /// own identity costs two X25519 multiplications per recipient.
    async fn decrypt_for(
        &self,
        group_owned: bool,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let as_me = || e2e::decrypt(std::slice::from_ref(&self.me), ciphertext);
        let mut mine = None;
        if !group_owned {
            match as_me() {
                Ok(p) => return Ok(p),
                Err(e) => mine = Some(e),
            }
        }
        let groups = self.group_identities().await?;
        if !groups.is_empty()
            && let Ok(p) = e2e::decrypt(&groups, ciphertext)
        {
            return Ok(p);
        }
        let first = match mine {
            Some(e) => e,
            None => match as_me() {
                Ok(p) => return Ok(p),
                Err(e) => e,
            },
        };
        // Membership may have changed since the identities were fetched (admitted since, or a
        // new epoch): fetch them again once.
        self.forget_groups();
        let groups = self.group_identities().await?;
        if groups.is_empty() {
            return Err(first);
        }
        e2e::decrypt(&groups, ciphertext)
    }

    /// Fetches and decrypts a version (raw deposits are returned as stored).
    pub async fn get(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        version: Option<DepositVersion>,
        cache_use: CacheUse,
    ) -> Result<Opened, ClientError> {
        let f = self.client.get_of(owner, name, version, cache_use).await?;
        let encoding = f
            .encoding
            .as_deref()
            .and_then(Encoding::parse)
            .unwrap_or(Encoding::Raw);
        let group_owned =
            owner.is_some_and(|o| o.starts_with(keysafe_proto::principal::GROUP_PREFIX));
        let plaintext = match encoding {
            Encoding::Age => self.decrypt_for(group_owned, &f.payload).await?,
            Encoding::Raw => Zeroizing::new(f.payload.to_vec()),
        };
        Ok(Opened {
            version: f.version,
            encoding,
            plaintext,
            source: f.source,
        })
    }

    /// Grants or revokes access, re-encrypting every age version for the new recipient set.
    /// `progress(done, total)` is called as versions are re-encrypted.
    pub async fn change_acl(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        change: AclChange,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Acl, ClientError> {
        let mut last = None;
        for _ in 0..RACE_RETRIES {
            let acl = self.client.acl(owner, name).await?;
            let recipients = self.recipients_for(&acl, Some(&change)).await?;
            let list = self.client.versions_of(owner, name).await?;
            let age_versions: Vec<DepositVersion> = list
                .versions
                .iter()
                .filter(|v| v.encoding == Encoding::Age)
                .map(|v| v.version)
                .collect();
            let total = age_versions.len();
            let mut versions = Vec::with_capacity(total);
            for (i, v) in age_versions.into_iter().enumerate() {
                let f = self
                    .client
                    .get_of(owner, name, Some(v), CacheUse::Refresh)
                    .await?;
                let plain = self.decrypt(&f.payload).await?;
                versions.push(ReencryptedVersion {
                    version: v,
                    payload: b64(&e2e::encrypt(&recipients, &plain)?),
                });
                progress(i + 1, total);
            }
            let update = AclUpdate {
                change: change.clone(),
                expected_version: acl.version,
                expected_acl_serial: acl.acl_serial,
                versions,
            };
            match self.client.update_acl(owner, name, &update).await {
                Err(e) if is_conflict(&e) => {
                    // A version was added or the ACL changed meanwhile: start over.
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Invalid("too many concurrent changes".into())))
    }

    /// Creates a group in this client's organisation with itself and `others` as members.
    pub async fn create_group(
        &self,
        name: &GroupName,
        others: &[ClientFingerprint],
    ) -> Result<GroupInfo, ClientError> {
        let id = Identity::generate();
        let mut members = vec![MemberKey {
            fingerprint: self.client_fingerprint()?,
            wrapped: b64(&e2e::wrap_identity(&id, &self.me.recipient())?),
        }];
        for fp in others {
            let r = self.client.recipient(fp.as_str()).await?.recipient;
            members.push(MemberKey {
                fingerprint: fp.clone(),
                wrapped: b64(&e2e::wrap_identity(&id, &r)?),
            });
        }
        let g = self
            .client
            .create_group(&GroupCreateRequest {
                org: None,
                name: name.clone(),
                recipient: id.recipient(),
                members,
            })
            .await?;
        self.forget_groups();
        Ok(g)
    }

    fn client_fingerprint(&self) -> Result<ClientFingerprint, ClientError> {
        self.client
            .own_fingerprint()
            .ok_or_else(|| ClientError::Invalid("this client has no identity of its own".into()))
    }

    fn forget_groups(&self) {
        if let Ok(mut g) = self.groups.lock() {
            *g = None;
        }
    }

    /// Hands every group identity this client holds to `member` (added by an administrator).
    pub async fn admit(
        &self,
        group: &GroupName,
        member: &ClientFingerprint,
    ) -> Result<GroupInfo, ClientError> {
        let info = self.client.group(group).await?;
        let target = info
            .members
            .iter()
            .find(|m| &m.fingerprint == member)
            .ok_or_else(|| {
                ClientError::Invalid(format!(
                    "{member} is not a member of {group}; an administrator adds it first \
                     (keysafe admin group add-member)"
                ))
            })?;
        let recipient = target
            .recipient
            .clone()
            .ok_or_else(|| ClientError::Invalid(format!("{member} has no encryption recipient")))?;
        let mine = self.client.group_keys(group).await?;
        let mut keys = Vec::with_capacity(mine.keys.len());
        for k in &mine.keys {
            if target.epochs.contains(&k.epoch) {
                continue;
            }
            let id = e2e::unwrap_identity(&self.me, &unb64(&k.wrapped)?)?;
            keys.push(WrappedEpoch {
                epoch: k.epoch,
                wrapped: b64(&e2e::wrap_identity(&id, &recipient)?),
            });
        }
        if keys.is_empty() {
            return Ok(info);
        }
        self.client
            .admit(
                group,
                &GroupAdmitRequest {
                    member: member.clone(),
                    keys,
                },
            )
            .await
    }

    /// Admits every member of the group that lacks the current identity (a KMS gateway runs
    /// this so that a gateway an administrator added can read the shared keys).
    pub async fn admit_pending(
        &self,
        group: &GroupName,
    ) -> Result<Vec<ClientFingerprint>, ClientError> {
        let info = self.client.group(group).await?;
        let mut done = Vec::new();
        for m in info.members.iter().filter(|m| !m.has_current_key) {
            if m.recipient.is_some() {
                self.admit(group, &m.fingerprint).await?;
                done.push(m.fingerprint.clone());
            }
        }
        Ok(done)
    }
}

/// Administrator: creates a group in `org` for `members`, wrapping a new identity for each.
/// The administrator's host sees the identity only while wrapping it.
pub async fn admin_create_group(
    admin: &KeysafeClient,
    org: &OrgName,
    name: &GroupName,
    members: &[ClientFingerprint],
) -> Result<GroupInfo, ClientError> {
    if members.is_empty() {
        return Err(ClientError::Invalid(
            "a group needs at least one member (--member FP)".into(),
        ));
    }
    let clients = admin.list_clients(Some(org), None).await?.clients;
    let id = Identity::generate();
    let mut keys = Vec::with_capacity(members.len());
    for fp in members {
        let c = clients
            .iter()
            .find(|c| &c.fingerprint == fp)
            .ok_or_else(|| ClientError::Invalid(format!("no client {fp} in {org}")))?;
        let r = c.recipient.as_deref().ok_or_else(|| {
            ClientError::Invalid(format!("client {fp} has no encryption recipient"))
        })?;
        keys.push(MemberKey {
            fingerprint: fp.clone(),
            wrapped: b64(&e2e::wrap_identity(&id, r)?),
        });
    }
    admin
        .admin_create_group(&GroupCreateRequest {
            org: Some(org.clone()),
            name: name.clone(),
            recipient: id.recipient(),
            members: keys,
        })
        .await
}

/// Administrator: removes a member and opens a new epoch wrapped for everyone else.
pub async fn admin_remove_member(
    admin: &KeysafeClient,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
) -> Result<GroupInfo, ClientError> {
    let info = admin.admin_group(org, name).await?;
    let id = Identity::generate();
    let mut keys = Vec::new();
    for m in info.members.iter().filter(|m| &m.fingerprint != member) {
        let r = m.recipient.as_deref().ok_or_else(|| {
            ClientError::Invalid(format!(
                "member {} has no encryption recipient",
                m.fingerprint
            ))
        })?;
        keys.push(MemberKey {
            fingerprint: m.fingerprint.clone(),
            wrapped: b64(&e2e::wrap_identity(&id, r)?),
        });
    }
    admin
        .admin_remove_member(
            org,
            name,
            &GroupRemoveMember {
                member: member.clone(),
                expected_epoch: info.epoch,
                recipient: id.recipient(),
                keys,
            },
        )
        .await
}
