//! Backups: created from the data directory while clients write, verified, restored onto a new
//! address and host name after the original is wiped, into the other storage backend (SQLite to
//! PostgreSQL and the reverse); every organisation, client and deposit version reads back byte
//! for byte and the server keeps its fingerprint. A modified, truncated or re-signed backup is
//! refused and restores nothing; a backup over the API carries no key unless the server pins
//! every recipient.

use crate::{fails_with, keysafe, ok, run};
use age::secrecy::ExposeSecret;
use keysafe_client::ClientError;
use keysafe_client::client::Precondition;
use keysafe_client::{ClientHome, KeysafeClient};
use keysafe_proto::ErrorCode;
use keysafe_proto::api::BackupRequest;
use keysafe_proto::{DepositName, DepositVersion};
use keysafe_testkit::{TestServer, TestStorage, pg_cluster, storage_tests};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn name(s: &str) -> DepositName {
    DepositName::parse(s).unwrap()
}

fn identity(dir: &Path) -> (PathBuf, String) {
    let id = age::x25519::Identity::generate();
    let path = dir.join("backup-key.txt");
    std::fs::write(&path, format!("{}\n", id.to_string().expose_secret())).unwrap();
    (path, id.to_public().to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

type Written = BTreeMap<(String, String, u64), Vec<u8>>;

/// Every version of every deposit of a client, read through the API.
async fn read_all(c: &KeysafeClient) -> BTreeMap<(String, u64), Vec<u8>> {
    let mut out = BTreeMap::new();
    let list = c
        .list(&keysafe_proto::api::ListQuery {
            prefix: None,
            limit: Some(1000),
            page_token: None,
            deleted: Some(true),
            owner: None,
        })
        .await
        .unwrap();
    for d in list.deposits {
        if d.deleted {
            out.insert((d.name.to_string(), 0), b"[deleted]".to_vec());
            continue;
        }
        for v in c.versions(&d.name).await.unwrap().versions {
            let f = c.get(&d.name, Some(v.version)).await.unwrap();
            out.insert((d.name.to_string(), v.version.get()), f.payload.to_vec());
        }
    }
    out
}

/// A backup made with `keysafe admin --data-dir DIR backup create` (on the server's host).
async fn create_on_data_dir(work: &Path, dir: &Path, recipient: &str, extra: &[&str], out: &Path) {
    let mut b = keysafe(work);
    b.args(["admin", "--data-dir"])
        .arg(dir)
        .args(["backup", "create", "--recipient", recipient])
        .args(extra)
        .arg("-o")
        .arg(out);
    ok(&run(b).await);
}

/// Where a restore of a backup taken on `from` goes: the other backend (a fresh PostgreSQL
/// database for a SQLite source, a SQLite file for a PostgreSQL one).
fn other_storage(from: TestStorage) -> (String, TestStorage) {
    match from {
        TestStorage::Sqlite => {
            let cluster = pg_cluster();
            let db = cluster.create_database("").unwrap();
            (cluster.url(&db), TestStorage::Postgres)
        }
        TestStorage::Postgres => ("keysafe.db".into(), TestStorage::Sqlite),
    }
}

storage_tests!(multi_thread: backup_while_writing_then_restore_into_the_other_backend_reads_back_exactly);

async fn backup_while_writing_then_restore_into_the_other_backend_reads_back_exactly(
    storage: TestStorage,
) {
    let work = tempfile::tempdir().unwrap();
    let (id_file, recipient) = identity(work.path());
    let ts = TestServer::start_on(storage).await;
    let a = ts.new_client("acme").await;
    let b = ts.new_client("acme").await;
    let c = ts.new_client("globex").await;
    let clients = [&a, &b, &c];
    let mut written: Written = BTreeMap::new();
    for (ci, cl) in clients.iter().enumerate() {
        for i in 0..15 {
            for v in 1..=2u64 {
                let payload: Vec<u8> = (0..(i * 7 + v as usize))
                    .map(|x| (x * 31 + ci) as u8)
                    .collect();
                cl.client
                    .put(
                        &name(&format!("db/{i}")),
                        payload.clone(),
                        Precondition::None,
                    )
                    .await
                    .unwrap();
                written.insert((cl.fingerprint.to_string(), format!("db/{i}"), v), payload);
            }
        }
    }
    // A deleted deposit travels too.
    a.client.delete(&name("db/0")).await.unwrap();

    // A writer keeps going while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = c.client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut log = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let payload = format!("live {n}").into_bytes();
                let r = client
                    .put(&name("live"), payload.clone(), Precondition::None)
                    .await
                    .unwrap();
                log.push((r.version.get(), payload));
                n += 1;
            }
            log
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let backup = work.path().join("keysafe.age");
    create_on_data_dir(
        work.path(),
        &ts.data_dir,
        &recipient,
        &["--include-root-key", "--include-admin-identity"],
        &backup,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let live_log = writer.await.unwrap();
    assert!(!live_log.is_empty());
    // Only an administrator gets a backup over the API.
    assert!(
        a.client
            .backup(&BackupRequest {
                recipients: vec![recipient.clone()],
                ..Default::default()
            })
            .await
            .is_err()
    );

    // Verify through the binary.
    let mut v = keysafe(work.path());
    v.args(["backup", "verify"])
        .arg(&backup)
        .arg("--identity")
        .arg(&id_file)
        .arg("--json");
    let verified: serde_json::Value = serde_json::from_str(&ok(&run(v).await)).unwrap();
    assert_eq!(verified["manifest"]["includes"]["root_key"], true);
    assert_eq!(verified["manifest"]["includes"]["tls_key"], true);
    assert_eq!(verified["manifest"]["includes"]["admin_identity"], true);
    assert_eq!(verified["manifest"]["origin"], "data-dir");
    assert_eq!(
        verified["manifest"]["server_fingerprint"],
        ts.fingerprint.as_str()
    );
    assert_eq!(verified["orgs"], 3, "admin, acme, globex");
    assert_eq!(verified["clients"], 4);

    // What each client could read before the wipe.
    let mut before = Vec::new();
    for cl in clients {
        before.push(read_all(&cl.client).await);
    }
    let orgs_before = ts.admin.list_orgs().await.unwrap();
    let clients_before = ts.admin.list_clients(None, None).await.unwrap();
    let old_fp = ts.fingerprint.clone();
    let summary = ts.summary.clone();

    // Wipe the original data directory completely.
    let old_dir = ts.data_dir.clone();
    let root = ts.stop_keep().await;
    std::fs::remove_dir_all(&old_dir).unwrap();
    drop(root);

    // Restore onto another address and host name, and into the other backend.
    let (target_storage, target) = other_storage(storage);
    let new_dir = work.path().join("restored");
    let port = free_port();
    let mut r = keysafe(work.path());
    r.args(["restore", "--from"])
        .arg(&backup)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&new_dir)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--hostname",
            "keysafe-dr.example",
            "--storage",
            &target_storage,
            "--json",
        ]);
    let restored: serde_json::Value = serde_json::from_str(&ok(&run(r).await)).unwrap();
    assert_eq!(restored["server_fingerprint"], old_fp.as_str());
    assert_eq!(restored["keyring_checked"], true);
    assert!(restored["records"].as_u64().unwrap() > 100);
    assert_eq!(restored["url"], format!("https://127.0.0.1:{port}"));
    let cert = std::fs::read(new_dir.join("tls/server.crt")).unwrap();
    let der = &keysafe_client::home::load_ca(&new_dir.join("tls/server.crt")).unwrap()[0];
    assert!(
        der.windows(18).any(|w| w == b"keysafe-dr.example"),
        "certificate re-issued for the new name"
    );
    assert!(!cert.is_empty());

    let ts2 = TestServer::open_existing(&new_dir, summary, |_| {}).await;
    assert_eq!(ts2.storage, target, "restored into the backend asked for");
    assert_eq!(ts2.fingerprint, old_fp);
    let json = |v: &dyn Erased| v.to_json();
    assert_eq!(
        json(&ts2.admin.list_orgs().await.unwrap()),
        json(&orgs_before)
    );
    assert_eq!(
        json(&ts2.admin.list_clients(None, None).await.unwrap()),
        json(&clients_before)
    );
    for (i, cl) in clients.iter().enumerate() {
        // The same client home, pinned to the same fingerprint, pointed at the new address.
        let mut home: ClientHome = cl.home.clone();
        home.config.servers = vec![ts2.url.clone()];
        let client = KeysafeClient::from_home_with(
            &home,
            // These tests check what the server answers: no client-side cache in between.
            &keysafe_client::ClientOptions {
                use_cache: false,
                ..Default::default()
            },
        )
        .unwrap();
        let after = read_all(&client).await;
        if i == 2 {
            // The live deposit holds a prefix of what was written during the backup.
            let mut after = after;
            let live: Vec<(u64, Vec<u8>)> = after
                .iter()
                .filter(|((n, _), _)| n == "live")
                .map(|((_, v), p)| (*v, p.clone()))
                .collect();
            assert!(live.len() <= live_log.len());
            assert_eq!(&live[..], &live_log[..live.len()]);
            after.retain(|(n, _), _| n != "live");
            let mut b = before[i].clone();
            b.retain(|(n, _), _| n != "live");
            assert_eq!(after, b);
        } else {
            assert_eq!(after, before[i], "client {i}");
        }
        for ((fp, n, v), payload) in &written {
            if *fp == cl.fingerprint.to_string() {
                let f = client
                    .get(&name(n), Some(DepositVersion::new(*v).unwrap()))
                    .await;
                if n == "db/0" && *fp == a.fingerprint.to_string() {
                    assert!(f.is_err(), "deleted stays deleted");
                } else {
                    assert_eq!(&f.unwrap().payload[..], &payload[..]);
                }
            }
        }
    }
    // The administrator identity of the data directory works against the restored server.
    let mut adm = keysafe(work.path());
    adm.args(["admin", "--data-dir"])
        .arg(&new_dir)
        .args(["org", "list", "--json"]);
    assert!(ok(&run(adm).await).contains("globex"));
    // The audit chain came across whole and goes on.
    let mut av = keysafe(work.path());
    av.args(["admin", "--data-dir"])
        .arg(&new_dir)
        .args(["audit", "verify"]);
    ok(&run(av).await);
    // Every authenticated access row verifies under the restored keyring, in the other backend:
    // over the API, and offline on the data directory with its seal (ADR 0013).
    let r = ts2.admin.integrity_verify().await.unwrap();
    assert!(r.failures.is_empty(), "{r:?}");
    assert!(r.checked > 10, "{r:?}");
    let mut iv = keysafe(work.path());
    iv.args(["admin", "--data-dir"])
        .arg(&new_dir)
        .args(["integrity", "verify", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&run(iv).await)).unwrap();
    assert_eq!(v["failures"], serde_json::json!([]), "{v}");
    assert_eq!(v["checked"], serde_json::json!(r.checked));
    // A second restore into the same (now full) database is refused and changes nothing.
    if target == TestStorage::Postgres {
        let again = work.path().join("again");
        let mut r = keysafe(work.path());
        r.args(["restore", "--from"])
            .arg(&backup)
            .arg("--identity")
            .arg(&id_file)
            .arg("--data-dir")
            .arg(&again)
            .args(["--storage", &target_storage]);
        assert!(fails_with(&run(r).await, 1).contains("empty database"));
        assert!(!again.exists());
        assert_eq!(
            json(&ts2.admin.list_orgs().await.unwrap()),
            json(&orgs_before)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_modified_backup_is_refused_and_restores_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (id_file, recipient) = identity(work.path());
    let ts = TestServer::start().await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    let good = work.path().join("good.age");
    create_on_data_dir(work.path(), &ts.data_dir, &recipient, &[], &good).await;
    let bytes = std::fs::read(&good).unwrap();
    // Flip one byte in the middle of the payload, one at the very end, and one in the header.
    let truncated = |n: usize| {
        let mut b = bytes.to_vec();
        b.truncate(n);
        b
    };
    let flipped = |at: usize| {
        let mut b = bytes.to_vec();
        b[at] ^= 0x01;
        b
    };
    for (label, bad) in [
        ("middle", flipped(bytes.len() / 2)),
        ("end", flipped(bytes.len() - 1)),
        ("header", flipped(40)),
        ("truncated-last-chunk", truncated(bytes.len() - 1)),
        ("truncated-half", truncated(bytes.len() / 2)),
    ] {
        let f = work.path().join(format!("bad-{label}.age"));
        std::fs::write(&f, &bad).unwrap();
        let mut v = keysafe(work.path());
        v.args(["backup", "verify"])
            .arg(&f)
            .arg("--identity")
            .arg(&id_file);
        let err = fails_with(&run(v).await, 1);
        assert!(
            err.contains("modified") || err.contains("decrypt") || err.contains("truncated"),
            "{label}: {err}"
        );
        let dir = work.path().join(format!("restore-{label}"));
        let mut r = keysafe(work.path());
        r.args(["restore", "--from"])
            .arg(&f)
            .arg("--identity")
            .arg(&id_file)
            .arg("--data-dir")
            .arg(&dir);
        fails_with(&run(r).await, 1);
        assert!(!dir.exists(), "nothing restored from a modified backup");
    }
    // A wrong identity cannot open it.
    let stranger = work.path().join("stranger.txt");
    let mut kg = keysafe(work.path());
    kg.args(["backup", "keygen", "-o"]).arg(&stranger);
    let recipient_out = ok(&run(kg).await);
    assert!(recipient_out.trim().starts_with("age1"), "{recipient_out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&stranger).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let mut v = keysafe(work.path());
    v.args(["backup", "verify"])
        .arg(&good)
        .arg("--identity")
        .arg(&stranger);
    assert!(fails_with(&run(v).await, 1).contains("decrypt"));

    // Without the root key in the backup, restore asks for it and leaves nothing behind...
    let dir = work.path().join("restore-nokey");
    let mut r = keysafe(work.path());
    r.args(["restore", "--from"])
        .arg(&good)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&dir);
    assert!(fails_with(&run(r).await, 1).contains("--root-key"));
    assert!(!dir.exists());
    // ...a wrong root key is refused...
    let wrong = work.path().join("wrong.key");
    std::fs::write(&wrong, [7u8; 32]).unwrap();
    let mut r = keysafe(work.path());
    r.args(["restore", "--from"])
        .arg(&good)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&dir)
        .arg("--root-key")
        .arg(&wrong);
    assert!(fails_with(&run(r).await, 1).contains("does not open"));
    assert!(!dir.exists());
    // ...and the right one restores.
    let mut r = keysafe(work.path());
    r.args(["restore", "--from"])
        .arg(&good)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&dir)
        .arg("--root-key")
        .arg(&ts.summary.root_key);
    ok(&run(r).await);
    assert!(dir.join("keysafe.db").exists());
    // The administrator identity travels only when asked (--include-admin-identity).
    assert!(!dir.join("admin").exists());
    assert!(dir.join("tls/server.key").exists());
    // --include-root-key is refused for seals other than the file seal (checked by the server).
    assert!(bytes.len() > 100);
}

/// Compares API answers by their JSON form.
trait Erased {
    fn to_json(&self) -> serde_json::Value;
}

impl<T: serde::Serialize> Erased for T {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap()
    }
}

storage_tests!(multi_thread: backups_over_the_api_carry_no_key_unless_every_recipient_is_pinned);

/// An administrator (any: one promoted over the API is one like the others) gets over the API
/// a backup of the store, but the root key, the TLS private key and the administrator identity
/// only to recipients pinned in keysafe.toml, all of them.
async fn backups_over_the_api_carry_no_key_unless_every_recipient_is_pinned(storage: TestStorage) {
    let work = tempfile::tempdir().unwrap();
    let (id_file, recipient) = identity(work.path());
    let pinned = age::x25519::Identity::generate();
    let pinned_file = work.path().join("pinned.txt");
    std::fs::write(&pinned_file, pinned.to_string().expose_secret()).unwrap();
    let pinned_r = pinned.to_public().to_string();
    let pin = pinned_r.clone();
    let ts = TestServer::start_on_with(storage, move |c| c.backup.key_recipients = vec![pin]).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    let verify = |file: PathBuf, id: PathBuf| {
        let mut v = keysafe(work.path());
        v.args(["backup", "verify"])
            .arg(file)
            .arg("--identity")
            .arg(id)
            .arg("--json");
        async move { serde_json::from_str::<serde_json::Value>(&ok(&run(v).await)).unwrap() }
    };

    // Without keys: to any recipient, and it carries none.
    let plain = work.path().join("plain.age");
    let bytes = ts
        .admin
        .backup(&BackupRequest {
            recipients: vec![recipient.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    std::fs::write(&plain, &bytes).unwrap();
    let v = verify(plain.clone(), id_file.clone()).await;
    assert_eq!(v["manifest"]["origin"], "api");
    for part in ["root_key", "tls_key", "admin_identity"] {
        assert_eq!(v["manifest"]["includes"][part], false, "{part}");
    }
    let names: Vec<&str> = v["manifest"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["keysafe.toml", "tls/server.crt"]);
    assert!(v["orgs"].as_u64().unwrap() >= 2);
    // It cannot bring the server back under its fingerprint: no TLS key.
    let dir = work.path().join("from-plain");
    let mut r = keysafe(work.path());
    r.args(["restore", "--from"])
        .arg(&plain)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&dir)
        .arg("--root-key")
        .arg(&ts.summary.root_key)
        .args(["--storage", "keysafe.db"]);
    assert!(fails_with(&run(r).await, 1).contains("TLS private key"));
    assert!(!dir.exists());

    // Each key-bearing part to a recipient not pinned, alone or beside a pinned one: 403.
    for (root_key, tls_key, admin_identity) in [
        (true, false, false),
        (false, true, false),
        (false, false, true),
    ] {
        for recipients in [
            vec![recipient.clone()],
            vec![pinned_r.clone(), recipient.clone()],
        ] {
            match ts
                .admin
                .backup(&BackupRequest {
                    recipients,
                    include_root_key: root_key,
                    include_tls_key: tls_key,
                    include_admin_identity: admin_identity,
                })
                .await
            {
                Err(ClientError::Api { code, message, .. }) => {
                    assert_eq!(code, ErrorCode::Forbidden);
                    assert!(message.contains("key_recipients"), "{message}");
                }
                other => panic!("expected 403, got {other:?}"),
            }
        }
    }
    // The same through the CLI, with an administrator client home: nothing written.
    let out = work.path().join("refused.age");
    let mut b = keysafe(work.path());
    b.args(["admin", "--home"])
        .arg(&ts.summary.admin_home)
        .args([
            "backup",
            "create",
            "--include-root-key",
            "--recipient",
            &recipient,
            "-o",
        ])
        .arg(&out);
    assert!(fails_with(&run(b).await, 4).contains("key_recipients"));
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".keysafe-backup-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // To the pinned recipient only: granted, streamed by the CLI, and it restores (into the
    // other backend) under the same fingerprint.
    let keyed = work.path().join("keyed.age");
    let mut b = keysafe(work.path());
    b.args(["admin", "--home"])
        .arg(&ts.summary.admin_home)
        .args([
            "backup",
            "create",
            "--include-root-key",
            "--include-tls-key",
            "--recipient",
            &pinned_r,
            "-o",
        ])
        .arg(&keyed);
    ok(&run(b).await);
    let v = verify(keyed.clone(), pinned_file.clone()).await;
    assert_eq!(v["manifest"]["includes"]["root_key"], true);
    assert_eq!(v["manifest"]["includes"]["tls_key"], true);
    assert_eq!(v["manifest"]["includes"]["admin_identity"], false);
    let (target_storage, _) = other_storage(storage);
    let dir = work.path().join("from-keyed");
    let mut r = keysafe(work.path());
    r.args(["restore", "--from"])
        .arg(&keyed)
        .arg("--identity")
        .arg(&pinned_file)
        .arg("--data-dir")
        .arg(&dir)
        .args(["--storage", &target_storage, "--json"]);
    let restored: serde_json::Value = serde_json::from_str(&ok(&run(r).await)).unwrap();
    assert_eq!(restored["server_fingerprint"], ts.fingerprint.as_str());
    assert!(
        !dir.join("admin").exists(),
        "no administrator identity asked"
    );
}

/// Someone who can decrypt a backup (a recipient) but does not hold the server's keyring
/// changes it and signs it again with an audit key of their own, carried in the backup: the
/// container checks pass (the signature is by a key the backup holds), but restore opens the
/// keyring and finds that key does not unwrap under it, and keeps nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_re_signed_without_the_keyring_is_refused() {
    use keysafe_core::store::export::{ExportRecord, Value};
    use keysafe_server::backup::container::{ContainerReader, ContainerWriter};
    let work = tempfile::tempdir().unwrap();
    let (id_file, recipient) = identity(work.path());
    let ts = TestServer::start().await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    let good = work.path().join("good.age");
    create_on_data_dir(
        work.path(),
        &ts.data_dir,
        &recipient,
        &["--include-root-key"],
        &good,
    )
    .await;
    let ids = keysafe_server::backup::load_identities(std::slice::from_ref(&id_file)).unwrap();
    let input = keysafe_server::backup::decrypt(std::fs::File::open(&good).unwrap(), &ids).unwrap();
    let (mut reader, opened) = ContainerReader::open(input).unwrap();
    let forger = keysafe_core::audit::AuditSigner::from_seed(
        &keysafe_core::crypto::SecretKey::generate().unwrap(),
    )
    .unwrap();
    let mut records = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        let r = if r.kind().name == "audit_signing_keys" {
            let mut v = r.values().to_vec();
            v[0] = Value::Text(forger.key_id().to_owned());
            v[1] = Value::Bytes(forger.public_key().to_vec());
            ExportRecord::new(r.kind(), v).unwrap()
        } else {
            r
        };
        records.push(r);
    }
    let mut manifest = opened.manifest.clone();
    manifest.audit_key_id = forger.key_id().to_owned();
    let files: Vec<&[u8]> = opened.files.iter().map(|(_, b)| &b[..]).collect();
    let r: age::x25519::Recipient = recipient.parse().unwrap();
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
    let mut out = Vec::new();
    let w = enc.wrap_output(&mut out).unwrap();
    let mut cw = ContainerWriter::start(w, &manifest, &files).unwrap();
    for r in &records {
        cw.record(r).unwrap();
    }
    cw.finish(&forger).unwrap().0.finish().unwrap();
    let forged = work.path().join("forged.age");
    std::fs::write(&forged, &out).unwrap();
    // Into PostgreSQL: the import was one transaction, so the refused restore leaves the
    // database empty and the untouched backup then restores into the same database.
    let (pg_url, _) = other_storage(TestStorage::Sqlite);
    let dir = work.path().join("from-forged");
    let mut r = keysafe(work.path());
    r.args(["restore", "--from"])
        .arg(&forged)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&dir)
        .args(["--storage", &pg_url]);
    let err = fails_with(&run(r).await, 1);
    assert!(err.contains("re-signed"), "{err}");
    assert!(!dir.exists());
    let mut r = keysafe(work.path());
    r.args(["restore", "--from"])
        .arg(&good)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&dir)
        .args(["--storage", &pg_url, "--json"]);
    let restored: serde_json::Value = serde_json::from_str(&ok(&run(r).await)).unwrap();
    assert_eq!(restored["keyring_checked"], true);
    assert_eq!(
        restored["records"].as_u64().unwrap(),
        records.len() as u64,
        "every record of the backup, into the database the refused restore left empty"
    );
}
