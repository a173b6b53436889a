//! One record of an export: its field [`Value`]s, checked against the kind's fields when the
//! [`ExportRecord`] is made, and the typed records the keyring and audit trail read from it.

use super::kinds::{Field, FieldType, RecordKind};
use crate::store::{AuditKeyRecord, KekRecord, StoreError, StoreResult};

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
    pub fn as_kek(&self) -> Option<KekRecord> {
        if self.kind.name != "keyring" {
            return None;
        }
        Some(KekRecord {
            version: u32::try_from(self.int("version")?).ok()?,
            seal: self.text("seal")?.to_owned(),
            wrapped: self.bytes("wrapped")?.to_vec(),
            created_at: keysafe_proto::Timestamp::from_unix_millis(self.int("created_at")?),
        })
    }

    /// An `audit_signing_keys` record (`None` for any other kind).
    pub fn as_audit_key(&self) -> Option<AuditKeyRecord> {
        if self.kind.name != "audit_signing_keys" {
            return None;
        }
        Some(AuditKeyRecord {
            key_id: self.text("key_id")?.to_owned(),
            public_key: self.bytes("public_key")?.to_vec(),
            kek_version: u32::try_from(self.int("kek_version")?).ok()?,
            wrapped: self.bytes("wrapped")?.to_vec(),
            created_at: keysafe_proto::Timestamp::from_unix_millis(self.int("created_at")?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> &'static RecordKind {
        RecordKind::named(name).unwrap()
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
