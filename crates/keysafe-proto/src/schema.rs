//! OpenAPI schemas of the validated wire values whose serde form is hand-written (a string or
//! a number checked on the way in): each is described as what it is on the wire, with the
//! pattern or range its parser enforces, so that the contract served at `/v1/openapi.json`
//! says what a peer may send. The structs and enums around them derive theirs.

use crate::api::AuthSecret;
use crate::cluster::NodeId;
use crate::{ClientFingerprint, ClientName, DepositName, DepositVersion, GroupName, OrgName};
use crate::{Timestamp, names::DEPOSIT_NAME_RULE, names::ORG_NAME_RULE};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

macro_rules! schema {
    ($ty:ty, $build:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                let b: ObjectBuilder = $build;
                RefOr::T(Schema::Object(b.build()))
            }
        }
        impl ToSchema for $ty {}
    };
}

schema!(
    ClientFingerprint,
    string("SHA-256 of the DER SubjectPublicKeyInfo, 64 lowercase hex characters")
        .pattern(Some("^[0-9a-f]{64}$"))
);
schema!(
    DepositName,
    string(DEPOSIT_NAME_RULE)
        .min_length(Some(1))
        .max_length(Some(DepositName::MAX_LEN))
        .pattern(Some("^[A-Za-z0-9._/-]+$"))
);
schema!(
    OrgName,
    string(ORG_NAME_RULE)
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some("^[A-Za-z0-9][A-Za-z0-9._-]*$"))
);
schema!(
    GroupName,
    string(crate::principal::GROUP_NAME_RULE)
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some("^[A-Za-z0-9][A-Za-z0-9._-]*$"))
);
schema!(
    ClientName,
    string("a client name (a label): 1-128 characters, no control characters")
        .min_length(Some(1))
        .max_length(Some(128))
);
schema!(
    DepositVersion,
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .description(Some(
            "a deposit version: 1 for the first put, one more for each put"
        ))
        .minimum(Some(1))
        .maximum(Some(DepositVersion::MAX as f64))
);
schema!(
    Timestamp,
    string("RFC 3339 in UTC with milliseconds, such as 2026-11-28T17:36:42.941Z")
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
);
schema!(
    NodeId,
    string("a cluster node id: 1-64 characters of a-z 0-9 . _ -")
        .pattern(Some("^[a-z0-9._-]{1,64}$"))
);
schema!(
    AuthSecret,
    string("an organisation auth secret or a one-time registration token (ksr_...)")
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
);
