//! Audit retention through the binary: `keysafe admin audit prune` archives the entries up to a
//! signed checkpoint (the archive passes docs/audit.md's independent check and ends at the
//! anchor), deletes them on the server, and `audit verify` then proves continuity from that
//! checkpoint. Refusals change nothing; a prefix deleted behind the server's back (raw SQL) is
//! still reported as deleted.

use crate::{fails_with, keysafe, ok, run};
use keysafe_client::Precondition;
use keysafe_proto::{DepositName, ErrorCode};
use keysafe_testkit::{TestServer, TestStorage};
use std::path::Path;

fn admin(tmp: &Path, data_dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = keysafe(tmp);
    c.args(["admin", "--data-dir"]).arg(data_dir).args(args);
    c
}

/// Some traffic, then a checkpoint of it; answers the checkpoint's entry.
async fn activity_then_checkpoint(
    ts: &TestServer,
    c: &keysafe_testkit::TestClient,
    tag: &str,
) -> u64 {
    for i in 0..3 {
        let n = DepositName::parse(&format!("ret/{tag}/{i}")).unwrap();
        c.client
            .put(&n, b"v".to_vec(), Precondition::None)
            .await
            .unwrap();
        c.client.get(&n, None).await.unwrap();
    }
    ts.app
        .state
        .audit
        .flush(std::time::Duration::from_secs(30))
        .await;
    ts.admin.audit_checkpoint_now().await.unwrap().unwrap().seq
}

fn entry_count(tmp: &Path, data_dir: &Path) -> impl std::future::Future<Output = u64> {
    let c = admin(tmp, data_dir, &["audit", "verify", "--json"]);
    async move {
        let out = ok(&run(c).await);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["entries"].as_u64().unwrap()
    }
}

async fn prune_archives_deletes_and_verify_starts_from_the_anchor(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let c = ts.new_client("acme").await;
    let first = activity_then_checkpoint(&ts, &c, "a").await;
    let second = activity_then_checkpoint(&ts, &c, "b").await;
    activity_then_checkpoint(&ts, &c, "c").await;
    assert!(1 < first && first < second);

    // Refused, nothing written, nothing deleted: not a checkpoint; neither --through nor
    // --before; an archive that exists already.
    let before = entry_count(t, &ts.data_dir).await;
    let a0 = t.join("a0.jsonl");
    let err = fails_with(
        &run({
            let mut c = admin(
                t,
                &ts.data_dir,
                &[
                    "audit",
                    "prune",
                    "--through",
                    &(first - 1).to_string(),
                    "--archive",
                ],
            );
            c.arg(&a0);
            c
        })
        .await,
        2,
    );
    assert!(err.contains("no signed checkpoint"), "{err}");
    assert!(!a0.exists());
    let o = run({
        let mut c = admin(t, &ts.data_dir, &["audit", "prune", "--archive"]);
        c.arg(&a0);
        c
    })
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert!(!a0.exists());
    std::fs::write(&a0, "keep me").unwrap();
    let err = fails_with(
        &run({
            let mut c = admin(
                t,
                &ts.data_dir,
                &[
                    "audit",
                    "prune",
                    "--through",
                    &first.to_string(),
                    "--archive",
                ],
            );
            c.arg(&a0);
            c
        })
        .await,
        1,
    );
    assert!(err.contains("must not exist"), "{err}");
    assert_eq!(std::fs::read_to_string(&a0).unwrap(), "keep me");
    assert!(entry_count(t, &ts.data_dir).await >= before);
    // Not for clients: only administrators prune.
    let e = c
        .client
        .audit_prune(&keysafe_proto::audit::AuditPruneRequest {
            through: first,
            archive_sha256: "0".repeat(64),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");

    // Prune through the first checkpoint.
    let a1 = t.join("a1.jsonl");
    let out = ok(&run({
        let mut c = admin(
            t,
            &ts.data_dir,
            &[
                "--json",
                "audit",
                "prune",
                "--through",
                &first.to_string(),
                "--archive",
            ],
        );
        c.arg(&a1);
        c
    })
    .await);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["first"], 1, "{r}");
    assert_eq!(r["through"], first, "{r}");
    assert_eq!(r["entries"], first, "{r}");
    assert_eq!(r["deleted"], first, "{r}");
    // The archive: docs/audit.md's script accepts it, it holds entries 1..=first ending at the
    // anchor checkpoint's hash, and its SHA-256 is what the trail recorded.
    let script = crate::audit_cmds::documented_script(t);
    let o = crate::audit_cmds::python(&script, &a1);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&a1)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let entries: Vec<&serde_json::Value> = lines.iter().filter_map(|l| l.get("entry")).collect();
    assert_eq!(entries.len() as u64, first);
    let anchor = lines
        .iter()
        .filter_map(|l| l.get("checkpoint"))
        .find(|c| c["seq"] == first)
        .expect("the anchor checkpoint is in the archive");
    assert_eq!(entries.last().unwrap()["hash"], anchor["hash"]);
    let sha = r["archive_sha256"].as_str().unwrap();
    let trail = ts
        .admin
        .audit_entries(first + 1, None, 10_000)
        .await
        .unwrap()
        .entries;
    assert!(
        trail
            .iter()
            .any(|e| e.event.target == keysafe_proto::audit::prune_target(first, sha)),
        "the prune is recorded with the archive's SHA-256"
    );

    // The server kept the rest; verify starts from the anchor.
    let out = ok(&run(admin(t, &ts.data_dir, &["audit", "verify"])).await);
    assert!(
        out.contains(&format!("Entries 1..{first} were pruned")),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&run(admin(
        t,
        &ts.data_dir,
        &["audit", "verify", "--json"],
    ))
    .await))
    .unwrap();
    assert!(v["broken"].is_null(), "{v}");
    assert_eq!(v["pruned_through"], first);
    assert_eq!(v["first_seq"], first + 1);

    // Again, through the second checkpoint: the archive starts after the first prune.
    let a2 = t.join("a2.jsonl");
    let out = ok(&run({
        let mut c = admin(
            t,
            &ts.data_dir,
            &[
                "--json",
                "audit",
                "prune",
                "--through",
                &second.to_string(),
                "--archive",
            ],
        );
        c.arg(&a2);
        c
    })
    .await);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["first"], first + 1, "{r}");
    let o = crate::audit_cmds::python(&script, &a2);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&ok(&run(admin(
        t,
        &ts.data_dir,
        &["audit", "verify", "--json"],
    ))
    .await))
    .unwrap();
    assert!(v["broken"].is_null(), "{v}");
    assert_eq!(v["pruned_through"], second);

    // Somebody with database access deletes more, up to a later checkpoint, without a prune
    // record: verify reports the missing entries.
    let third = activity_then_checkpoint(&ts, &c, "d").await;
    activity_then_checkpoint(&ts, &c, "e").await;
    ts.raw_db()
        .await
        .execute(&format!("DELETE FROM audit_log WHERE seq <= {third}"), &[])
        .await
        .unwrap();
    let err = fails_with(&run(admin(t, &ts.data_dir, &["audit", "verify"])).await, 7);
    assert!(err.contains("(deleted)"), "{err}");
    assert!(err.contains("no prune of them is recorded"), "{err}");
}

keysafe_testkit::storage_tests!(multi_thread: prune_archives_deletes_and_verify_starts_from_the_anchor);
