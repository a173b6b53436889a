//! Export and import: a store holding every kind of record exports all of it and imports into
//! an empty store of any backend record for record (the audit chain verifying and going on
//! after it); an import into a store that holds anything is refused; a failed import leaves
//! nothing; an export is one snapshot while writes go on; and every table of the backend is
//! an exported kind (or named here as not exported), with exactly the kind's fields.

use super::*;
use futures_util::StreamExt;
use keysafe_core::store::export::{ExportRecord, RECORD_KINDS, RecordKind, Value};
use keysafe_core::store::{
    GrantRecord, RecordStream, RegistrationTokenRecord, ReplacedToken, StoreResult,
    WrappedKeyRecord,
};
use keysafe_proto::GroupName;
use keysafe_proto::api::Access;
use keysafe_proto::audit::AuditEvent;
use std::collections::BTreeMap;

/// Tables that are not records of an export, per backend: migration bookkeeping, and
/// PostgreSQL's `audit_head` (derived: an import sets it from the last imported entry).
/// Tables a backup does not carry: migration bookkeeping, the audit chain's head (rebuilt from the
/// entries), and the cluster's per-database state: node heartbeats (each node records itself at
/// its next start), the change serial (a fresh store starts its own), the ids of replayed audit
/// spool batches, and the cluster's TLS identity (a restored node serves the TLS key its backup
/// carries; nodes joining a restored cluster need the identity stored again, docs/cluster.md).
const NOT_EXPORTED: &[&str] = &[
    "_sqlx_migrations",
    "keysafe_migrations",
    "audit_head",
    "cluster_nodes",
    "cluster_changes",
    "cluster_identity",
    "audit_spool_batches",
];

fn event(target: &str, time: i64) -> AuditEvent {
    AuditEvent {
        time,
        node: "n1".into(),
        request_id: format!("r-{target}"),
        remote: "127.0.0.1:9".into(),
        client: Some(fp('a').to_string()),
        org: Some("acme".into()),
        operation: "PUT /v1/deposits/{name}".into(),
        target: target.into(),
        version: Some(1),
        outcome: "ok".into(),
    }
}

/// What a populated store's audit chain is checked with.
pub struct Populated {
    pub public_key: Vec<u8>,
    pub checkpoints: usize,
    _root: tempfile::TempDir,
}

/// Fills a store with at least one record of every kind, with nullable fields both set and
/// unset, through the store's own mutations (as the service writes them).
pub async fn populate(s: &dyn Store) -> Populated {
    let root = tempfile::tempdir().unwrap();
    let seal = keysafe_core::FileSeal::create(&root.path().join("root.key")).unwrap();
    let (ring, record) = keysafe_core::Keyring::generate(Arc::new(seal), ts(1)).unwrap();
    s.apply(Mutation::InsertKek(record)).await.unwrap();
    // The same version under a second seal (a seal migration in progress).
    s.apply(kek(1, "pkcs11:token=t;key=k")).await.unwrap();
    let signer = keysafe_core::audit::AuditSigner::load_or_create(s, &ring, ts(2))
        .await
        .unwrap();

    s.apply(create_org("acme")).await.unwrap();
    s.apply(Mutation::CreateOrg(OrgRecord {
        name: OrgName::parse("beta").unwrap(),
        contacts: vec![],
        auth_mode: AuthMode::Approval,
        auth_hash: None,
        created_at: ts(3),
        updated_at: ts(4),
    }))
    .await
    .unwrap();
    let mut a = client_record(fp('a'), "acme", ts(5));
    a.name = Some(keysafe_proto::ClientName::parse("web-1").unwrap());
    a.recipient = Some("age1recipientofa".into());
    a.role = ClientRole::Admin;
    a.token = TokenState {
        counter: 7,
        hash: Some("h7".into()),
        recent: vec![ReplacedToken {
            hash: "h6".into(),
            replaced_at: ts(6),
        }],
        rotated_at: ts(6),
        confirmed: true,
        derivation: Some(TokenDerivation {
            kek_version: 1,
            salt: vec![1, 2, 3, 4],
        }),
    };
    a.last_seen_at = Some(ts(8));
    s.apply_audited(insert(a), Some(event("/v1/register", 9)))
        .await
        .unwrap();
    for f in ['b', 'c'] {
        s.apply(insert(client_record(fp(f), "acme", ts(10))))
            .await
            .unwrap();
    }
    s.apply(Mutation::MarkSuspectedClone {
        fingerprint: fp('c'),
        reason: "token 3 presented after 5".into(),
        at: ts(11),
    })
    .await
    .unwrap();
    for (hash, org_name) in [("used-token", "beta"), ("open-token", "acme")] {
        s.apply(Mutation::InsertRegistrationToken(RegistrationTokenRecord {
            hash: hash.into(),
            org: OrgName::parse(org_name).unwrap(),
            created_by: fp('a'),
            created_at: ts(12),
            expires_at: ts(10_000),
        }))
        .await
        .unwrap();
    }
    let mut d = client_record(fp('d'), "beta", ts(13));
    d.state = ClientState::Pending;
    s.apply(Mutation::InsertClient {
        client: d,
        consume_token: Some("used-token".into()),
    })
    .await
    .unwrap();

    let ops = GroupName::parse("ops").unwrap();
    let wk = |epoch: u64, m: char| WrappedKeyRecord {
        epoch,
        member: fp(m),
        wrapped: vec![epoch as u8, m as u8, 0xff],
    };
    s.apply(Mutation::CreateGroup {
        org: org(),
        name: ops.clone(),
        recipient: "age1epoch1".into(),
        keys: vec![wk(1, 'a'), wk(1, 'b')],
        at: ts(20),
    })
    .await
    .unwrap();
    s.apply(Mutation::AddGroupMember {
        org: org(),
        name: ops.clone(),
        member: fp('c'),
        at: ts(21),
    })
    .await
    .unwrap();
    s.apply(Mutation::RemoveGroupMember {
        org: org(),
        name: ops.clone(),
        member: fp('b'),
        expected_epoch: 1,
        recipient: "age1epoch2".into(),
        keys: vec![wk(2, 'a'), wk(2, 'c')],
        at: ts(22),
    })
    .await
    .unwrap();

    let shared = key('a', "db/shared");
    for n in 1..=2u64 {
        s.apply_audited(
            Mutation::PutVersion {
                org: org(),
                key: shared.clone(),
                expected_current: (n > 1).then(|| ver(n - 1)),
                expected_acl_serial: None,
                version: version(n, &[n as u8; 40]),
            },
            Some(event("/v1/deposits/db/shared", 30 + n as i64)),
        )
        .await
        .unwrap();
    }
    s.apply(Mutation::SetAcl {
        key: shared.clone(),
        expected_current: ver(2),
        expected_acl_serial: 0,
        grants: vec![
            GrantRecord {
                grantee: Principal::Client(fp('b')),
                access: Access::Read,
                granted_by: fp('a'),
                granted_at: ts(40),
                mac: None,
            },
            GrantRecord {
                grantee: Principal::parse_stored("group:acme/ops").unwrap(),
                access: Access::Write,
                granted_by: fp('a'),
                granted_at: ts(40),
                mac: None,
            },
        ],
        replace: vec![],
        at: ts(40),
    })
    .await
    .unwrap();
    let gone = key('b', "old");
    s.apply(Mutation::PutVersion {
        org: org(),
        key: gone.clone(),
        expected_current: None,
        expected_acl_serial: None,
        version: {
            let mut v = version(1, b"");
            v.meta.encoding = Encoding::Age;
            v
        },
    })
    .await
    .unwrap();
    s.apply(Mutation::SetDeleted {
        key: gone,
        deleted: true,
        at: ts(41),
    })
    .await
    .unwrap();
    s.apply(Mutation::PutVersion {
        org: org(),
        key: DepositKey {
            owner: Principal::parse_stored("group:acme/ops").unwrap(),
            name: DepositName::parse("zone-key").unwrap(),
        },
        expected_current: None,
        expected_acl_serial: None,
        version: version(1, b"group-owned"),
    })
    .await
    .unwrap();

    // Every access row so far gets its MAC, and the back-fill record is stored.
    let applied = s
        .apply(Mutation::BackfillRowMacs {
            auth: keysafe_core::store::RowAuth(signer.row_key()),
            at: ts(49),
        })
        .await
        .unwrap();
    assert!(matches!(applied, keysafe_core::store::Applied::Backfilled(n) if n > 0));

    let reads: Vec<AuditEvent> = (0..150).map(|i| event(&format!("/read/{i}"), 50)).collect();
    s.append_audit(reads).await.unwrap();
    let head = s.audit_head();
    s.apply(Mutation::InsertAuditCheckpoint(signer.sign(
        head.seq,
        &head.hash,
        ts(60),
    )))
    .await
    .unwrap();
    s.append_audit(vec![event("/after-checkpoint", 61)])
        .await
        .unwrap();
    Populated {
        public_key: signer.public_key().to_vec(),
        checkpoints: 1,
        _root: root,
    }
}

/// Every record of a store's export, in order.
pub async fn export_all(s: &dyn Store) -> Vec<ExportRecord> {
    let mut stream = s.export().await.unwrap();
    let mut out = Vec::new();
    while let Some(r) = stream.next().await {
        out.push(r.unwrap());
    }
    out
}

pub fn stream_of(records: Vec<StoreResult<ExportRecord>>) -> RecordStream {
    Box::pin(futures_util::stream::iter(records))
}

fn counts(records: &[ExportRecord]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r.kind().name).or_default() += 1;
    }
    m
}

/// The audit chain of `s` verifies against its checkpoints, and an append continues it.
pub async fn chain_verifies_and_goes_on(s: &dyn Store, p: &Populated) {
    let entries = s.audit_entries(1, None, 10_000).await.unwrap();
    let checkpoints = s.audit_checkpoints(0).await.unwrap();
    assert_eq!(checkpoints.len(), p.checkpoints);
    let report = keysafe_proto::audit::verify(&entries, &checkpoints, &p.public_key, None);
    assert_eq!(report.broken, None, "{report:?}");
    let last = entries.last().unwrap().clone();
    assert_eq!(
        s.audit_head(),
        keysafe_core::store::AuditHead {
            seq: last.seq,
            hash: last.hash.clone()
        }
    );
    s.append_audit(vec![event("/after-import", 99)])
        .await
        .unwrap();
    let more = s.audit_entries(last.seq + 1, None, 10).await.unwrap();
    assert_eq!(more.len(), 1);
    assert_eq!(
        (more[0].seq, &more[0].prev_hash),
        (last.seq + 1, &last.hash)
    );
    // A write with its entry goes on from there too (the writer adopted the imported head).
    s.apply_audited(
        Mutation::SetClientState {
            fingerprint: fp('b'),
            state: ClientState::Disabled,
            at: ts(100),
        },
        Some(event("/v1/admin/clients/b", 100)),
    )
    .await
    .unwrap();
    let all = s.audit_entries(1, None, 10_000).await.unwrap();
    let report = keysafe_proto::audit::verify(&all, &checkpoints, &p.public_key, None);
    assert_eq!(report.broken, None, "{report:?}");
    assert_eq!(all.len(), entries.len() + 2);
}

pub async fn export_then_import_keeps_every_record(b: &dyn TestBackend) {
    let c = Ctx::empty(b).await;
    let p = populate(c.store.as_ref()).await;
    let exported = export_all(c.store.as_ref()).await;
    let n = counts(&exported);
    for k in RECORD_KINDS {
        assert!(
            n.get(k.name).copied().unwrap_or(0) > 0,
            "no {} record",
            k.name
        );
    }
    // Kinds in the documented order, each ordered by its key.
    let order: Vec<&str> = exported.iter().map(|r| r.kind().name).collect();
    let mut dedup = order.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        RECORD_KINDS.iter().map(|k| k.name).collect::<Vec<_>>()
    );
    // Both unset and set nullable values travel.
    let clients: Vec<&ExportRecord> = exported
        .iter()
        .filter(|r| r.kind().name == "clients")
        .collect();
    assert!(
        clients
            .iter()
            .any(|r| r.get("token_salt") == Some(&Value::Null))
    );
    assert!(
        clients
            .iter()
            .any(|r| r.get("token_salt") == Some(&Value::Bytes(vec![1, 2, 3, 4])))
    );
    assert!(
        exported
            .iter()
            .any(|r| r.kind().name == "registration_tokens"
                && r.get("used_by") == Some(&Value::Text(fp('d').to_string())))
    );

    let target = Ctx::empty(b).await;
    let summary = target
        .store
        .import(stream_of(exported.iter().cloned().map(Ok).collect()))
        .await
        .unwrap();
    assert_eq!(summary.total(), exported.len() as u64);
    for (k, count) in &n {
        assert_eq!(summary.count(k), *count as u64, "{k}");
    }
    assert_eq!(export_all(target.store.as_ref()).await, exported);
    // What the domain reads back is the same.
    assert_eq!(
        target.store.list_clients(None, None).await.unwrap(),
        c.store.list_clients(None, None).await.unwrap()
    );
    assert_eq!(
        target
            .store
            .get_version(&key('a', "db/shared"), Some(ver(1)))
            .await
            .unwrap(),
        c.store
            .get_version(&key('a', "db/shared"), Some(ver(1)))
            .await
            .unwrap()
    );
    assert_eq!(
        target.store.list_groups(None, None).await.unwrap(),
        c.store.list_groups(None, None).await.unwrap()
    );
    assert_eq!(
        target.store.audit_signing_key().await.unwrap(),
        c.store.audit_signing_key().await.unwrap()
    );
    assert_eq!(target.store.stats().await.unwrap().deposits, 3);
    chain_verifies_and_goes_on(target.store.as_ref(), &p).await;
    // A store opened again on the imported database starts from the imported chain too.
    let again = target.open_again().await;
    let head = again.audit_head();
    assert!(head.seq > 150, "{head:?}");
}

pub async fn import_refuses_a_store_that_holds_anything(b: &dyn TestBackend) {
    let source = Ctx::new(b).await;
    let exported = export_all(source.store.as_ref()).await;
    // One record of any kind is enough to refuse: a keyring row alone, an audit entry alone.
    let keyring_only = Ctx::empty(b).await;
    keyring_only.store.apply(kek(9, "file")).await.unwrap();
    let audit_only = Ctx::empty(b).await;
    audit_only
        .store
        .append_audit(vec![event("/x", 1)])
        .await
        .unwrap();
    for target in [&keyring_only, &audit_only, &source] {
        let before = export_all(target.store.as_ref()).await;
        assert_eq!(
            target
                .store
                .import(stream_of(exported.iter().cloned().map(Ok).collect()))
                .await
                .unwrap_err(),
            StoreError::AlreadyExists
        );
        assert_eq!(export_all(target.store.as_ref()).await, before);
    }
}

pub async fn a_failed_import_leaves_the_store_empty(b: &dyn TestBackend) {
    let source = Ctx::empty(b).await;
    populate(source.store.as_ref()).await;
    let exported = export_all(source.store.as_ref()).await;
    let target = Ctx::empty(b).await;
    // The stream fails after most records (a backup found truncated or tampered with at its
    // end): nothing of what came before stays.
    let mut items: Vec<StoreResult<ExportRecord>> = exported.iter().cloned().map(Ok).collect();
    let at = items.len() - 3;
    items.insert(
        at,
        Err(StoreError::Corrupt("the backup was modified".into())),
    );
    assert_eq!(
        target.store.import(stream_of(items)).await.unwrap_err(),
        StoreError::Corrupt("the backup was modified".into())
    );
    assert!(export_all(target.store.as_ref()).await.is_empty());
    assert_eq!(
        target.store.audit_head(),
        keysafe_core::store::AuditHead::genesis()
    );
    // A record the database refuses (a group member who is no client) fails the import whole.
    let orphan = exported
        .iter()
        .filter(|r| r.kind().name != "clients")
        .cloned()
        .map(Ok)
        .collect();
    assert!(matches!(
        target.store.import(stream_of(orphan)).await.unwrap_err(),
        StoreError::Corrupt(_)
    ));
    assert!(export_all(target.store.as_ref()).await.is_empty());
    // So does a record twice.
    let mut twice: Vec<StoreResult<ExportRecord>> = exported.iter().cloned().map(Ok).collect();
    twice.push(Ok(exported.last().unwrap().clone()));
    assert!(target.store.import(stream_of(twice)).await.is_err());
    assert!(export_all(target.store.as_ref()).await.is_empty());
    // And after all that, the whole export still goes in.
    target
        .store
        .import(stream_of(exported.iter().cloned().map(Ok).collect()))
        .await
        .unwrap();
    assert_eq!(export_all(target.store.as_ref()).await, exported);
}

pub async fn an_export_is_one_snapshot_while_writes_go_on(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    for i in 0..200u64 {
        c.put(&key('a', &format!("before/{i:03}")), None, 1, b"x")
            .await
            .unwrap();
    }
    let mut stream = c.store.export().await.unwrap();
    // Read part of it, then write, then read the rest: the export holds the state at its start.
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(stream.next().await.unwrap().unwrap());
    }
    for i in 0..50u64 {
        c.put(&key('a', &format!("during/{i:03}")), None, 1, b"y")
            .await
            .unwrap();
    }
    c.put(&key('a', "before/000"), Some(1), 2, b"v2")
        .await
        .unwrap();
    while let Some(r) = stream.next().await {
        got.push(r.unwrap());
    }
    let deposits: Vec<&ExportRecord> = got.iter().filter(|r| r.kind().name == "deposits").collect();
    assert_eq!(deposits.len(), 200);
    assert!(
        deposits
            .iter()
            .all(|r| r.get("current_version") == Some(&Value::Int(1)))
    );
    assert_eq!(
        got.iter()
            .filter(|r| r.kind().name == "deposit_versions")
            .count(),
        200
    );
    // An export dropped half-way lets go of its snapshot; the store serves on.
    let mut partial = c.store.export().await.unwrap();
    partial.next().await.unwrap().unwrap();
    drop(partial);
    c.put(&key('a', "after"), None, 1, b"z").await.unwrap();
    assert_eq!(
        export_all(c.store.as_ref())
            .await
            .iter()
            .filter(|r| r.kind().name == "deposits")
            .count(),
        251
    );
}

/// Every table of the backend is an exported kind with exactly the kind's fields (in any
/// order), or one of [`NOT_EXPORTED`]: a table or column added without its place in the export
/// fails here.
pub async fn every_table_is_an_exported_kind(b: &dyn TestBackend) {
    let c = Ctx::empty(b).await;
    let mut raw = c.raw().await;
    let (tables_sql, columns_sql) = match raw.dialect() {
        "sqlite" => (
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             ORDER BY name",
            "SELECT name FROM pragma_table_info(?1)",
        ),
        _ => (
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY 1",
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name::text = ?1",
        ),
    };
    let tables: Vec<String> = raw
        .query(tables_sql, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r[0].as_text().unwrap().to_owned())
        .collect();
    let mut exported: Vec<&str> = Vec::new();
    for t in &tables {
        if NOT_EXPORTED.contains(&t.as_str()) {
            continue;
        }
        let kind = RecordKind::named(t).unwrap_or_else(|| {
            panic!("table {t} is neither an exported record kind nor named as not exported")
        });
        let mut columns: Vec<String> = raw
            .query(columns_sql, &[t.as_str().into()])
            .await
            .unwrap()
            .into_iter()
            .map(|r| r[0].as_text().unwrap().to_owned())
            .collect();
        columns.sort();
        let mut fields: Vec<&str> = kind.fields.iter().map(|f| f.name).collect();
        fields.sort_unstable();
        assert_eq!(columns, fields, "the columns of {t}");
        exported.push(kind.name);
    }
    let mut all: Vec<&str> = RECORD_KINDS.iter().map(|k| k.name).collect();
    all.sort_unstable();
    exported.sort_unstable();
    assert_eq!(exported, all, "every kind has its table");
}
