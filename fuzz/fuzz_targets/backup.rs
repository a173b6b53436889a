//! Backup files as `keysafe restore` reads them (keysafe-server `backup::open`): an age file
//! that decrypts to the container `KEYSAFE-BACKUP 1\n`, a 4-byte big-endian header length,
//! the JSON manifest, then each file's bytes. `Raw` is the file as given (the age layer), `Plain`
//! is a container the target encrypts to the fixed recipient (the layer behind it), `Made` is a
//! well-formed container for files the fuzzer chose. Properties: nothing panics; a backup is
//! accepted only whole (every file present with its size and SHA-256, no trailing bytes, a
//! database); an accepted file name never leaves the data directory; a well-formed backup of
//! safe names opens to exactly its files.
//!
//! The container layout lives in `container` below: when the format changes, that function
//! and the `open` call are what to change.
#![no_main]

use arbitrary::Arbitrary;
use keysafe_server::backup::{DB_ENTRY, Entry, Manifest, open};
use libfuzzer_sys::fuzz_target;
use std::io::Write;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    Plain(Vec<u8>),
    Made {
        files: Vec<(String, Vec<u8>)>,
        with_db: bool,
        trailing: Vec<u8>,
    },
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
}

/// The container (age plaintext) for a manifest and its files.
fn container(manifest: &Manifest, files: &[(String, Vec<u8>)], trailing: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(manifest).expect("a manifest serialises");
    let mut out = b"KEYSAFE-BACKUP 1\n".to_vec();
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    for (_, b) in files {
        out.extend_from_slice(b);
    }
    out.extend_from_slice(trailing);
    out
}

fn encrypt(plain: &[u8]) -> Vec<u8> {
    let r = keysafe_fuzz::age_identity().to_public();
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        .expect("one recipient");
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).expect("in memory");
    w.write_all(plain).expect("in memory");
    w.finish().expect("in memory");
    out
}

fn safe_name(n: &str) -> bool {
    !n.starts_with('/') && n.split('/').all(|c| !c.is_empty() && c != "..")
}

fn identities() -> Vec<Box<dyn age::Identity + Send + Sync>> {
    vec![Box::new(keysafe_fuzz::age_identity().clone())]
}

fn check(bytes: &[u8]) -> Option<keysafe_server::backup::Opened> {
    let opened = open(bytes, &identities()).ok()?;
    assert!(opened.files.iter().any(|(e, _)| e.name == DB_ENTRY));
    assert_eq!(opened.files.len(), opened.manifest.files.len());
    for (e, b) in &opened.files {
        assert!(safe_name(&e.name), "accepted the file name {:?}", e.name);
        assert_eq!(e.size, b.len() as u64);
        assert_eq!(e.sha256, sha256_hex(b));
    }
    Some(opened)
}

fuzz_target!(|data: &[u8]| {
    // `\0` then a backup file; `\x01` then a container (encrypted here); else structured.
    let input = match data.split_first() {
        Some((0, rest)) => Input::Raw(rest.to_vec()),
        Some((1, rest)) => Input::Plain(rest.to_vec()),
        _ => match arbitrary::Arbitrary::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
            Ok(i) => i,
            Err(_) => return,
        },
    };
    match input {
        Input::Raw(b) => {
            check(&b);
        }
        Input::Plain(p) => {
            check(&encrypt(&p));
        }
        Input::Made {
            files,
            with_db,
            trailing,
        } => {
            let mut files: Vec<(String, Vec<u8>)> = files.into_iter().take(6).collect();
            if with_db {
                files.insert(0, (DB_ENTRY.to_owned(), b"SQLite format 3\0".to_vec()));
            }
            let manifest = Manifest {
                format: 1,
                created_at: keysafe_proto::Timestamp::from_unix_millis(1_700_000_000_000),
                keysafe_version: "0.1.0".into(),
                server_fingerprint: keysafe_proto::ClientFingerprint::parse(&"ab".repeat(32))
                    .expect("a fingerprint"),
                seal: "file".into(),
                includes_root_key: false,
                files: files
                    .iter()
                    .map(|(n, b)| Entry {
                        name: n.clone(),
                        size: b.len() as u64,
                        sha256: sha256_hex(b),
                    })
                    .collect(),
            };
            let opened = check(&encrypt(&container(&manifest, &files, &trailing)));
            let acceptable = trailing.is_empty()
                && files.iter().any(|(n, _)| n == DB_ENTRY)
                && files.iter().all(|(n, _)| safe_name(n));
            assert_eq!(opened.is_some(), acceptable);
            if let Some(o) = opened {
                assert_eq!(o.manifest, manifest);
                let got: Vec<(String, Vec<u8>)> = o
                    .files
                    .iter()
                    .map(|(e, b)| (e.name.clone(), b.to_vec()))
                    .collect();
                assert_eq!(got, files);
            }
        }
    }
});
