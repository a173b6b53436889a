//! Backup files as `keysafe backup verify` and `keysafe restore` read them (keysafe-server
//! `backup::decrypt` then `backup::container::read_all`): an age file that decrypts to the
//! format-2 container (a magic line, a JSON manifest line, one line per file, the store's records
//! as JSON lines, a signed end line). `Raw` is the file as given (the age layer), `Plain` is a
//! container read without the age layer (the reader behind it), `Made` is a container written by
//! `ContainerWriter` for files the fuzzer chose, signed with a fixed audit key, then optionally
//! cut or flipped. Properties: nothing panics; an accepted backup names only safe files, each
//! within the size limit; a backup whose signing key is not one of its own audit signing key
//! records (here: a backup without records) is refused; a cut or flipped container is refused.
#![no_main]

use arbitrary::Arbitrary;
use keysafe_server::backup::container::{
    self, BackupSigner, ContainerWriter, Entry, Includes, MAX_FILE, MAX_FILES, Manifest, Origin,
};
use libfuzzer_sys::fuzz_target;
use std::io::Write;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    Plain(Vec<u8>),
    Made {
        files: Vec<(String, Vec<u8>)>,
        cut: Option<u16>,
        flip: Option<(u16, u8)>,
    },
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

fn identities() -> Vec<Box<dyn age::Identity + Send + Sync>> {
    vec![Box::new(keysafe_fuzz::age_identity().clone())]
}

/// A fixed audit signing key: the fuzzer cannot forge a signature, so `Made` signs its own.
fn signer() -> keysafe_core::audit::AuditSigner {
    let seed = keysafe_core::crypto::SecretKey::from_slice(&[7u8; 32]).expect("32 bytes");
    keysafe_core::audit::AuditSigner::from_seed(&seed).expect("a valid seed")
}

/// Reads a container; checks what an accepted one must hold.
fn check(plain: &[u8]) -> bool {
    let Ok((opened, _verified)) = container::read_all(plain, |_| {}) else {
        return false;
    };
    assert!(opened.files.len() <= MAX_FILES);
    assert_eq!(opened.files.len(), opened.manifest.files.len());
    for (e, b) in &opened.files {
        assert!(
            container::check_name(&e.name).is_ok(),
            "accepted {:?}",
            e.name
        );
        assert!(b.len() as u64 <= MAX_FILE);
        assert_eq!(e.size, b.len() as u64);
        assert_eq!(e.sha256, container::sha256_hex(b));
    }
    true
}

fuzz_target!(|data: &[u8]| {
    // `\0` then a backup file; `\x01` then a container (no age layer); else structured.
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
            if let Ok(mut r) =
                keysafe_server::backup::decrypt(std::io::Cursor::new(b), &identities())
            {
                let mut plain = Vec::new();
                if std::io::Read::read_to_end(&mut r, &mut plain).is_ok() {
                    check(&plain);
                }
            }
        }
        Input::Plain(p) => {
            check(&p);
        }
        Input::Made { files, cut, flip } => {
            let files: Vec<(String, Vec<u8>)> = files.into_iter().take(6).collect();
            let signer = signer();
            let manifest = Manifest {
                format: container::FORMAT,
                records_format: container::RECORDS_FORMAT,
                created_at: keysafe_proto::Timestamp::from_unix_millis(1_700_000_000_000),
                keysafe_version: "0.1.0".into(),
                origin: Origin::DataDir,
                server_fingerprint: keysafe_proto::ClientFingerprint::parse(&"ab".repeat(32))
                    .expect("a fingerprint"),
                seal: "file".into(),
                includes: Includes::default(),
                audit_key_id: BackupSigner::key_id(&signer),
                files: files
                    .iter()
                    .map(|(n, b)| Entry {
                        name: n.clone(),
                        size: b.len() as u64,
                        sha256: container::sha256_hex(b),
                    })
                    .collect(),
            };
            let bytes: Vec<&[u8]> = files.iter().map(|(_, b)| &b[..]).collect();
            let w = ContainerWriter::start(Vec::new(), &manifest, &bytes).expect("in memory");
            let (mut plain, _) = w.finish(&signer).expect("in memory");
            if let Some(c) = cut {
                plain.truncate(usize::from(c) % (plain.len() + 1));
            }
            if let Some((at, x)) = flip
                && !plain.is_empty()
                && x != 0
            {
                let i = usize::from(at) % plain.len();
                plain[i] ^= x;
            }
            // No record holds the signing key, so even an intact container must be refused.
            assert!(
                !check(&plain),
                "a backup signed by a key it does not hold was accepted"
            );
            // Through the age layer: the same verdict.
            let enc = encrypt(&plain);
            let mut r = keysafe_server::backup::decrypt(std::io::Cursor::new(enc), &identities())
                .expect("our own encryption decrypts");
            let mut again = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut again).expect("intact age stream");
            assert_eq!(again, plain);
        }
    }
});
