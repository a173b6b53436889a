//! Backups (issue 5): created while clients write, verified, restored onto a new address and
//! host name after the original is wiped; every organisation, client and deposit version reads
//! back byte for byte, the server keeps its fingerprint, and a modified backup is refused.

use crate::{fails_with, keysafe, ok, run};
use age::secrecy::ExposeSecret;
use keysafe_client::ClientError;
use keysafe_client::client::Precondition;
use keysafe_client::{ClientHome, KeysafeClient};
use keysafe_proto::ErrorCode;
use keysafe_proto::api::BackupRequest;
use keysafe_proto::{DepositName, DepositVersion};
use keysafe_testkit::{TestServer, TestStorage};
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

#[tokio::test(flavor = "multi_thread")]
async fn backup_while_writing_then_restore_elsewhere_reads_back_exactly() {
    let work = tempfile::tempdir().unwrap();
    let (id_file, recipient) = identity(work.path());
    let ts = TestServer::start().await;
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
    let bytes = ts
        .admin
        .backup(&BackupRequest {
            recipients: vec![recipient.clone()],
            include_root_key: true,
        })
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let live_log = writer.await.unwrap();
    assert!(!live_log.is_empty());
    let backup = work.path().join("keysafe.age");
    std::fs::write(&backup, &bytes).unwrap();
    // Only an administrator gets a backup.
    assert!(
        a.client
            .backup(&BackupRequest {
                recipients: vec![recipient.clone()],
                include_root_key: false
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
    assert_eq!(verified["manifest"]["includes_root_key"], true);
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

    // Wipe the original completely.
    let old_dir = ts.data_dir.clone();
    let root = ts.stop_keep().await;
    std::fs::remove_dir_all(&old_dir).unwrap();
    drop(root);

    // Restore onto another address and host name.
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
            "--json",
        ]);
    let restored: serde_json::Value = serde_json::from_str(&ok(&run(r).await)).unwrap();
    assert_eq!(restored["server_fingerprint"], old_fp.as_str());
    assert_eq!(restored["url"], format!("https://127.0.0.1:{port}"));
    let cert = std::fs::read(new_dir.join("tls/server.crt")).unwrap();
    let der = &keysafe_client::home::load_ca(&new_dir.join("tls/server.crt")).unwrap()[0];
    assert!(
        der.windows(18).any(|w| w == b"keysafe-dr.example"),
        "certificate re-issued for the new name"
    );
    assert!(!cert.is_empty());

    let ts2 = TestServer::open_existing(&new_dir, summary, |_| {}).await;
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
    let bytes = ts
        .admin
        .backup(&BackupRequest {
            recipients: vec![recipient.clone()],
            include_root_key: false,
        })
        .await
        .unwrap();
    let good = work.path().join("good.age");
    std::fs::write(&good, &bytes).unwrap();
    // Flip one byte in the middle of the payload, one at the very end, and one in the header.
    for (label, at) in [
        ("middle", bytes.len() / 2),
        ("end", bytes.len() - 1),
        ("header", 40),
    ] {
        let mut bad = bytes.to_vec();
        bad[at] ^= 0x01;
        let f = work.path().join(format!("bad-{label}.age"));
        std::fs::write(&f, &bad).unwrap();
        let mut v = keysafe(work.path());
        v.args(["backup", "verify"])
            .arg(&f)
            .arg("--identity")
            .arg(&id_file);
        let err = fails_with(&run(v).await, 1);
        assert!(
            err.contains("modified") || err.contains("decrypt"),
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

/// Backups carry a SQLite file snapshot until they become a logical export of the store; a
/// server on PostgreSQL refuses them with a clear error (400, exit 2 from the CLI) and leaves no
/// file behind, neither in its data directory nor where the output was to go.
#[tokio::test(flavor = "multi_thread")]
async fn backups_are_refused_on_postgresql_until_they_are_logical_exports() {
    let work = tempfile::tempdir().unwrap();
    let (_, recipient) = identity(work.path());
    let ts = TestServer::start_on(TestStorage::Postgres).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    match ts
        .admin
        .backup(&BackupRequest {
            recipients: vec![recipient.clone()],
            include_root_key: true,
        })
        .await
    {
        Err(ClientError::Api { code, message, .. }) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("SQLite"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let out = work.path().join("b.age");
    let mut b = keysafe(work.path());
    b.args(["admin", "--data-dir"])
        .arg(&ts.data_dir)
        .args(["backup", "create", "--recipient", &recipient, "-o"])
        .arg(&out);
    let err = fails_with(&run(b).await, 2);
    assert!(err.contains("SQLite"), "{err}");
    assert!(!out.exists(), "a refused backup wrote {}", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(&ts.data_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".backup-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The server serves on.
    assert_eq!(
        &c.client.get(&name("k"), None).await.unwrap().payload[..],
        b"v"
    );
}
