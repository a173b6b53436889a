//! The definitions of what an export holds: [`RECORD_KINDS`], each kind with its fields (their
//! types, whether they may be null, the default a reader fills in for an older export) and the
//! fields that identify a record.

/// The type of a field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A 64-bit signed integer (counts, versions, Unix milliseconds).
    Int,
    Bool,
    /// UTF-8 text.
    Text,
    Bytes,
}

/// What a reader puts in a field that an older export did not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldDefault {
    /// The field is required: an export without it is refused.
    Required,
    Null,
    Int(i64),
    Bool(bool),
    Text(&'static str),
}

/// One field of a record kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    pub nullable: bool,
    pub default: FieldDefault,
}

/// One kind of record a store keeps.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordKind {
    /// The kind's name in an export (each backend keeps the kind in the table of this name).
    pub name: &'static str,
    /// Every field, in the order records carry their values.
    pub fields: &'static [Field],
    /// The fields that identify one record; an export lists a kind's records ordered by them.
    pub key: &'static [&'static str],
}

impl RecordKind {
    /// The kind of this name, if this keysafe knows it.
    pub fn named(name: &str) -> Option<&'static RecordKind> {
        RECORD_KINDS.iter().find(|k| k.name == name)
    }

    /// The position of a field.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

const fn req(name: &'static str, ty: FieldType) -> Field {
    Field {
        name,
        ty,
        nullable: false,
        default: FieldDefault::Required,
    }
}

const fn opt(name: &'static str, ty: FieldType) -> Field {
    Field {
        name,
        ty,
        nullable: true,
        default: FieldDefault::Null,
    }
}

const fn with_default(name: &'static str, ty: FieldType, default: FieldDefault) -> Field {
    Field {
        name,
        ty,
        nullable: false,
        default,
    }
}

use FieldType::{Bool, Bytes, Int, Text};

/// Every kind of record, in the order an export lists them and an import writes them: a kind
/// comes after the kinds its records refer to (clients after organisations, versions after
/// their deposits, group keys after epochs and members).
pub static RECORD_KINDS: &[RecordKind] = &[
    RecordKind {
        name: "keyring",
        fields: &[
            req("seal", Text),
            req("version", Int),
            req("wrapped", Bytes),
            req("created_at", Int),
        ],
        key: &["seal", "version"],
    },
    RecordKind {
        name: "orgs",
        fields: &[
            req("name", Text),
            req("contacts", Text),
            req("auth_mode", Text),
            opt("auth_hash", Text),
            req("created_at", Int),
            req("updated_at", Int),
            opt("mac", Bytes),
        ],
        key: &["name"],
    },
    RecordKind {
        name: "clients",
        fields: &[
            req("fingerprint", Text),
            req("org", Text),
            opt("name", Text),
            req("state", Text),
            req("role", Text),
            req("cert_der", Bytes),
            opt("recipient", Text),
            with_default("token_counter", Int, FieldDefault::Int(0)),
            opt("token_hash", Text),
            with_default("token_recent", Text, FieldDefault::Text("[]")),
            with_default("token_rotated_at", Int, FieldDefault::Int(0)),
            opt("last_seen_at", Int),
            opt("state_reason", Text),
            req("created_at", Int),
            req("updated_at", Int),
            with_default("token_confirmed", Bool, FieldDefault::Bool(false)),
            opt("token_kek_version", Int),
            opt("token_salt", Bytes),
            opt("mac", Bytes),
        ],
        key: &["fingerprint"],
    },
    RecordKind {
        name: "registration_tokens",
        fields: &[
            req("hash", Text),
            req("org", Text),
            req("created_by", Text),
            req("created_at", Int),
            req("expires_at", Int),
            opt("used_at", Int),
            opt("used_by", Text),
            opt("mac", Bytes),
        ],
        key: &["hash"],
    },
    RecordKind {
        name: "groups",
        fields: &[
            req("org", Text),
            req("name", Text),
            req("epoch", Int),
            req("created_at", Int),
            req("updated_at", Int),
        ],
        key: &["org", "name"],
    },
    RecordKind {
        name: "group_epochs",
        fields: &[
            req("org", Text),
            req("name", Text),
            req("epoch", Int),
            req("recipient", Text),
            req("created_at", Int),
            opt("mac", Bytes),
        ],
        key: &["org", "name", "epoch"],
    },
    RecordKind {
        name: "group_members",
        fields: &[
            req("org", Text),
            req("name", Text),
            req("member", Text),
            req("added_at", Int),
            opt("mac", Bytes),
        ],
        key: &["org", "name", "member"],
    },
    RecordKind {
        name: "group_keys",
        fields: &[
            req("org", Text),
            req("name", Text),
            req("epoch", Int),
            req("member", Text),
            req("wrapped", Bytes),
        ],
        key: &["org", "name", "member", "epoch"],
    },
    RecordKind {
        name: "deposits",
        fields: &[
            req("owner", Text),
            req("name", Text),
            req("org", Text),
            req("current_version", Int),
            req("current_size", Int),
            with_default("deleted", Bool, FieldDefault::Bool(false)),
            with_default("acl_serial", Int, FieldDefault::Int(0)),
            req("created_at", Int),
            req("updated_at", Int),
            opt("mac", Bytes),
        ],
        key: &["owner", "name"],
    },
    RecordKind {
        name: "deposit_versions",
        fields: &[
            req("owner", Text),
            req("name", Text),
            req("version", Int),
            req("size", Int),
            req("creator", Text),
            req("created_at", Int),
            with_default("encoding", Text, FieldDefault::Text("raw")),
            req("kek_version", Int),
            req("wrapped_dek", Bytes),
            req("ciphertext", Bytes),
        ],
        key: &["owner", "name", "version"],
    },
    RecordKind {
        name: "deposit_grants",
        fields: &[
            req("owner", Text),
            req("name", Text),
            req("grantee", Text),
            req("access", Text),
            req("granted_by", Text),
            req("granted_at", Int),
            opt("mac", Bytes),
        ],
        key: &["owner", "name", "grantee"],
    },
    RecordKind {
        name: "audit_signing_keys",
        fields: &[
            req("key_id", Text),
            req("public_key", Bytes),
            req("kek_version", Int),
            req("wrapped", Bytes),
            req("created_at", Int),
        ],
        key: &["key_id"],
    },
    RecordKind {
        name: "audit_log",
        fields: &[
            req("seq", Int),
            req("time", Int),
            req("node", Text),
            req("request_id", Text),
            req("remote", Text),
            opt("client", Text),
            opt("org", Text),
            req("operation", Text),
            req("target", Text),
            opt("version", Int),
            req("outcome", Text),
            req("prev_hash", Text),
            req("hash", Text),
        ],
        key: &["seq"],
    },
    RecordKind {
        name: "audit_checkpoints",
        fields: &[
            req("seq", Int),
            req("hash", Text),
            req("signed_at", Int),
            req("key_id", Text),
            req("signature", Text),
        ],
        key: &["seq"],
    },
    RecordKind {
        name: "row_macs_backfill",
        fields: &[req("id", Int), req("completed_at", Int), req("mac", Bytes)],
        key: &["id"],
    },
];

/// The kind that holds the audit chain's entries (an import moves the chain's head to its
/// last one).
pub const AUDIT_LOG: &str = "audit_log";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_keys_are_fields_and_defaults_fit() {
        let mut names: Vec<&str> = RECORD_KINDS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RECORD_KINDS.len());
        for k in RECORD_KINDS {
            assert!(!k.key.is_empty(), "{}", k.name);
            for f in k.key {
                assert!(k.field_index(f).is_some(), "{}.{f}", k.name);
            }
            for f in k.fields {
                let ok = match f.default {
                    FieldDefault::Required => true,
                    FieldDefault::Null => f.nullable,
                    FieldDefault::Int(_) => f.ty == FieldType::Int,
                    FieldDefault::Bool(_) => f.ty == FieldType::Bool,
                    FieldDefault::Text(_) => f.ty == FieldType::Text,
                };
                assert!(ok, "{}.{}", k.name, f.name);
            }
        }
    }
}
