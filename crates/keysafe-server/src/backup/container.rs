//! The backup container (format 2): what is inside the age encryption, written and read as a
//! stream, never whole in memory. Pure functions over `Write` and `BufRead`: no files, no
//! store, no runtime, so a fuzzer can drive the reader with any bytes.
//!
//! The plaintext is JSON lines after a magic line (docs/operations.md, "What a backup
//! contains"):
//!
//! ```text
//! KEYSAFE-BACKUP 2
//! {"manifest":{...}}                                  what the backup holds, who made it
//! {"file":{"name":"keysafe.toml","data":"<base64>"}}  one line per file of the manifest
//! {"kind":"orgs","fields":[...]}                      the store's records, kind by kind
//! ["acme","[]",...]                                   (keysafe_core::store::export)
//! {"end":{"records":{...},"total":N,"sha256":"<hex>","signature":{...}}}
//! ```
//!
//! `sha256` is the SHA-256 of every byte before the end line; the signature is the server's
//! audit key's Ed25519 signature of it (`keysafe_core::audit::backup_signature_message`). The
//! reader recomputes the digest, counts the records, checks the signature, and checks that the
//! signing key is one the backup's own audit signing key records hold; tying that key to the
//! backup's keyring (which needs the seal) is the caller's part. age authenticates every chunk
//! and the end of the stream, so a flipped or truncated file fails to decrypt; the digest and
//! signature also catch a backup re-encrypted by someone who can decrypt it but does not hold
//! the audit key.

use base64::Engine;
use keysafe_core::store::export::{Decoded, ExportRecord, RecordDecoder, RecordEncoder, Value};
use keysafe_proto::{ClientFingerprint, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use zeroize::Zeroizing;

pub const MAGIC: &[u8] = b"KEYSAFE-BACKUP 2\n";
pub const FORMAT: u32 = 2;
/// The version of the record lines (`keysafe_core::store::export`).
pub const RECORDS_FORMAT: u32 = 1;
/// The longest line a reader takes: a record with the largest deposit keysafe allows (64 MiB,
/// base64 in JSON) fits; anything longer is refused before it is held in memory.
pub const MAX_LINE: usize = 96 * 1024 * 1024;
/// The largest file a backup carries (configuration, certificates, keys are a few KB).
pub const MAX_FILE: u64 = 1024 * 1024;
/// The most files a manifest may list.
pub const MAX_FILES: usize = 64;
/// The algorithm of backup signatures.
pub const SIGNATURE_ALGORITHM: &str = "ed25519";

/// One file of the data directory carried by a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the data directory (`keysafe.toml`, `tls/server.crt`, `admin/...`), or
    /// `root.key` for the root key of a file seal.
    pub name: String,
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Which key-bearing parts a backup carries.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Includes {
    /// The root key of a file seal: with it, the backup alone opens every deposit.
    pub root_key: bool,
    /// The server's TLS private key (its fingerprint, which clients pinned).
    pub tls_key: bool,
    /// The administrator identity `init` made (`DIR/admin`).
    pub admin_identity: bool,
}

impl Includes {
    pub fn any(&self) -> bool {
        self.root_key || self.tls_key || self.admin_identity
    }
}

/// Where a backup was made.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `keysafe admin --data-dir DIR backup create`, on the server's host.
    DataDir,
    /// `POST /v1/admin/backup`.
    Api,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub records_format: u32,
    pub created_at: Timestamp,
    pub keysafe_version: String,
    pub origin: Origin,
    pub server_fingerprint: ClientFingerprint,
    /// `file`, `passphrase` or `pkcs11`.
    pub seal: String,
    pub includes: Includes,
    /// The id of the audit key that signs the backup (hex SHA-256 of its public key).
    pub audit_key_id: String,
    pub files: Vec<Entry>,
}

/// A backup's signature.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signature {
    pub algorithm: String,
    pub key_id: String,
    /// The Ed25519 public key, base64.
    pub public_key: String,
    /// base64.
    pub value: String,
}

/// The last line: what came before it, and the signature over it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trailer {
    /// Records per kind.
    pub records: BTreeMap<String, u64>,
    pub total: u64,
    /// SHA-256 (hex) of every byte before this line.
    pub sha256: String,
    pub signature: Signature,
}

/// Why a container cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Reading failed: age's authentication of a chunk or of the end of the stream (a modified
    /// or truncated file), or the file itself.
    #[error(
        "the backup cannot be read to its end: it was modified or truncated ({0}); refusing it"
    )]
    Read(std::io::Error),
    /// The plaintext is not a valid backup.
    #[error("{0}")]
    Invalid(String),
    /// The signature does not hold.
    #[error("{0}")]
    Signature(String),
}

fn invalid(m: impl Into<String>) -> ContainerError {
    ContainerError::Invalid(m.into())
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
}

/// Checks a file name from a manifest: relative, no `..`, no empty component.
pub fn check_name(name: &str) -> Result<(), ContainerError> {
    if name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(invalid(format!("bad file name {name:?} in the backup")));
    }
    Ok(())
}

/// A writer that hashes everything it passes on.
struct Hashing<W> {
    inner: W,
    digest: aws_lc_rs::digest::Context,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn digest_bytes(d: aws_lc_rs::digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// What signs a backup: the audit key's id, public key, and its signature of a digest.
pub trait BackupSigner {
    fn key_id(&self) -> String;
    fn public_key(&self) -> &[u8];
    fn sign(&self, digest: &[u8; 32]) -> Vec<u8>;
}

impl BackupSigner for keysafe_core::audit::AuditSigner {
    fn key_id(&self) -> String {
        keysafe_core::audit::AuditSigner::key_id(self).to_owned()
    }

    fn public_key(&self) -> &[u8] {
        keysafe_core::audit::AuditSigner::public_key(self)
    }

    fn sign(&self, digest: &[u8; 32]) -> Vec<u8> {
        self.sign_backup(digest)
    }
}

/// Writes a container: [`ContainerWriter::start`] (magic, manifest, files), a
/// [`ContainerWriter::record`] per record, then [`ContainerWriter::finish`] (the signed end).
pub struct ContainerWriter<W: Write> {
    out: Hashing<W>,
    encoder: RecordEncoder,
    counts: BTreeMap<String, u64>,
    total: u64,
    line: Vec<u8>,
}

fn write_json_line<W: Write>(out: &mut W, v: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    out.write_all(b"\n")
}

impl<W: Write> ContainerWriter<W> {
    /// Writes the magic line, the manifest and the files (`files` in manifest order, each
    /// matching its entry).
    pub fn start(out: W, manifest: &Manifest, files: &[&[u8]]) -> std::io::Result<Self> {
        let mut out = Hashing {
            inner: out,
            digest: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
        };
        out.write_all(MAGIC)?;
        write_json_line(&mut out, &serde_json::json!({ "manifest": manifest }))?;
        for (e, bytes) in manifest.files.iter().zip(files) {
            // The file's base64 is secret when the file is a key: zeroised after use.
            let data = Zeroizing::new(b64().encode(bytes));
            write_json_line(
                &mut out,
                &serde_json::json!({ "file": { "name": e.name, "data": data.as_str() } }),
            )?;
        }
        Ok(Self {
            out,
            encoder: RecordEncoder::new(),
            counts: BTreeMap::new(),
            total: 0,
            line: Vec::new(),
        })
    }

    pub fn record(&mut self, r: &ExportRecord) -> std::io::Result<()> {
        self.line.clear();
        self.encoder
            .encode(r, &mut self.line)
            .map_err(std::io::Error::other)?;
        self.out.write_all(&self.line)?;
        // A large record's line is not kept around.
        if self.line.capacity() > 1024 * 1024 {
            self.line = Vec::new();
        }
        *self.counts.entry(r.kind().name.to_owned()).or_default() += 1;
        self.total += 1;
        Ok(())
    }

    /// Writes the end line, signed by `signer`, and hands back the output.
    pub fn finish(self, signer: &dyn BackupSigner) -> std::io::Result<(W, Trailer)> {
        let Hashing { mut inner, digest } = self.out;
        let digest = digest_bytes(digest.finish());
        let trailer = Trailer {
            records: self.counts,
            total: self.total,
            sha256: hex::encode(digest),
            signature: Signature {
                algorithm: SIGNATURE_ALGORITHM.into(),
                key_id: signer.key_id(),
                public_key: b64().encode(signer.public_key()),
                value: b64().encode(signer.sign(&digest)),
            },
        };
        write_json_line(&mut inner, &serde_json::json!({ "end": trailer }))?;
        inner.flush()?;
        Ok((inner, trailer))
    }
}

/// A backup's files, read and checked against the manifest.
pub struct Opened {
    pub manifest: Manifest,
    /// Each file with its bytes, in manifest order.
    pub files: Vec<(Entry, Zeroizing<Vec<u8>>)>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

impl Opened {
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(e, _)| e.name == name)
            .map(|(_, b)| &b[..])
    }
}

/// What the reader established once it reached the end: the records were all there, the
/// digest matches, the signature holds, and the signing key is one of the backup's audit
/// signing keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub trailer: Trailer,
    pub signer_key_id: String,
    pub signer_public_key: Vec<u8>,
}

/// Reads a container: [`ContainerReader::open`] (magic, manifest, files), then
/// [`ContainerReader::next_record`] until it answers `None`, which it does only after the end
/// line was checked (and nothing follows it).
pub struct ContainerReader<R: BufRead> {
    input: R,
    digest: aws_lc_rs::digest::Context,
    decoder: RecordDecoder,
    manifest: Manifest,
    counts: BTreeMap<String, u64>,
    total: u64,
    /// The public keys of the audit signing key records read so far.
    audit_keys: Vec<Vec<u8>>,
    line: Vec<u8>,
    verified: Option<Verified>,
}

/// Reads one line (without its `\n`) into `buf`, at most `max` bytes; `false` at the end of
/// the input before any byte.
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> Result<bool, ContainerError> {
    buf.clear();
    loop {
        let available = r.fill_buf().map_err(ContainerError::Read)?;
        if available.is_empty() {
            if buf.is_empty() {
                return Ok(false);
            }
            return Err(invalid("the backup ends in the middle of a line"));
        }
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i)),
            None => (available, None),
        };
        if buf.len() + chunk.len() > max {
            return Err(invalid(format!(
                "a line of the backup is longer than {max} bytes; refusing it"
            )));
        }
        buf.extend_from_slice(chunk);
        let used = found.map_or(chunk.len(), |i| i + 1);
        r.consume(used);
        if found.is_some() {
            return Ok(true);
        }
    }
}

impl<R: BufRead> ContainerReader<R> {
    /// Reads the magic line, the manifest and every file, checking each file's size and
    /// SHA-256 against the manifest.
    pub fn open(mut input: R) -> Result<(Self, Opened), ContainerError> {
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut line = Vec::new();
        if !read_line(&mut input, &mut line, MAGIC.len())? || line != MAGIC[..MAGIC.len() - 1] {
            if line.starts_with(b"KEYSAFE-BACKUP ") {
                return Err(invalid(format!(
                    "unsupported backup format {:?} (this keysafe reads format {FORMAT})",
                    String::from_utf8_lossy(&line[15..])
                )));
            }
            return Err(invalid("not a keysafe backup (bad magic)"));
        }
        digest.update(MAGIC);
        if !read_line(&mut input, &mut line, 1024 * 1024)? {
            return Err(invalid("the backup is truncated (no manifest)"));
        }
        digest.update(&line);
        digest.update(b"\n");
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ManifestLine {
            manifest: Manifest,
        }
        let manifest = serde_json::from_slice::<ManifestLine>(&line)
            .map_err(|e| invalid(format!("bad backup manifest: {e}")))?
            .manifest;
        if manifest.format != FORMAT {
            return Err(invalid(format!(
                "unsupported backup format {} (this keysafe reads format {FORMAT})",
                manifest.format
            )));
        }
        if manifest.records_format != RECORDS_FORMAT {
            return Err(invalid(format!(
                "unsupported record format {} (this keysafe reads format {RECORDS_FORMAT})",
                manifest.records_format
            )));
        }
        if manifest.files.len() > MAX_FILES {
            return Err(invalid("the manifest lists too many files"));
        }
        let mut files = Vec::with_capacity(manifest.files.len());
        for e in &manifest.files {
            check_name(&e.name)?;
            if manifest.files.iter().filter(|o| o.name == e.name).count() > 1 {
                return Err(invalid(format!("{} appears twice in the manifest", e.name)));
            }
            if e.size > MAX_FILE {
                return Err(invalid(format!(
                    "{} is too large for a backup file",
                    e.name
                )));
            }
            let mut l = Zeroizing::new(Vec::new());
            if !read_line(&mut input, &mut l, (MAX_FILE as usize) * 2)? {
                return Err(invalid(format!("the backup is truncated at {}", e.name)));
            }
            digest.update(&l);
            digest.update(b"\n");
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct FileLine {
                file: FileBody,
            }
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct FileBody {
                name: String,
                data: Zeroizing<String>,
            }
            let f: FileLine = serde_json::from_slice(&l)
                .map_err(|_| invalid(format!("{} is not a file line", e.name)))?;
            if f.file.name != e.name {
                return Err(invalid(format!(
                    "expected {} in the backup, found {:?}",
                    e.name, f.file.name
                )));
            }
            let bytes = Zeroizing::new(
                b64()
                    .decode(f.file.data.as_bytes())
                    .map_err(|_| invalid(format!("{} is not base64", e.name)))?,
            );
            if bytes.len() as u64 != e.size || sha256_hex(&bytes) != e.sha256 {
                return Err(invalid(format!(
                    "{} does not match its checksum; refusing the backup",
                    e.name
                )));
            }
            files.push((e.clone(), bytes));
        }
        let reader = Self {
            input,
            digest,
            decoder: RecordDecoder::new(),
            manifest: manifest.clone(),
            counts: BTreeMap::new(),
            total: 0,
            audit_keys: Vec::new(),
            line: Vec::new(),
            verified: None,
        };
        Ok((reader, Opened { manifest, files }))
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The next record; `None` once the end line has been read and checked.
    pub fn next_record(&mut self) -> Result<Option<ExportRecord>, ContainerError> {
        if self.verified.is_some() {
            return Ok(None);
        }
        loop {
            if !read_line(&mut self.input, &mut self.line, MAX_LINE)? {
                return Err(invalid(
                    "the backup is truncated: it ends before its signed end line",
                ));
            }
            if self.line.capacity() > 4 * MAX_LINE / 3 {
                self.line.shrink_to(MAX_LINE);
            }
            if self.line.starts_with(b"{\"end\"") {
                self.end()?;
                return Ok(None);
            }
            self.digest.update(&self.line);
            self.digest.update(b"\n");
            let decoded = self
                .decoder
                .line(&self.line)
                .map_err(|e| invalid(format!("bad record in the backup: {e}")))?;
            // A large record's line is not kept around.
            if self.line.capacity() > 1024 * 1024 {
                self.line = Vec::new();
            }
            if let Decoded::Record(r) = decoded {
                *self.counts.entry(r.kind().name.to_owned()).or_default() += 1;
                self.total += 1;
                if r.kind().name == "audit_signing_keys"
                    && let Some(Value::Bytes(pk)) = r.get("public_key")
                {
                    self.audit_keys.push(pk.clone());
                }
                return Ok(Some(r));
            }
        }
    }

    fn end(&mut self) -> Result<(), ContainerError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct EndLine {
            end: Trailer,
        }
        let t = serde_json::from_slice::<EndLine>(&self.line)
            .map_err(|e| invalid(format!("bad end line: {e}")))?
            .end;
        // Nothing may follow the end line. (Reading to the end of the input is also what
        // makes age check the end of its stream: a truncated file fails here.)
        if !self
            .input
            .fill_buf()
            .map_err(ContainerError::Read)?
            .is_empty()
        {
            return Err(invalid("the backup has data after its end; refusing it"));
        }
        let digest = std::mem::replace(
            &mut self.digest,
            aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
        );
        let digest = digest_bytes(digest.finish());
        if t.sha256 != hex::encode(digest) {
            return Err(ContainerError::Signature(
                "the backup's content does not match its signed digest; refusing it".into(),
            ));
        }
        if t.total != self.total || t.records != self.counts {
            return Err(invalid(
                "the backup's record counts do not match what it holds; refusing it",
            ));
        }
        let s = &t.signature;
        let public_key = b64()
            .decode(&s.public_key)
            .map_err(|_| invalid("bad signature public key"))?;
        let value = b64()
            .decode(&s.value)
            .map_err(|_| invalid("bad signature value"))?;
        if s.algorithm != SIGNATURE_ALGORITHM
            || s.key_id != keysafe_proto::audit::key_id(&public_key)
            || s.key_id != self.manifest.audit_key_id
            || !keysafe_core::audit::verify_backup_signature(&public_key, &digest, &value)
        {
            return Err(ContainerError::Signature(
                "the backup's signature does not verify; refusing it".into(),
            ));
        }
        if !self.audit_keys.contains(&public_key) {
            return Err(ContainerError::Signature(format!(
                "the backup is signed by audit key {}, which is not this server's audit key; refusing it",
                s.key_id
            )));
        }
        self.verified = Some(Verified {
            signer_key_id: s.key_id.clone(),
            signer_public_key: public_key,
            trailer: t,
        });
        Ok(())
    }

    /// What the end line established (`None` before it was read).
    pub fn verified(&self) -> Option<&Verified> {
        self.verified.as_ref()
    }
}

/// Reads a whole container from `input`, checking everything the reader checks, and answers
/// its files and what was verified, dropping the records as they pass (`keysafe backup
/// verify`, and a fuzz target). Memory stays flat whatever the number of records.
pub fn read_all<R: BufRead>(
    input: R,
    mut each: impl FnMut(&ExportRecord),
) -> Result<(Opened, Verified), ContainerError> {
    let (mut reader, opened) = ContainerReader::open(input)?;
    while let Some(r) = reader.next_record()? {
        each(&r);
    }
    let verified = reader
        .verified()
        .cloned()
        .ok_or_else(|| invalid("the backup has no end"))?;
    Ok((opened, verified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keysafe_core::store::export::RecordKind;

    struct TestSigner(aws_lc_rs::signature::Ed25519KeyPair, Vec<u8>);

    impl TestSigner {
        fn new() -> Self {
            use aws_lc_rs::signature::KeyPair;
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            let pk = pair.public_key().as_ref().to_vec();
            Self(pair, pk)
        }
        fn id(&self) -> String {
            keysafe_proto::audit::key_id(&self.1)
        }
    }

    impl BackupSigner for TestSigner {
        fn key_id(&self) -> String {
            self.id()
        }
        fn public_key(&self) -> &[u8] {
            &self.1
        }
        fn sign(&self, digest: &[u8; 32]) -> Vec<u8> {
            self.0
                .sign(&keysafe_core::audit::backup_signature_message(digest))
                .as_ref()
                .to_vec()
        }
    }

    fn audit_key_record(s: &TestSigner) -> ExportRecord {
        ExportRecord::new(
            RecordKind::named("audit_signing_keys").unwrap(),
            vec![
                Value::Text(s.id()),
                Value::Bytes(s.1.clone()),
                Value::Int(1),
                Value::Bytes(vec![7; 60]),
                Value::Int(1),
            ],
        )
        .unwrap()
    }

    fn org(i: usize) -> ExportRecord {
        ExportRecord::new(
            RecordKind::named("orgs").unwrap(),
            vec![
                Value::Text(format!("org{i}")),
                Value::Text("[]".into()),
                Value::Text("secret".into()),
                Value::Null,
                Value::Int(1),
                Value::Int(2),
                Value::Null,
            ],
        )
        .unwrap()
    }

    fn manifest(s: &TestSigner, files: &[(&str, &[u8])]) -> Manifest {
        Manifest {
            format: FORMAT,
            records_format: RECORDS_FORMAT,
            created_at: Timestamp::from_unix_millis(1),
            keysafe_version: "test".into(),
            origin: Origin::Api,
            server_fingerprint: ClientFingerprint::parse(&"a".repeat(64)).unwrap(),
            seal: "file".into(),
            includes: Includes::default(),
            audit_key_id: s.id(),
            files: files
                .iter()
                .map(|(n, b)| Entry {
                    name: (*n).into(),
                    size: b.len() as u64,
                    sha256: sha256_hex(b),
                })
                .collect(),
        }
    }

    fn container(s: &TestSigner, records: &[ExportRecord]) -> Vec<u8> {
        let files: [(&str, &[u8]); 2] = [("keysafe.toml", b"[server]\n"), ("tls/server.crt", b"")];
        let m = manifest(s, &files);
        let bodies: Vec<&[u8]> = files.iter().map(|(_, b)| *b).collect();
        let mut w = ContainerWriter::start(Vec::new(), &m, &bodies).unwrap();
        for r in records {
            w.record(r).unwrap();
        }
        w.finish(s).unwrap().0
    }

    #[test]
    fn a_container_reads_back_exactly() {
        let s = TestSigner::new();
        let records: Vec<ExportRecord> = (0..300).map(org).chain([audit_key_record(&s)]).collect();
        let bytes = container(&s, &records);
        let mut got = Vec::new();
        let (opened, verified) = read_all(&bytes[..], |r| got.push(r.clone())).unwrap();
        assert_eq!(got, records);
        assert_eq!(opened.file("keysafe.toml"), Some(&b"[server]\n"[..]));
        assert_eq!(opened.file("tls/server.crt"), Some(&b""[..]));
        assert_eq!(verified.trailer.total, 301);
        assert_eq!(verified.trailer.records["orgs"], 300);
        assert_eq!(verified.signer_public_key, s.1);
    }

    #[test]
    fn any_change_truncation_or_extra_data_is_refused() {
        let s = TestSigner::new();
        let records: Vec<ExportRecord> = (0..20).map(org).chain([audit_key_record(&s)]).collect();
        let bytes = container(&s, &records);
        // Every truncation point.
        for n in 0..bytes.len() {
            assert!(read_all(&bytes[..n], |_| {}).is_err(), "truncated at {n}");
        }
        // Every single-byte change that keeps the line structure.
        for i in 0..bytes.len() {
            if bytes[i] == b'\n' {
                continue;
            }
            let mut b = bytes.clone();
            b[i] = if b[i] == b'1' { b'2' } else { b'1' };
            assert!(read_all(&b[..], |_| {}).is_err(), "byte {i} changed");
        }
        let mut extra = bytes.clone();
        extra.extend_from_slice(b"[1]\n");
        assert!(read_all(&extra[..], |_| {}).is_err());
    }

    #[test]
    fn a_backup_signed_by_another_key_is_refused() {
        let honest = TestSigner::new();
        let forger = TestSigner::new();
        // Signed by a key the backup does not hold.
        let records: Vec<ExportRecord> =
            (0..3).map(org).chain([audit_key_record(&honest)]).collect();
        let files: [(&str, &[u8]); 1] = [("keysafe.toml", b"x")];
        let mut m = manifest(&honest, &files);
        m.audit_key_id = forger.id();
        let mut w = ContainerWriter::start(Vec::new(), &m, &[b"x"]).unwrap();
        for r in &records {
            w.record(r).unwrap();
        }
        let bytes = w.finish(&forger).unwrap().0;
        let e = read_all(&bytes[..], |_| {}).unwrap_err().to_string();
        assert!(e.contains("not this server's audit key"), "{e}");
        // The manifest names one key, another signed.
        let bytes = {
            let m = manifest(&honest, &files);
            let mut w = ContainerWriter::start(Vec::new(), &m, &[b"x"]).unwrap();
            for r in records.iter().chain([&audit_key_record(&forger)]) {
                w.record(r).unwrap();
            }
            w.finish(&forger).unwrap().0
        };
        let e = read_all(&bytes[..], |_| {}).unwrap_err().to_string();
        assert!(e.contains("signature does not verify"), "{e}");
    }

    #[test]
    fn hostile_headers_are_refused_without_reading_on() {
        for (bytes, want) in [
            (&b"KEYSAFE-BACKUP 1\n"[..], "unsupported backup format"),
            (b"hello\n", "bad magic"),
            (
                b"KEYSAFE-BACKUP 2\n{\"manifest\":{}}\n",
                "bad backup manifest",
            ),
        ] {
            let e = read_all(bytes, |_| {}).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let s = TestSigner::new();
        for name in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            let mut m = manifest(&s, &[("keysafe.toml", b"x")]);
            m.files[0].name = name.into();
            let w = ContainerWriter::start(Vec::new(), &m, &[b"x"]).unwrap();
            let bytes = w.finish(&s).unwrap().0;
            let e = read_all(&bytes[..], |_| {}).unwrap_err().to_string();
            assert!(e.contains("bad file name"), "{name}: {e}");
        }
        // A line past the limit is refused before it is held.
        let mut long = MAGIC.to_vec();
        long.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
        let e = read_all(&long[..], |_| {}).unwrap_err().to_string();
        assert!(e.contains("longer than"), "{e}");
    }
}
