//! Upgrades from the last release: a database made exactly as keysafe 0.1.0 made it (its
//! migrations, applied by the migrator it used, and nothing newer), holding representative rows
//! of every table written with raw SQL, is opened by this build: the pending migrations are
//! applied, every row reads back as the same record, the audit chain continues where it ended
//! and verifies, and new writes work. Then the reverse: a database a newer keysafe migrated is
//! refused at open, and a running node refuses to write once another node migrated past it.
//!
//! The release schema is pinned here as the list of migration files the release carried. The
//! files themselves never change once released (both backends check a checksum of each).

use crate::backends::cluster;
use crate::suite::{TestBackend, fp, org, ts, ver};
use keysafe_core::store::{
    ClientRecord, DepositKey, GrantRecord, GroupMemberRecord, KekRecord, Mutation, OrgRecord,
    RegistrationTokenRecord, StoreError, TokenDerivation, TokenState, VersionMeta, VersionRecord,
    WrappedKeyRecord,
};
use keysafe_proto::api::{Access, AuthMode, ClientRole, ClientState, Encoding};
use keysafe_proto::audit::{AuditCheckpoint, AuditEntry, AuditEvent, checkpoint_message, key_id};
use keysafe_proto::{DepositName, GroupName, OrgName, Principal};
use keysafe_store::StorageConfig;
use keysafe_store::testing::{RawDb, RawValue};

/// keysafe 0.1.0's SQLite migrations (applied with sqlx's migrator into `_sqlx_migrations`).
const RELEASE_SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "sharing",
        include_str!("../../migrations/sqlite/0002_sharing.sql"),
    ),
    (
        3,
        "seals_rotation",
        include_str!("../../migrations/sqlite/0003_seals_rotation.sql"),
    ),
    (
        5,
        "audit",
        include_str!("../../migrations/sqlite/0005_audit.sql"),
    ),
    (
        6,
        "token_reissue",
        include_str!("../../migrations/sqlite/0006_token_reissue.sql"),
    ),
];

/// keysafe 0.1.0's PostgreSQL migrations (applied by its own runner into
/// `keysafe_migrations`, with a SHA-256 of each file, then the genesis head).
const RELEASE_POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "token_reissue",
        include_str!("../../migrations/postgres/0002_token_reissue.sql"),
    ),
];

#[derive(Debug)]
struct ReleaseSource;

impl<'s> sqlx::migrate::MigrationSource<'s> for ReleaseSource {
    fn resolve(
        self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<Vec<sqlx::migrate::Migration>, sqlx::error::BoxDynError>,
                > + Send
                + 's,
        >,
    > {
        Box::pin(async {
            Ok(RELEASE_SQLITE
                .iter()
                .map(|(v, d, sql)| {
                    sqlx::migrate::Migration::new(
                        *v,
                        (*d).into(),
                        sqlx::migrate::MigrationType::Simple,
                        sqlx::SqlStr::from_static(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// A database with the release's schema and nothing else, and what keeps it alive.
async fn release_database(storage: &str) -> (StorageConfig, Box<dyn std::any::Any + Send>) {
    match storage {
        "sqlite" => {
            let (cfg, guard) = crate::backends::Sqlite.fresh_config().await;
            let dir = guard.downcast_ref::<tempfile::TempDir>().unwrap();
            let path = dir.path().join("store.db");
            use sqlx::ConnectOptions;
            keysafe_store::testing::configure_sqlite();
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .foreign_keys(true)
                .connect()
                .await
                .unwrap();
            sqlx::migrate::Migrator::new(ReleaseSource)
                .await
                .unwrap()
                .run(&mut conn)
                .await
                .unwrap();
            (cfg, guard)
        }
        _ => {
            let c = cluster();
            let db = tokio::task::spawn_blocking(move || c.create_database(""))
                .await
                .unwrap()
                .unwrap();
            let settings: keysafe_store::StorageSettings =
                toml::from_str(&format!("url = {:?}", c.url(&db))).unwrap();
            let cfg = StorageConfig::from_settings(&settings, std::path::Path::new("/")).unwrap();
            let mut raw = RawDb::connect(&cfg).await.unwrap();
            raw.execute_script(
                "CREATE TABLE keysafe_migrations (version BIGINT PRIMARY KEY, \
                 name TEXT NOT NULL, checksum TEXT NOT NULL, \
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await
            .unwrap();
            for (v, name, sql) in RELEASE_POSTGRES {
                raw.execute_script(sql).await.unwrap();
                let sum = hex::encode(aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    sql.as_bytes(),
                ));
                raw.execute(
                    "INSERT INTO keysafe_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
                    &[RawValue::Int(*v), (*name).into(), sum.into()],
                )
                .await
                .unwrap();
            }
            raw.execute(
                "INSERT INTO audit_head (id, seq, hash) VALUES (TRUE, 0, ?1)",
                &[keysafe_proto::audit::GENESIS_HASH.into()],
            )
            .await
            .unwrap();
            (cfg, Box::new(()))
        }
    }
}

// ---- the representative rows, as records and as the release's SQL wrote them ----

fn acme() -> OrgRecord {
    OrgRecord {
        name: org(),
        contacts: vec!["ops@example.com".into()],
        auth_mode: AuthMode::Secret,
        auth_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        created_at: ts(1_000),
        updated_at: ts(1_001),
    }
}

fn admin() -> ClientRecord {
    ClientRecord {
        fingerprint: fp('a'),
        org: org(),
        name: Some(keysafe_proto::ClientName::parse("admin-host").unwrap()),
        state: ClientState::Active,
        role: ClientRole::Admin,
        cert_der: vec![0x30, 0x82, 1, 2],
        recipient: Some("age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq".into()),
        token: TokenState {
            counter: 42,
            hash: Some("ab".repeat(32)),
            recent: vec![keysafe_core::store::ReplacedToken {
                hash: "cd".repeat(32),
                replaced_at: ts(1_500),
            }],
            rotated_at: ts(1_600),
            confirmed: true,
            derivation: Some(TokenDerivation {
                kek_version: 1,
                salt: vec![7; 16],
            }),
        },
        last_seen_at: Some(ts(1_700)),
        state_reason: None,
        created_at: ts(1_100),
        updated_at: ts(1_200),
        mac: None,
    }
}

fn suspect() -> ClientRecord {
    ClientRecord {
        fingerprint: fp('b'),
        org: org(),
        name: None,
        state: ClientState::SuspectedClone,
        role: ClientRole::Client,
        cert_der: vec![9; 40],
        recipient: None,
        token: TokenState {
            counter: 0,
            hash: None,
            recent: vec![],
            rotated_at: ts(0),
            confirmed: false,
            derivation: None,
        },
        last_seen_at: None,
        state_reason: Some("token diverged".into()),
        created_at: ts(1_300),
        updated_at: ts(1_300),
        mac: None,
    }
}

fn deposit_key() -> DepositKey {
    DepositKey {
        owner: Principal::Client(fp('a')),
        name: DepositName::parse("app/db-key").unwrap(),
    }
}

fn group_name() -> GroupName {
    GroupName::parse("ops").unwrap()
}

fn version_record(n: u64, encoding: Encoding) -> VersionRecord {
    VersionRecord {
        meta: VersionMeta {
            version: ver(n),
            size: 3 + n,
            created_at: ts(2_000 + n as i64),
            creator: fp('a'),
            encoding,
        },
        kek_version: 1,
        wrapped_dek: vec![n as u8; 60],
        ciphertext: vec![0xc0 + n as u8; 3 + n as usize + 28],
    }
}

fn event(n: i64) -> AuditEvent {
    AuditEvent {
        time: 3_000 + n,
        node: "node-1".into(),
        request_id: format!("req-{n}"),
        remote: "127.0.0.1:5000".into(),
        client: Some(fp('a').to_string()),
        org: Some("acme".into()),
        operation: "PUT /v1/deposits/{*path}".into(),
        target: "/v1/deposits/app/db-key".into(),
        version: Some(n as u64),
        outcome: "ok".into(),
    }
}

/// Writes every row with the release's columns, as plain SQL both dialects take.
async fn insert_release_rows(raw: &mut RawDb, signer: &aws_lc_rs::signature::Ed25519KeyPair) {
    use aws_lc_rs::signature::KeyPair;
    let t = |v: &str| RawValue::from(v);
    let i = RawValue::Int;
    let b = |v: &[u8]| RawValue::from(v);
    let n = || RawValue::Null;
    let o = acme();
    raw.execute(
        "INSERT INTO orgs (name, contacts, auth_mode, auth_hash, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        &[
            t("acme"),
            t(r#"["ops@example.com"]"#),
            t("secret"),
            t(o.auth_hash.as_deref().unwrap()),
            i(1_000),
            i(1_001),
        ],
    )
    .await
    .unwrap();
    let a = admin();
    let p = suspect();
    let client_sql = "INSERT INTO clients (fingerprint, org, name, state, role, cert_der, \
        recipient, token_counter, token_hash, token_recent, token_rotated_at, last_seen_at, \
        state_reason, created_at, updated_at, token_confirmed, token_kek_version, token_salt) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";
    raw.execute(
        client_sql,
        &[
            t(a.fingerprint.as_str()),
            t("acme"),
            t("admin-host"),
            t("active"),
            t("admin"),
            b(&a.cert_der),
            t(a.recipient.as_deref().unwrap()),
            i(42),
            t(&"ab".repeat(32)),
            // What 0.1.0 wrote: the replaced token's hash and when, in RFC 3339.
            t(&format!(
                r#"[{{"h":"{}","at":"{}"}}]"#,
                "cd".repeat(32),
                ts(1_500).to_rfc3339()
            )),
            i(1_600),
            i(1_700),
            n(),
            i(1_100),
            i(1_200),
            i(1),
            i(1),
            b(&[7; 16]),
        ],
    )
    .await
    .unwrap();
    raw.execute(
        client_sql,
        &[
            t(p.fingerprint.as_str()),
            t("acme"),
            n(),
            t("suspected-clone"),
            t("client"),
            b(&p.cert_der),
            n(),
            i(0),
            n(),
            t("[]"),
            i(0),
            n(),
            t("token diverged"),
            i(1_300),
            i(1_300),
            i(0),
            n(),
            n(),
        ],
    )
    .await
    .unwrap();
    for (hash, used) in [("unused-token", false), ("used-token", true)] {
        raw.execute(
            "INSERT INTO registration_tokens (hash, org, created_by, created_at, expires_at, \
             used_at, used_by) VALUES (?1, 'acme', ?2, 1050, 999999, ?3, ?4)",
            &[
                t(hash),
                t(fp('a').as_str()),
                if used { i(1_300) } else { n() },
                if used { t(fp('b').as_str()) } else { n() },
            ],
        )
        .await
        .unwrap();
    }
    raw.execute(
        "INSERT INTO keyring (seal, version, wrapped, created_at) VALUES ('file', 1, ?1, 900)",
        &[b(&[0x5e; 40])],
    )
    .await
    .unwrap();
    // A client's deposit with two versions (raw, then age) shared with b; a group's deposit.
    let k = deposit_key();
    let group_owner = Principal::Group {
        org: org(),
        name: group_name(),
    };
    for (owner, name, current, size) in [
        (k.owner.stored(), k.name.as_str(), 2, 5),
        (group_owner.stored(), "shared-key", 1, 4),
    ] {
        raw.execute(
            "INSERT INTO deposits (owner, name, org, current_version, current_size, deleted, \
             acl_serial, created_at, updated_at) VALUES (?1, ?2, 'acme', ?3, ?4, ?5, 1, 2001, ?6)",
            &[
                t(&owner),
                t(name),
                i(current),
                i(size),
                i(0),
                i(2_000 + current),
            ],
        )
        .await
        .unwrap();
    }
    let versions = [
        (
            k.owner.stored(),
            k.name.to_string(),
            version_record(1, Encoding::Raw),
        ),
        (
            k.owner.stored(),
            k.name.to_string(),
            version_record(2, Encoding::Age),
        ),
        (
            group_owner.stored(),
            "shared-key".to_owned(),
            version_record(1, Encoding::Age),
        ),
    ];
    for (owner, name, v) in &versions {
        raw.execute(
            "INSERT INTO deposit_versions (owner, name, version, size, creator, created_at, \
             encoding, kek_version, wrapped_dek, ciphertext) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            &[
                t(owner),
                t(name),
                i(v.meta.version.get() as i64),
                i(v.meta.size as i64),
                t(v.meta.creator.as_str()),
                i(v.meta.created_at.unix_millis()),
                t(v.meta.encoding.as_str()),
                i(1),
                b(&v.wrapped_dek),
                b(&v.ciphertext),
            ],
        )
        .await
        .unwrap();
    }
    raw.execute(
        "INSERT INTO deposit_grants (owner, name, grantee, access, granted_by, granted_at) \
         VALUES (?1, ?2, ?3, 'read', ?4, 2100)",
        &[
            t(&k.owner.stored()),
            t(k.name.as_str()),
            t(fp('b').as_str()),
            t(fp('a').as_str()),
        ],
    )
    .await
    .unwrap();
    // Group ops at epoch 2: a holds both epochs, b only the first.
    raw.execute(
        "INSERT INTO groups (org, name, epoch, created_at, updated_at) \
         VALUES ('acme', 'ops', 2, 2200, 2300)",
        &[],
    )
    .await
    .unwrap();
    for e in [1, 2] {
        raw.execute(
            "INSERT INTO group_epochs (org, name, epoch, recipient, created_at) \
             VALUES ('acme', 'ops', ?1, ?2, ?3)",
            &[i(e), t(&format!("age1epoch{e}")), i(2_200 + e)],
        )
        .await
        .unwrap();
    }
    for (m, added) in [('a', 2_200), ('b', 2_250)] {
        raw.execute(
            "INSERT INTO group_members (org, name, member, added_at) VALUES ('acme', 'ops', ?1, ?2)",
            &[t(fp(m).as_str()), i(added)],
        )
        .await
        .unwrap();
    }
    for (m, e) in [('a', 1), ('a', 2), ('b', 1)] {
        raw.execute(
            "INSERT INTO group_keys (org, name, epoch, member, wrapped) \
             VALUES ('acme', 'ops', ?1, ?2, ?3)",
            &[i(e), t(fp(m).as_str()), b(&[e as u8, m as u8])],
        )
        .await
        .unwrap();
    }
    // Two chained audit entries and a signed checkpoint of the second.
    let mut prev = (0u64, keysafe_proto::audit::GENESIS_HASH.to_owned());
    for n in 1..=2 {
        let e = AuditEntry::chain(prev.0, &prev.1, event(n));
        let ev = &e.event;
        raw.execute(
            "INSERT INTO audit_log (seq, time, node, request_id, remote, client, org, \
             operation, target, version, outcome, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            &[
                i(e.seq as i64),
                i(ev.time),
                t(&ev.node),
                t(&ev.request_id),
                t(&ev.remote),
                t(ev.client.as_deref().unwrap()),
                t(ev.org.as_deref().unwrap()),
                t(&ev.operation),
                t(&ev.target),
                i(ev.version.unwrap() as i64),
                t(&ev.outcome),
                t(&e.prev_hash),
                t(&e.hash),
            ],
        )
        .await
        .unwrap();
        prev = (e.seq, e.hash);
    }
    if raw.dialect() == "postgres" {
        raw.execute(
            "UPDATE audit_head SET seq = ?1, hash = ?2",
            &[i(prev.0 as i64), t(&prev.1)],
        )
        .await
        .unwrap();
    }
    let cp = checkpoint(signer, prev.0, &prev.1);
    raw.execute(
        "INSERT INTO audit_checkpoints (seq, hash, signed_at, key_id, signature) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        &[
            i(cp.seq as i64),
            t(&cp.hash),
            i(cp.signed_at),
            t(&cp.key_id),
            t(&cp.signature),
        ],
    )
    .await
    .unwrap();
    raw.execute(
        "INSERT INTO audit_signing_keys (key_id, public_key, kek_version, wrapped, created_at) \
         VALUES (?1, ?2, 1, ?3, 950)",
        &[
            t(&key_id(signer.public_key().as_ref())),
            b(signer.public_key().as_ref()),
            b(&[0xa5; 72]),
        ],
    )
    .await
    .unwrap();
}

fn checkpoint(
    signer: &aws_lc_rs::signature::Ed25519KeyPair,
    seq: u64,
    hash: &str,
) -> AuditCheckpoint {
    use aws_lc_rs::signature::KeyPair;
    let kid = key_id(signer.public_key().as_ref());
    let signed_at = 3_100 + seq as i64;
    let sig = signer.sign(&checkpoint_message(seq, hash, signed_at, &kid));
    AuditCheckpoint {
        seq,
        hash: hash.to_owned(),
        signed_at,
        key_id: kid,
        signature: hex::encode(sig.as_ref()),
    }
}

async fn a_release_database_is_upgraded_and_reads_back(storage: &str) {
    use aws_lc_rs::signature::KeyPair;
    let (cfg, _guard) = release_database(storage).await;
    let signer = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
    let mut raw = RawDb::connect(&cfg).await.unwrap();
    insert_release_rows(&mut raw, &signer).await;

    // This build opens it: pending migrations applied, nothing lost.
    let s = keysafe_store::open(&cfg).await.unwrap();
    assert_eq!(s.get_org(&org()).await.unwrap().unwrap(), acme());
    assert_eq!(s.get_client(&fp('a')).await.unwrap().unwrap(), admin());
    assert_eq!(s.get_client(&fp('b')).await.unwrap().unwrap(), suspect());
    assert_eq!(
        s.list_unused_tokens(&org()).await.unwrap(),
        [RegistrationTokenRecord {
            hash: "unused-token".into(),
            org: org(),
            created_by: fp('a'),
            created_at: ts(1_050),
            expires_at: ts(999_999),
        }]
    );
    assert_eq!(
        s.load_keks().await.unwrap(),
        [KekRecord {
            version: 1,
            seal: "file".into(),
            wrapped: vec![0x5e; 40],
            created_at: ts(900),
        }]
    );
    let k = deposit_key();
    let (d, v2, _) =
        std::sync::Arc::unwrap_or_clone(s.get_version(&k, None).await.unwrap().unwrap());
    assert_eq!(
        (d.current_version, d.current_size, d.acl_serial),
        (ver(2), 5, 1)
    );
    assert_eq!(v2, version_record(2, Encoding::Age));
    let (_, v1, _) =
        std::sync::Arc::unwrap_or_clone(s.get_version(&k, Some(ver(1))).await.unwrap().unwrap());
    assert_eq!(v1, version_record(1, Encoding::Raw));
    assert_eq!(
        s.get_grants(&k).await.unwrap(),
        [GrantRecord {
            grantee: Principal::Client(fp('b')),
            access: Access::Read,
            granted_by: fp('a'),
            granted_at: ts(2_100),
            mac: None,
        }]
    );
    let g = s.get_group(&org(), &group_name()).await.unwrap().unwrap();
    assert_eq!(g.epoch, 2);
    assert_eq!(
        g.epochs,
        [(1, "age1epoch1".to_owned()), (2, "age1epoch2".to_owned())]
    );
    assert_eq!(
        g.members,
        [
            GroupMemberRecord {
                fingerprint: fp('a'),
                epochs: vec![1, 2],
                mac: None
            },
            GroupMemberRecord {
                fingerprint: fp('b'),
                epochs: vec![1],
                mac: None
            }
        ]
    );
    assert_eq!(
        s.group_keys(&org(), &group_name(), &fp('b')).await.unwrap(),
        [WrappedKeyRecord {
            epoch: 1,
            member: fp('b'),
            wrapped: vec![1, b'b'],
        }]
    );
    let key = s.audit_signing_key().await.unwrap().unwrap();
    assert_eq!(key.public_key, signer.public_key().as_ref());
    assert_eq!(s.audit_head().seq, 2);

    // New writes with their audit entries continue the chain, which verifies whole.
    s.apply_audited(
        Mutation::DeleteClient {
            fingerprint: fp('b'),
            at: ts(4_000),
        },
        Some(event(3)),
    )
    .await
    .unwrap();
    assert!(s.get_grants(&k).await.unwrap().is_empty());
    s.apply_audited(
        Mutation::RevokeRegistrationTokens {
            org: org(),
            hashes: vec!["unused-token".into()],
        },
        Some(event(4)),
    )
    .await
    .unwrap();
    let entries = s.audit_entries(1, None, 100).await.unwrap();
    assert_eq!(entries.len(), 4);
    let head = s.audit_head();
    let mut checkpoints = s.audit_checkpoints(1).await.unwrap();
    checkpoints.push(checkpoint(&signer, head.seq, &head.hash));
    let report =
        keysafe_proto::audit::verify(&entries, &checkpoints, signer.public_key().as_ref(), None);
    assert!(report.broken.is_none(), "{report:?}");
    assert_eq!(report.signed_up_to, Some(4));
    s.close().await;

    // Opened again: nothing more to apply, the same rows.
    let again = keysafe_store::open(&cfg).await.unwrap();
    assert_eq!(again.get_client(&fp('a')).await.unwrap().unwrap(), admin());
    let versions: Vec<i64> = raw
        .query(
            match storage {
                "sqlite" => "SELECT version FROM _sqlx_migrations ORDER BY version",
                _ => "SELECT version FROM keysafe_migrations ORDER BY version",
            },
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r[0].as_int().unwrap())
        .collect();
    let release: Vec<i64> = match storage {
        "sqlite" => RELEASE_SQLITE.iter().map(|m| m.0).collect(),
        _ => RELEASE_POSTGRES.iter().map(|m| m.0).collect(),
    };
    assert!(versions.starts_with(&release), "{versions:?}");
    assert!(versions.len() > release.len(), "this build adds migrations");
    if storage == "sqlite" {
        // The release indexed the trail by time; no query used it, and appends no longer pay
        // for it. Entries are read by seq, the time bound only filtering (the storage suite
        // checks a read since a time).
        let release_indexes = raw
            .query(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_log'",
                &[],
            )
            .await
            .unwrap();
        assert!(release_indexes.is_empty(), "{release_indexes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_sqlite_database_is_upgraded_and_reads_back() {
    a_release_database_is_upgraded_and_reads_back("sqlite").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_postgres_database_is_upgraded_and_reads_back() {
    a_release_database_is_upgraded_and_reads_back("postgres").await
}

/// Records a migration past this build's newest, as a newer keysafe would.
async fn migrate_past(raw: &mut RawDb, storage: &str) {
    match storage {
        "sqlite" => raw
            .execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                 execution_time) VALUES (9999, 'future', 1, ?1, 0)",
                &[RawValue::Blob(vec![0; 48])],
            )
            .await
            .unwrap(),
        _ => raw
            .execute(
                "INSERT INTO keysafe_migrations (version, name, checksum) \
                 VALUES (9999, 'future', 'x')",
                &[],
            )
            .await
            .unwrap(),
    };
}

async fn a_newer_schema_is_refused_at_open_and_by_running_nodes(
    b: &dyn TestBackend,
    storage: &str,
) {
    let (cfg, _guard) = b.fresh_config().await;
    let running = keysafe_store::create(&cfg).await.unwrap();
    running
        .apply(crate::suite::create_org("acme"))
        .await
        .unwrap();
    running.ping().await.unwrap();
    let mut raw = RawDb::connect(&cfg).await.unwrap();
    migrate_past(&mut raw, storage).await;

    // A node starting now refuses to open it, naming both versions.
    let e = keysafe_store::open(&cfg).await.map(|_| ()).unwrap_err();
    assert!(
        matches!(e, StoreError::SchemaTooNew { database: 9999, known } if known < 9999),
        "{e:?}"
    );
    assert!(e.to_string().contains("migration 9999"), "{e}");
    // The node that was running reports itself unready and writes nothing more.
    assert!(matches!(
        running.ping().await,
        Err(StoreError::SchemaTooNew { database: 9999, .. })
    ));
    assert!(matches!(
        running.apply(crate::suite::create_org("beta")).await,
        Err(StoreError::SchemaTooNew { .. })
    ));
    let audit = running.append_audit(vec![event(1)]).await.unwrap_err();
    assert!(matches!(audit.error, StoreError::SchemaTooNew { .. }));
    assert_eq!(audit.events.len(), 1, "the entries come back for a retry");
    assert!(
        running
            .get_org(&OrgName::parse("beta").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // Back to a schema it knows (the newer node's migration rolled back): it writes again.
    raw.execute(
        match storage {
            "sqlite" => "DELETE FROM _sqlx_migrations WHERE version = 9999",
            _ => "DELETE FROM keysafe_migrations WHERE version = 9999",
        },
        &[],
    )
    .await
    .unwrap();
    running.ping().await.unwrap();
    running
        .apply(crate::suite::create_org("beta"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_sqlite_schema_is_refused_at_open_and_by_running_nodes() {
    a_newer_schema_is_refused_at_open_and_by_running_nodes(&crate::backends::Sqlite, "sqlite").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_postgres_schema_is_refused_at_open_and_by_running_nodes() {
    a_newer_schema_is_refused_at_open_and_by_running_nodes(
        &crate::backends::Postgres::DEFAULT,
        "postgres",
    )
    .await
}

/// Several processes opening one release database at once (several `keysafe serve` on one data
/// directory, started together after an upgrade): every one opens it, and each pending
/// migration is applied and recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_a_release_sqlite_database_migrate_once() {
    let (cfg, _guard) = release_database("sqlite").await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            keysafe_store::open(&cfg).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut raw = RawDb::connect(&cfg).await.unwrap();
    let rows = raw
        .query(
            "SELECT count(*), count(DISTINCT version), max(version) FROM _sqlx_migrations",
            &[],
        )
        .await
        .unwrap();
    let (all, distinct) = (rows[0][0].as_int().unwrap(), rows[0][1].as_int().unwrap());
    assert_eq!(all, distinct, "a migration was recorded twice");
    assert!(rows[0][2].as_int().unwrap() > RELEASE_SQLITE.last().unwrap().0);
}
