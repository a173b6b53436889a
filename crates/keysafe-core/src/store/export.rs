//! The logical export of a store: every record of every kind, as stored (sealed payloads,
//! wrapped keys, hashes; nothing decrypted), in a form no backend owns. A backup carries it; an
//! import into an empty store of any backend recreates the same records, so a backup taken from
//! one backend restores into another.
//!
//! [`RECORD_KINDS`] is the one definition of what an export holds: each kind's name, its fields
//! with their types, and the fields that identify a record. Backends read and write every kind
//! from this list (each keeps a kind in the table of the same name, with one column per field),
//! so adding a kind of record, or a field, is one entry here plus the migrations that create it;
//! the conformance suite checks that every table of each backend is either a kind listed here or
//! named as not exported, and that its columns are exactly the kind's fields.
//!
//! The encoding ([`RecordEncoder`], [`RecordDecoder`]) is JSON lines, documented in
//! docs/operations.md ("What a backup contains"): a kind starts with a header line
//! `{"kind":"orgs","fields":["name",...]}`, and each record is one line holding a JSON array of
//! its values in the header's order (integers as numbers, booleans, text as strings, bytes as
//! standard base64 strings, `null`). A reader fills a field the header lacks with its default
//! (an export made before the field existed) and refuses a kind or field it does not know (an
//! export from a newer keysafe).

use super::{StoreError, StoreResult};
use base64::Engine;
use std::pin::Pin;

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

/// One value of a field.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for Value {
    /// Bytes are wrapped keys and ciphertext: their length says enough.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Text(v) => write!(f, "{v:?}"),
            Value::Bytes(v) => write!(f, "<{} bytes>", v.len()),
        }
    }
}

impl Value {
    fn fits(&self, field: &Field) -> bool {
        matches!(
            (self, field.ty),
            (Value::Int(_), FieldType::Int)
                | (Value::Bool(_), FieldType::Bool)
                | (Value::Text(_), FieldType::Text)
                | (Value::Bytes(_), FieldType::Bytes)
        ) || (matches!(self, Value::Null) && field.nullable)
    }

    /// About how many bytes the value holds (for batching by size).
    pub fn weight(&self) -> usize {
        match self {
            Value::Text(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 8,
        }
    }
}

/// One record of one kind: its values in the order of the kind's fields, each of the field's
/// type (or `Null` where the field allows it). [`ExportRecord::new`] is the only constructor.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportRecord {
    kind: &'static RecordKind,
    values: Vec<Value>,
}

impl std::fmt::Debug for ExportRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_struct(self.kind.name);
        for (field, v) in self.kind.fields.iter().zip(&self.values) {
            m.field(field.name, v);
        }
        m.finish()
    }
}

impl ExportRecord {
    /// A record of `kind`; `Corrupt` when a value is missing, extra, or of the wrong type.
    pub fn new(kind: &'static RecordKind, values: Vec<Value>) -> StoreResult<Self> {
        if values.len() != kind.fields.len() {
            return Err(StoreError::Corrupt(format!(
                "a {} record has {} values for {} fields",
                kind.name,
                values.len(),
                kind.fields.len()
            )));
        }
        if let Some((f, _)) = kind.fields.iter().zip(&values).find(|(f, v)| !v.fits(f)) {
            return Err(StoreError::Corrupt(format!(
                "{}.{}: a value of the wrong type",
                kind.name, f.name
            )));
        }
        Ok(Self { kind, values })
    }

    pub fn kind(&self) -> &'static RecordKind {
        self.kind
    }

    /// The values, in the order of the kind's fields.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// The value of a field by name.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.kind.field_index(field).map(|i| &self.values[i])
    }

    /// About how many bytes the record holds.
    pub fn weight(&self) -> usize {
        self.values.iter().map(Value::weight).sum()
    }

    fn int(&self, field: &str) -> Option<i64> {
        match self.get(field) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    fn text(&self, field: &str) -> Option<&str> {
        match self.get(field) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        }
    }

    fn bytes(&self, field: &str) -> Option<&[u8]> {
        match self.get(field) {
            Some(Value::Bytes(b)) => Some(b),
            _ => None,
        }
    }

    /// A `keyring` record as the keyring reads it (`None` for any other kind), so a restore
    /// can open the keyring a backup carries before the import commits.
    pub fn as_kek(&self) -> Option<super::KekRecord> {
        if self.kind.name != "keyring" {
            return None;
        }
        Some(super::KekRecord {
            version: u32::try_from(self.int("version")?).ok()?,
            seal: self.text("seal")?.to_owned(),
            wrapped: self.bytes("wrapped")?.to_vec(),
            created_at: keysafe_proto::Timestamp::from_unix_millis(self.int("created_at")?),
        })
    }

    /// An `audit_signing_keys` record (`None` for any other kind).
    pub fn as_audit_key(&self) -> Option<super::AuditKeyRecord> {
        if self.kind.name != "audit_signing_keys" {
            return None;
        }
        Some(super::AuditKeyRecord {
            key_id: self.text("key_id")?.to_owned(),
            public_key: self.bytes("public_key")?.to_vec(),
            kek_version: u32::try_from(self.int("kek_version")?).ok()?,
            wrapped: self.bytes("wrapped")?.to_vec(),
            created_at: keysafe_proto::Timestamp::from_unix_millis(self.int("created_at")?),
        })
    }
}

/// The records of an export, read as they are consumed (never the whole store in memory).
pub type RecordStream =
    Pin<Box<dyn futures_util::Stream<Item = StoreResult<ExportRecord>> + Send + 'static>>;

enum Msg {
    Record(ExportRecord),
    Failed(StoreError),
    Done,
}

/// The producing end of a [`record_channel`]: whoever reads the records (an export task, a
/// backup reader) sends them here. The stream ends normally only after [`RecordSender::done`]:
/// a producer that stops without saying so (dropped, panicked) ends the stream with an error,
/// so a partial export can never pass for a complete one.
#[derive(Debug)]
pub struct RecordSender {
    tx: tokio::sync::mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Record(r) => write!(f, "Record({})", r.kind.name),
            Msg::Failed(e) => write!(f, "Failed({e})"),
            Msg::Done => f.write_str("Done"),
        }
    }
}

impl RecordSender {
    /// Sends one record; `false` when the consumer is gone (the producer should stop).
    pub async fn send(&self, r: ExportRecord) -> bool {
        self.tx.send(Msg::Record(r)).await.is_ok()
    }

    /// [`RecordSender::send`] from a thread outside the async runtime.
    pub fn blocking_send(&self, r: ExportRecord) -> bool {
        self.tx.blocking_send(Msg::Record(r)).is_ok()
    }

    /// Ends the stream with an error.
    pub async fn fail(self, e: StoreError) {
        let _ = self.tx.send(Msg::Failed(e)).await;
    }

    pub fn blocking_fail(self, e: StoreError) {
        let _ = self.tx.blocking_send(Msg::Failed(e));
    }

    /// Ends the stream: every record was sent.
    pub async fn done(self) {
        let _ = self.tx.send(Msg::Done).await;
    }

    pub fn blocking_done(self) {
        let _ = self.tx.blocking_send(Msg::Done);
    }
}

/// A bounded channel (at most `capacity` records in flight) whose receiving end is a
/// [`RecordStream`].
pub fn record_channel(capacity: usize) -> (RecordSender, RecordStream) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    let stream = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Msg::Record(r)) => Some((Ok(r), Some(rx))),
            Some(Msg::Failed(e)) => Some((Err(e), None)),
            Some(Msg::Done) => None,
            None => Some((
                Err(StoreError::Unavailable(
                    "the records stopped before their end".into(),
                )),
                None,
            )),
        }
    });
    (RecordSender { tx }, Box::pin(stream))
}

/// What an import wrote: how many records of each kind, in [`RECORD_KINDS`] order (kinds with
/// none included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub counts: Vec<(&'static str, u64)>,
}

impl ImportSummary {
    pub fn new() -> Self {
        Self {
            counts: RECORD_KINDS.iter().map(|k| (k.name, 0)).collect(),
        }
    }

    pub fn add(&mut self, kind: &RecordKind) {
        if let Some((_, n)) = self.counts.iter_mut().find(|(k, _)| *k == kind.name) {
            *n += 1;
        }
    }

    pub fn count(&self, kind: &str) -> u64 {
        self.counts
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Writes records as JSON lines: a header line whenever the kind changes, then one line per
/// record.
#[derive(Debug, Default)]
pub struct RecordEncoder {
    current: Option<&'static str>,
}

struct RowRef<'a>(&'a [Value]);

impl serde::Serialize for RowRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            match v {
                Value::Null => seq.serialize_element(&())?,
                Value::Int(i) => seq.serialize_element(i)?,
                Value::Bool(b) => seq.serialize_element(b)?,
                Value::Text(t) => seq.serialize_element(t)?,
                Value::Bytes(b) => seq.serialize_element(&b64().encode(b))?,
            }
        }
        seq.end()
    }
}

impl RecordEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the record's line (and a header line first when the kind changes) to `out`.
    pub fn encode(&mut self, rec: &ExportRecord, out: &mut Vec<u8>) -> StoreResult<()> {
        let fail = |e: serde_json::Error| StoreError::Backend(format!("encoding a record: {e}"));
        if self.current != Some(rec.kind.name) {
            let fields: Vec<&str> = rec.kind.fields.iter().map(|f| f.name).collect();
            serde_json::to_writer(
                &mut *out,
                &serde_json::json!({"kind": rec.kind.name, "fields": fields}),
            )
            .map_err(fail)?;
            out.push(b'\n');
            self.current = Some(rec.kind.name);
        }
        serde_json::to_writer(&mut *out, &RowRef(&rec.values)).map_err(fail)?;
        out.push(b'\n');
        Ok(())
    }
}

/// Why a line of an export cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a record before any kind header")]
    NoHeader,
    #[error("unknown record kind {0:?} (an export from a newer keysafe?)")]
    UnknownKind(String),
    #[error("unknown field {field:?} of {kind} (an export from a newer keysafe?)")]
    UnknownField { kind: &'static str, field: String },
    #[error("the {kind} header names {field:?} twice")]
    DuplicateField { kind: &'static str, field: String },
    #[error("{kind} records lack the required field {field}")]
    MissingField {
        kind: &'static str,
        field: &'static str,
    },
    #[error("a {kind} record has {got} values where its header names {want}")]
    Arity {
        kind: &'static str,
        got: usize,
        want: usize,
    },
    #[error("{kind}.{field}: {problem}")]
    BadValue {
        kind: &'static str,
        field: &'static str,
        problem: &'static str,
    },
    #[error("not a header or a record: {0}")]
    Malformed(String),
}

/// One parsed line of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A header: the records that follow are of this kind.
    Header(&'static RecordKind),
    Record(ExportRecord),
}

#[derive(Debug)]
struct Section {
    kind: &'static RecordKind,
    /// For each position in the header, the field it is.
    positions: Vec<usize>,
}

/// Reads the lines [`RecordEncoder`] writes (and those of an older keysafe, filling the fields
/// it did not have with their defaults).
#[derive(Debug, Default)]
pub struct RecordDecoder {
    section: Option<Section>,
}

impl RecordDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a header object (`{"kind":...,"fields":[...]}`) already read as JSON.
    pub fn header(&mut self, v: &serde_json::Value) -> Result<&'static RecordKind, DecodeError> {
        let malformed = || DecodeError::Malformed("a kind header needs kind and fields".into());
        let name = v
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(malformed)?;
        let fields = v
            .get("fields")
            .and_then(|f| f.as_array())
            .ok_or_else(malformed)?;
        let kind =
            RecordKind::named(name).ok_or_else(|| DecodeError::UnknownKind(name.to_owned()))?;
        let mut positions = Vec::with_capacity(fields.len());
        for f in fields {
            let f = f.as_str().ok_or_else(malformed)?;
            let i = kind
                .field_index(f)
                .ok_or_else(|| DecodeError::UnknownField {
                    kind: kind.name,
                    field: f.to_owned(),
                })?;
            if positions.contains(&i) {
                return Err(DecodeError::DuplicateField {
                    kind: kind.name,
                    field: f.to_owned(),
                });
            }
            positions.push(i);
        }
        if let Some(f) = kind.fields.iter().enumerate().find_map(|(i, f)| {
            (!positions.contains(&i) && f.default == FieldDefault::Required).then_some(f)
        }) {
            return Err(DecodeError::MissingField {
                kind: kind.name,
                field: f.name,
            });
        }
        self.section = Some(Section { kind, positions });
        Ok(kind)
    }

    /// Parses one line: a header or a record of the current kind.
    pub fn line(&mut self, line: &[u8]) -> Result<Decoded, DecodeError> {
        let v: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| DecodeError::Malformed(format!("not JSON: {e}")))?;
        match v {
            serde_json::Value::Object(_) => self.header(&v).map(Decoded::Header),
            serde_json::Value::Array(items) => self.row(items).map(Decoded::Record),
            _ => Err(DecodeError::Malformed(
                "neither an object nor an array".into(),
            )),
        }
    }

    /// Turns a record line's values (already read as JSON) into a record of the current kind.
    pub fn row(&self, items: Vec<serde_json::Value>) -> Result<ExportRecord, DecodeError> {
        let s = self.section.as_ref().ok_or(DecodeError::NoHeader)?;
        let kind = s.kind;
        if items.len() != s.positions.len() {
            return Err(DecodeError::Arity {
                kind: kind.name,
                got: items.len(),
                want: s.positions.len(),
            });
        }
        let mut values: Vec<Option<Value>> = vec![None; kind.fields.len()];
        for (item, &i) in items.into_iter().zip(&s.positions) {
            let field = &kind.fields[i];
            let bad = |problem| DecodeError::BadValue {
                kind: kind.name,
                field: field.name,
                problem,
            };
            let v = match (item, field.ty) {
                (serde_json::Value::Null, _) if field.nullable => Value::Null,
                (serde_json::Value::Null, _) => return Err(bad("null where a value is required")),
                (serde_json::Value::Number(n), FieldType::Int) => {
                    Value::Int(n.as_i64().ok_or_else(|| bad("not a 64-bit integer"))?)
                }
                (serde_json::Value::Bool(b), FieldType::Bool) => Value::Bool(b),
                (serde_json::Value::String(t), FieldType::Text) => Value::Text(t),
                (serde_json::Value::String(t), FieldType::Bytes) => {
                    Value::Bytes(b64().decode(t).map_err(|_| bad("not base64"))?)
                }
                _ => return Err(bad("a value of the wrong type")),
            };
            values[i] = Some(v);
        }
        let values = values
            .into_iter()
            .zip(kind.fields)
            .map(|(v, f)| match v {
                Some(v) => Ok(v),
                None => default_value(kind, f),
            })
            .collect::<Result<Vec<_>, _>>()?;
        ExportRecord::new(kind, values).map_err(|_| DecodeError::BadValue {
            kind: kind.name,
            field: "?",
            problem: "does not fit the kind",
        })
    }
}

fn default_value(kind: &'static RecordKind, f: &'static Field) -> Result<Value, DecodeError> {
    Ok(match f.default {
        FieldDefault::Required => {
            return Err(DecodeError::MissingField {
                kind: kind.name,
                field: f.name,
            });
        }
        FieldDefault::Null => Value::Null,
        FieldDefault::Int(i) => Value::Int(i),
        FieldDefault::Bool(b) => Value::Bool(b),
        FieldDefault::Text(t) => Value::Text(t.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> &'static RecordKind {
        RecordKind::named(name).unwrap()
    }

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

    #[test]
    fn records_round_trip_through_lines() {
        let k = kind("clients");
        let values: Vec<Value> = k
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| match (f.ty, i % 3 == 0 && f.nullable) {
                (_, true) => Value::Null,
                (FieldType::Int, _) => Value::Int(i64::MAX - i as i64),
                (FieldType::Bool, _) => Value::Bool(true),
                (FieldType::Text, _) => Value::Text(format!("t\"{i}\n\u{e9}")),
                (FieldType::Bytes, _) => Value::Bytes(vec![0, 255, i as u8]),
            })
            .collect();
        let rec = ExportRecord::new(k, values).unwrap();
        let rec2 = ExportRecord::new(kind("orgs"), {
            let mut v = vec![Value::Text("acme".into()), Value::Text("[]".into())];
            v.extend([
                Value::Text("secret".into()),
                Value::Null,
                Value::Int(1),
                Value::Int(2),
                Value::Null,
            ]);
            v
        })
        .unwrap();
        let mut enc = RecordEncoder::new();
        let mut out = Vec::new();
        enc.encode(&rec, &mut out).unwrap();
        enc.encode(&rec, &mut out).unwrap();
        enc.encode(&rec2, &mut out).unwrap();
        let lines: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 5, "two headers, three records");
        let mut dec = RecordDecoder::new();
        let got: Vec<Decoded> = lines.iter().map(|l| dec.line(l).unwrap()).collect();
        assert_eq!(got[0], Decoded::Header(k));
        assert_eq!(got[1], Decoded::Record(rec.clone()));
        assert_eq!(got[2], Decoded::Record(rec));
        assert_eq!(got[3], Decoded::Header(kind("orgs")));
        assert_eq!(got[4], Decoded::Record(rec2));
    }

    #[test]
    fn older_exports_get_defaults_and_newer_ones_are_refused() {
        let mut dec = RecordDecoder::new();
        // A deposits header from before `acl_serial` and `deleted` existed, in another order.
        dec.line(br#"{"kind":"deposits","fields":["name","owner","org","current_version","current_size","created_at","updated_at"]}"#)
            .unwrap();
        let Decoded::Record(r) = dec.line(br#"["n","o","acme",2,10,5,6]"#).unwrap() else {
            panic!("a record")
        };
        assert_eq!(r.get("deleted"), Some(&Value::Bool(false)));
        assert_eq!(r.get("acl_serial"), Some(&Value::Int(0)));
        assert_eq!(r.get("owner"), Some(&Value::Text("o".into())));
        assert_eq!(r.get("name"), Some(&Value::Text("n".into())));
        // Unknown kinds and fields, required fields missing, duplicates.
        for (line, want) in [
            (
                &br#"{"kind":"cluster_nodes","fields":[]}"#[..],
                "unknown record kind",
            ),
            (
                br#"{"kind":"orgs","fields":["name","colour"]}"#,
                "unknown field",
            ),
            (br#"{"kind":"orgs","fields":["name"]}"#, "required field"),
            (
                br#"{"kind":"orgs","fields":["name","name","contacts"]}"#,
                "twice",
            ),
        ] {
            let e = RecordDecoder::new().line(line).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        let mut dec = RecordDecoder::new();
        assert_eq!(dec.line(b"[1]").unwrap_err(), DecodeError::NoHeader);
        dec.line(br#"{"kind":"keyring","fields":["seal","version","wrapped","created_at"]}"#)
            .unwrap();
        for line in [
            &br#"["file",1,"AAAA"]"#[..],
            br#"["file",1,"AAAA",2,3]"#,
            br#"["file","1","AAAA",2]"#,
            br#"["file",1,"not base64!",2]"#,
            br#"["file",1.5,"AAAA",2]"#,
            br#"["file",18446744073709551615,"AAAA",2]"#,
            br#"[null,1,"AAAA",2]"#,
            br#"["file",1,"AAAA",2"#,
            br#""file""#,
        ] {
            assert!(dec.line(line).is_err(), "{}", String::from_utf8_lossy(line));
        }
        assert!(dec.line(br#"["file",1,"AAAA",2]"#).is_ok());
    }

    #[tokio::test]
    async fn a_channel_ends_cleanly_only_when_told() {
        use futures_util::StreamExt;
        let rec = ExportRecord::new(
            kind("keyring"),
            vec![
                Value::Text("file".into()),
                Value::Int(1),
                Value::Bytes(vec![]),
                Value::Int(2),
            ],
        )
        .unwrap();
        let (tx, mut rx) = record_channel(4);
        assert!(tx.send(rec.clone()).await);
        tx.done().await;
        assert_eq!(rx.next().await.unwrap().unwrap(), rec);
        assert!(rx.next().await.is_none());
        // Dropped without `done`: an error, never a clean end.
        let (tx, mut rx) = record_channel(4);
        assert!(tx.send(rec.clone()).await);
        drop(tx);
        assert!(rx.next().await.unwrap().is_ok());
        assert!(rx.next().await.unwrap().is_err());
        assert!(rx.next().await.is_none());
        // A failure ends it with that error.
        let (tx, mut rx) = record_channel(4);
        tx.fail(StoreError::Corrupt("x".into())).await;
        assert_eq!(
            rx.next().await.unwrap().unwrap_err(),
            StoreError::Corrupt("x".into())
        );
        assert!(rx.next().await.is_none());
        // A consumer that went away stops the producer.
        let (tx, rx) = record_channel(4);
        drop(rx);
        assert!(!tx.send(rec).await);
    }

    #[test]
    fn records_check_their_values() {
        let k = kind("keyring");
        assert!(ExportRecord::new(k, vec![Value::Null; 4]).is_err());
        assert!(ExportRecord::new(k, vec![Value::Int(1); 3]).is_err());
        let r = ExportRecord::new(
            k,
            vec![
                Value::Text("file".into()),
                Value::Int(1),
                Value::Bytes(vec![1; 40]),
                Value::Int(2),
            ],
        )
        .unwrap();
        assert_eq!(
            format!("{r:?}"),
            "keyring { seal: \"file\", version: 1, wrapped: <40 bytes>, created_at: 2 }"
        );
    }
}
