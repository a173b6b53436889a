//! The JSON lines encoding of an export: [`RecordEncoder`] writes a header line per kind and one
//! line per record; [`RecordDecoder`] reads them back, filling the fields an older export lacks
//! with their defaults and refusing kinds and fields it does not know ([`DecodeError`]).

use super::kinds::{Field, FieldDefault, FieldType, RecordKind};
use super::record::{ExportRecord, Value};
use crate::store::{StoreError, StoreResult};
use base64::Engine;

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
        if self.current != Some(rec.kind().name) {
            let fields: Vec<&str> = rec.kind().fields.iter().map(|f| f.name).collect();
            serde_json::to_writer(
                &mut *out,
                &serde_json::json!({"kind": rec.kind().name, "fields": fields}),
            )
            .map_err(fail)?;
            out.push(b'\n');
            self.current = Some(rec.kind().name);
        }
        serde_json::to_writer(&mut *out, &RowRef(rec.values())).map_err(fail)?;
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
}
