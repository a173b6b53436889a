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
//!
//! The parts live in their own files: `kinds` (the field and kind definitions and
//! [`RECORD_KINDS`]), `record` ([`ExportRecord`] and its [`Value`]s), `stream` ([`RecordStream`],
//! [`record_channel`] and [`ImportSummary`]) and `encoding` (the JSON lines).

mod encoding;
mod kinds;
mod record;
mod stream;

pub use encoding::{DecodeError, Decoded, RecordDecoder, RecordEncoder};
pub use kinds::{AUDIT_LOG, Field, FieldDefault, FieldType, RECORD_KINDS, RecordKind};
pub use record::{ExportRecord, Value};
pub use stream::{ImportSummary, RecordSender, RecordStream, record_channel};
