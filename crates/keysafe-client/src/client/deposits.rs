//! Writing and managing deposits: put (with its preconditions), list, versions, delete,
//! undelete and purge; the path of a deposit call, and the cache invalidation around every
//! write. Reading a deposit is in the `fetch` module.

use super::request::percent_encode;
use super::{HEADER_ENCODING, KeysafeClient, Req};
use crate::error::ClientError;
use bytes::Bytes;
use keysafe_proto::api::{
    DepositInfo, DepositList, Encoding, ListQuery, PurgeResponse, PutResponse, VersionList,
};
use keysafe_proto::{DepositName, DepositVersion, HEADER_ACL_SERIAL};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;

/// A write precondition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// Only if the current version is this one (`If-Match`).
    IfMatch(DepositVersion),
    /// Only if the deposit does not exist yet (`If-None-Match: *`).
    IfAbsent,
}

/// How a put is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutParams {
    pub precondition: Precondition,
    pub encoding: Encoding,
    /// The ACL serial the payload was encrypted for (a changed ACL is a conflict).
    pub acl_serial: Option<u64>,
}

impl Default for PutParams {
    fn default() -> Self {
        Self {
            precondition: Precondition::None,
            encoding: Encoding::Raw,
            acl_serial: None,
        }
    }
}

impl KeysafeClient {
    pub(super) fn invalidate(&self, owner: Option<&str>, name: &DepositName) {
        if let Some(cache) = &self.inner.cache
            && let Err(e) = cache.invalidate(owner.unwrap_or(&self.inner.me), name.as_str())
        {
            tracing::warn!(error = %e, "cannot drop a cache entry");
        }
    }

    /// A write to a deposit: its cache entries are dropped before as well as after, so that if
    /// the outcome is unknown no old copy stays fresh.
    pub(super) async fn write_json<T: DeserializeOwned>(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        req: Req,
    ) -> Result<T, ClientError> {
        self.invalidate(owner, name);
        let r = self.json(req).await;
        self.invalidate(owner, name);
        r
    }

    /// `?owner=` for a deposit of another principal (none for the caller's own).
    pub(super) fn deposit_path(owner: Option<&str>, name: &DepositName, op: &str) -> String {
        let mut p = format!("/v1/deposits/{name}{op}");
        if let Some(o) = owner {
            p.push_str("?owner=");
            p.push_str(&percent_encode(o));
        }
        p
    }

    pub async fn put(
        &self,
        name: &DepositName,
        payload: impl Into<Bytes>,
        pre: Precondition,
    ) -> Result<PutResponse, ClientError> {
        self.put_with(
            None,
            name,
            payload,
            PutParams {
                precondition: pre,
                ..PutParams::default()
            },
        )
        .await
    }

    /// Stores a new version of the caller's deposit or (`owner`) of one it may write.
    pub async fn put_with(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        payload: impl Into<Bytes>,
        params: PutParams,
    ) -> Result<PutResponse, ClientError> {
        let mut req = Req::new(Method::PUT, Self::deposit_path(owner, name, ""))
            .body("application/octet-stream", payload.into())
            .header(
                HeaderName::from_static(HEADER_ENCODING),
                HeaderValue::from_static(params.encoding.as_str()),
            );
        if let Some(serial) = params.acl_serial {
            req = req.header(
                HeaderName::from_static(HEADER_ACL_SERIAL),
                HeaderValue::from(serial),
            );
        }
        req = match params.precondition {
            Precondition::None => req,
            Precondition::IfMatch(v) => req.header(
                reqwest::header::IF_MATCH,
                HeaderValue::from_str(&format!("\"{v}\""))
                    .map_err(|e| ClientError::Invalid(e.to_string()))?,
            ),
            Precondition::IfAbsent => req.header(
                reqwest::header::IF_NONE_MATCH,
                HeaderValue::from_static("*"),
            ),
        };
        self.write_json(owner, name, req).await
    }

    pub async fn list(&self, q: &ListQuery) -> Result<DepositList, ClientError> {
        self.json(Req::get("/v1/deposits").query(q)?).await
    }

    pub async fn versions(&self, name: &DepositName) -> Result<VersionList, ClientError> {
        self.versions_of(None, name).await
    }

    pub async fn versions_of(
        &self,
        owner: Option<&str>,
        name: &DepositName,
    ) -> Result<VersionList, ClientError> {
        self.json(Req::get(Self::deposit_path(owner, name, ":versions")))
            .await
    }

    pub async fn delete(&self, name: &DepositName) -> Result<DepositInfo, ClientError> {
        self.delete_of(None, name).await
    }

    pub async fn delete_of(
        &self,
        owner: Option<&str>,
        name: &DepositName,
    ) -> Result<DepositInfo, ClientError> {
        self.write_json(
            owner,
            name,
            Req::new(Method::DELETE, Self::deposit_path(owner, name, "")),
        )
        .await
    }

    pub async fn undelete(&self, name: &DepositName) -> Result<DepositInfo, ClientError> {
        self.undelete_of(None, name).await
    }

    pub async fn undelete_of(
        &self,
        owner: Option<&str>,
        name: &DepositName,
    ) -> Result<DepositInfo, ClientError> {
        self.write_json(
            owner,
            name,
            Req::post(Self::deposit_path(owner, name, ":undelete")),
        )
        .await
    }

    pub async fn purge(&self, name: &DepositName) -> Result<PurgeResponse, ClientError> {
        self.purge_of(None, name).await
    }

    pub async fn purge_of(
        &self,
        owner: Option<&str>,
        name: &DepositName,
    ) -> Result<PurgeResponse, ClientError> {
        self.write_json(
            owner,
            name,
            Req::post(Self::deposit_path(owner, name, ":purge")),
        )
        .await
    }
}
