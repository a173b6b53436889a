//! What only the PostgreSQL backend has, against real PostgreSQL (keysafe-testpg: the cluster
//! this test binary shares, a database per test, extra clusters where a test needs TLS,
//! passwords or a standby): byte-wise names on an ICU database, multi-host URLs and
//! `target_session_attrs`, standbys and promotion, retried deadlocks, the chain head's lock
//! timeout, concurrent migrations, TLS modes, and passwords kept out of URLs and logs. The
//! conformance suite runs on PostgreSQL from `main.rs`.

use crate::backends::{Postgres, cluster};
use crate::suite::{self, TestBackend, client_record, create_org, fp, insert, kek, key, org, ver};
use keysafe_core::store::{
    AuditStore, DepositStore, IdentityStore, Mutation, Store, StoreError, TokenState,
};
use keysafe_proto::Timestamp;
use keysafe_store::StorageConfig;
use keysafe_store::postgres::{PgConfig, PgConfigError, PgPassword, PostgresStore};
use keysafe_testpg::{ClusterOptions, TestCluster};
use std::sync::Arc;

fn config(url: &str) -> PgConfig {
    PgConfig::parse(url, None).unwrap()
}

/// Organisation `acme`, active clients `a` and `b`, keyring version 1 (as `suite::Ctx::new`).
async fn seed(s: &dyn Store) {
    s.apply(create_org("acme")).await.unwrap();
    for f in ['a', 'b'] {
        s.apply(insert(client_record(
            fp(f),
            "acme",
            Timestamp::from_unix_millis(1),
        )))
        .await
        .unwrap();
    }
    s.apply(kek(1, "test-fixture")).await.unwrap();
}

/// A fresh database on the shared cluster, initialised and seeded.
async fn seeded(cluster: &TestCluster) -> (String, PostgresStore) {
    let db = cluster.create_database("").unwrap();
    let store = PostgresStore::create(&config(&cluster.url(&db)))
        .await
        .unwrap();
    seed(&store).await;
    (db, store)
}

/// On a database whose default collation is ICU's en-US (which orders `aB` before `a_b`, and
/// `A` after `a`), names still compare as bytes and prefixes match literally: the listing
/// cases of the suite, and the organisation listing, on such a database.
#[tokio::test]
async fn listing_compares_bytes_on_an_icu_database() {
    let c = cluster();
    let db = c.create_database(Postgres::ICU_EN_US.options).unwrap();
    // The database really collates differently from bytes: otherwise this test proves nothing.
    let natural = c
        .psql(
            &db,
            "SELECT string_agg(x, ' ' ORDER BY x) FROM unnest(ARRAY['a_b', 'aB', 'ab', 'A', 'a-b']) x",
        )
        .unwrap();
    assert_ne!(natural, "A a-b aB a_b ab", "ICU en-US orders like bytes?");
    let icu: &dyn TestBackend = &Postgres::ICU_EN_US;
    suite::listing_orders_by_bytes_not_by_locale(icu).await;
    suite::listing_respects_prefix_boundaries_order_and_pages(icu).await;
    suite::orgs_are_unique_and_take_auth_changes(icu).await;
    suite::groups_are_created_with_members_and_keys(icu).await;
    suite::shared_listing_finds_grants_to_any_grantee(icu).await;
    suite::stale_rows_page_and_usage_counts(icu).await;
}

/// A libpq multi-host URL whose first host refuses connections: the store connects to the
/// second and works.
#[tokio::test]
async fn a_dead_first_host_is_skipped() {
    let c = cluster();
    let db = c.create_database("").unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!(
        "postgres://postgres@127.0.0.1:{dead},127.0.0.1:{}/{db}?target_session_attrs=read-write&sslmode=disable",
        c.port()
    );
    let store = PostgresStore::create(&config(&url)).await.unwrap();
    seed(&store).await;
    let info = store.session_info().await.unwrap();
    assert_eq!(info.server_port, Some(c.port()));
    assert!(!info.in_recovery);
    assert!(!info.ssl);
    assert!(store.target().contains(&format!("127.0.0.1:{dead},")));
}

/// A host given as a unix socket directory (percent-encoded, as libpq writes it).
#[tokio::test]
async fn a_unix_socket_host_works() {
    let c = cluster();
    let db = c.create_database("").unwrap();
    let dir = c.socket_dir().display().to_string().replace('/', "%2F");
    let url = format!("postgres://postgres@{dir}:{}/{db}", c.port());
    let store = PostgresStore::create(&config(&url)).await.unwrap();
    seed(&store).await;
    let info = store.session_info().await.unwrap();
    assert_eq!(info.server_addr, None, "not over TCP");
    assert!(store.get_client(&fp('b')).await.unwrap().is_some());
}

/// keysafe does not weaken durability: its sessions commit with the server's
/// `synchronous_commit` (on).
#[tokio::test]
async fn sessions_keep_synchronous_commit_on() {
    let (_, store) = seeded(cluster()).await;
    let info = store.session_info().await.unwrap();
    assert_eq!(info.synchronous_commit, "on");
    assert!(
        info.server_version.starts_with("15"),
        "{}",
        info.server_version
    );
}

/// A primary and a streaming standby. `target_session_attrs=read-write` with the standby
/// listed first finds the primary; a store on the standby alone reads and answers `ReadOnly`
/// to writes; a stopped primary makes writes `Unavailable` until it is back, and after a
/// promotion the same store writes to the new primary, without a restart.
#[tokio::test]
async fn target_session_attrs_find_the_primary_and_standbys_refuse_writes() {
    let primary = TestCluster::start(ClusterOptions::default()).unwrap();
    let db = primary.create_database("").unwrap();
    let writer = PostgresStore::create(&config(&primary.url(&db)))
        .await
        .unwrap();
    seed(&writer).await;
    // Reconnect to the primary quickly after it restarts (the default waits 5 s).
    let standby = primary
        .start_standby(ClusterOptions {
            settings: vec![("wal_retrieve_retry_interval".into(), "'100ms'".into())],
            ..ClusterOptions::default()
        })
        .unwrap();
    // Wait until the standby replayed the seeded rows.
    let mut replayed = false;
    for _ in 0..100 {
        if standby
            .psql(&db, "SELECT count(*) FROM clients")
            .is_ok_and(|n| n == "2")
        {
            replayed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(replayed, "the standby did not catch up");

    let both = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write",
        standby.port(),
        primary.port()
    );
    let node = PostgresStore::open(&config(&both)).await.unwrap();
    let info = node.session_info().await.unwrap();
    assert_eq!(info.server_port, Some(primary.port()));
    assert!(!info.in_recovery);
    rotate(&node, 0).await.unwrap();

    // Only the standby: read-write finds no host; `any` connects, reads, refuses writes.
    let only_standby = |attrs: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?target_session_attrs={attrs}",
            standby.port()
        )
    };
    let e = PostgresStore::open(&config(&only_standby("read-write")))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let reader = PostgresStore::open(&config(&only_standby("any")))
        .await
        .unwrap();
    assert!(reader.session_info().await.unwrap().in_recovery);
    assert!(reader.get_client(&fp('a')).await.unwrap().is_some());
    assert_eq!(rotate(&reader, 1).await.unwrap_err(), StoreError::ReadOnly);

    // The primary goes away and comes back: writes fail while it is gone (read-only: the
    // standby still answers), then work again.
    primary.stop_immediate().unwrap();
    let e = rotate(&node, 1).await.unwrap_err();
    assert_eq!(e, StoreError::ReadOnly);
    primary.restart().unwrap();
    rotate(&node, 1).await.unwrap();
    assert_eq!(counter(&node).await, 2);

    // Failover: once the standby has replayed everything, the primary dies and the standby is
    // promoted. The same store finds the new primary by itself (the write that meets the dead
    // connection fails; the pool is emptied and the next one connects afresh).
    let mut caught_up = false;
    for _ in 0..100 {
        let q = format!(
            "SELECT token_counter FROM clients WHERE fingerprint = '{}'",
            fp('a').as_str()
        );
        if standby.psql(&db, &q).is_ok_and(|n| n == "2") {
            caught_up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(caught_up, "the standby did not replay the last write");
    primary.stop_immediate().unwrap();
    standby.promote().unwrap();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match rotate(&node, 2).await {
            Ok(()) => break,
            Err(StoreError::Unavailable(_) | StoreError::ReadOnly) if attempts < 20 => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no write after the promotion: {e:?}"),
        }
    }
    let info = node.session_info().await.unwrap();
    assert_eq!(info.server_port, Some(standby.port()));
    assert!(!info.in_recovery);
    assert_eq!(counter(&node).await, 3);
}

async fn counter(s: &PostgresStore) -> u64 {
    s.get_client(&fp('a')).await.unwrap().unwrap().token.counter
}

async fn rotate(s: &PostgresStore, expected: u64) -> Result<(), StoreError> {
    s.apply(Mutation::RotateToken {
        fingerprint: fp('a'),
        expected_counter: expected,
        token: TokenState {
            counter: expected + 1,
            hash: Some(format!("h{}", expected + 1)),
            recent: vec![],
            rotated_at: Timestamp::from_unix_millis(1),
            confirmed: false,
            derivation: None,
        },
        at: Timestamp::from_unix_millis(1),
    })
    .await
    .map(|_| ())
}

/// A real deadlock between the store's write transaction and another session: PostgreSQL
/// aborts the store's transaction (SQLSTATE 40P01), the writer runs the batch again, and every
/// change of the batch is applied exactly once.
#[tokio::test]
async fn deadlocks_are_retried_and_the_batch_applies_once() {
    let c = cluster();
    let db = c.create_database("").unwrap();
    // The store's sessions detect the deadlock quickly; the other session waits longer, so the
    // store's transaction is the one PostgreSQL aborts.
    c.psql(
        "postgres",
        &format!("ALTER DATABASE {db} SET deadlock_timeout = '100ms'"),
    )
    .unwrap();
    let store = Arc::new(PostgresStore::create(&config(&c.url(&db))).await.unwrap());
    seed(store.as_ref()).await;
    let (other, conn) = tokio_postgres::connect(&c.url(&db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (watcher, conn) = tokio_postgres::connect(&c.url(&db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    other
        .batch_execute(&format!(
            "SET deadlock_timeout = '10s'; BEGIN; \
             UPDATE clients SET last_seen_at = last_seen_at WHERE fingerprint = '{}'",
            fp('a').as_str()
        ))
        .await
        .unwrap();
    // The store's batch: it takes the chain head lock, then waits for the client row.
    let put = {
        let s = store.clone();
        tokio::spawn(async move {
            s.apply_audited(
                Mutation::PutVersion {
                    org: org(),
                    key: key('b', "once"),
                    expected_current: None,
                    expected_acl_serial: None,
                    version: keysafe_core::store::VersionRecord {
                        meta: keysafe_core::store::VersionMeta {
                            version: ver(1),
                            size: 1,
                            created_at: Timestamp::from_unix_millis(3),
                            creator: fp('b'),
                            encoding: keysafe_proto::api::Encoding::Raw,
                        },
                        kek_version: 1,
                        wrapped_dek: vec![1],
                        ciphertext: vec![1],
                    },
                },
                Some(audit_event("/put")),
            )
            .await
        })
    };
    let rotation = {
        let s = store.clone();
        tokio::spawn(async move {
            s.apply_audited(
                Mutation::RotateToken {
                    fingerprint: fp('a'),
                    expected_counter: 0,
                    token: TokenState {
                        counter: 1,
                        hash: Some("h1".into()),
                        recent: vec![],
                        rotated_at: Timestamp::from_unix_millis(3),
                        confirmed: false,
                        derivation: None,
                    },
                    at: Timestamp::from_unix_millis(3),
                },
                Some(audit_event("/rotate")),
            )
            .await
        })
    };
    let mut waiting = false;
    for _ in 0..200 {
        let n: i64 = watcher
            .query_one("SELECT count(*) FROM pg_locks WHERE NOT granted", &[])
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        waiting,
        "the store's transaction never waited for the row lock"
    );
    // Now close the cycle: this session waits for the head lock the store holds.
    other
        .batch_execute("SELECT seq FROM audit_head FOR UPDATE")
        .await
        .unwrap();
    other.batch_execute("COMMIT").await.unwrap();
    put.await.unwrap().unwrap();
    rotation.await.unwrap().unwrap();
    assert!(
        store.transaction_retries() >= 1,
        "the deadlock was not retried"
    );
    assert_eq!(
        store
            .get_client(&fp('a'))
            .await
            .unwrap()
            .unwrap()
            .token
            .counter,
        1
    );
    assert_eq!(
        store.list_versions(&key('b', "once")).await.unwrap().len(),
        1
    );
    let entries = store.audit_entries(1, None, 100).await.unwrap();
    let mut targets: Vec<_> = entries.iter().map(|e| e.event.target.clone()).collect();
    targets.sort();
    assert_eq!(targets, ["/put", "/rotate"], "each entry once");
    let report = keysafe_proto::audit::verify(&entries, &[], &[0u8; 32], None);
    assert_eq!(report.broken, None, "{report:?}");
}

/// Every write takes the audit chain's head lock first, so a session holding it stops all
/// writers; a writer gives up after its lock timeout with `Unavailable` (not a hang, not a
/// 500), and writes again once the lock is free.
#[tokio::test]
async fn a_held_chain_head_stops_writes_until_the_lock_timeout() {
    let c = cluster();
    let db = c.create_database("").unwrap();
    let cfg = config(&c.url(&db)).with_lock_timeout(std::time::Duration::from_millis(200));
    let store = PostgresStore::create(&cfg).await.unwrap();
    seed(&store).await;
    let (other, conn) = tokio_postgres::connect(&c.url(&db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    other
        .batch_execute("BEGIN; SELECT seq FROM audit_head FOR UPDATE")
        .await
        .unwrap();
    // Not audited and touching no row the other session holds: only the head lock is in
    // the way.
    let e = rotate(&store, 0).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert_eq!(
        store
            .get_client(&fp('a'))
            .await
            .unwrap()
            .unwrap()
            .token
            .counter,
        0
    );
    other.batch_execute("COMMIT").await.unwrap();
    rotate(&store, 0).await.unwrap();
}

fn audit_event(target: &str) -> keysafe_proto::audit::AuditEvent {
    keysafe_proto::audit::AuditEvent {
        time: 1,
        node: "n".into(),
        request_id: target.into(),
        remote: "127.0.0.1:1".into(),
        client: None,
        org: None,
        operation: "POST /x".into(),
        target: target.into(),
        version: None,
        outcome: "ok".into(),
    }
}

/// Two nodes initialising one database at once: one creates it, the other is told it exists;
/// the migrations are recorded once. A database keysafe never initialised is not opened (and
/// not touched); changed or unknown migrations are refused.
#[tokio::test]
async fn migrations_race_safely_and_refuse_changed_history() {
    let c = cluster();
    let db = c.create_database("").unwrap();
    let cfg = config(&c.url(&db));
    assert_eq!(
        PostgresStore::open(&cfg).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        c.psql(&db, "SELECT to_regclass('keysafe_migrations') IS NULL")
            .unwrap(),
        "t",
        "a refused open leaves nothing behind"
    );
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(
            async move { PostgresStore::create(&cfg).await },
        ));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => assert_eq!(e, StoreError::AlreadyExists),
        }
    }
    assert_eq!(created, 1);
    // Each migration recorded once, whatever the number of creators.
    assert_eq!(
        c.psql(
            &db,
            "SELECT count(*) = count(DISTINCT version) AND count(*) > 0 FROM keysafe_migrations"
        )
        .unwrap(),
        "t"
    );
    PostgresStore::open(&cfg).await.unwrap();
    let original = c
        .psql(
            &db,
            "SELECT checksum FROM keysafe_migrations WHERE version = 1",
        )
        .unwrap();
    c.psql(
        &db,
        "UPDATE keysafe_migrations SET checksum = 'x' WHERE version = 1",
    )
    .unwrap();
    assert!(matches!(
        PostgresStore::open(&cfg).await.unwrap_err(),
        StoreError::Corrupt(_)
    ));
    c.psql(
        &db,
        &format!(
            "UPDATE keysafe_migrations SET checksum = '{original}' WHERE version = 1; \
             INSERT INTO keysafe_migrations (version, name, checksum) VALUES (99, 'future', 'x')"
        ),
    )
    .unwrap();
    // A newer keysafe's migration: refused, naming both versions.
    let e = PostgresStore::open(&cfg).await.unwrap_err();
    assert!(
        matches!(e, StoreError::SchemaTooNew { database: 99, known } if known < 99),
        "{e:?}"
    );
    assert!(e.to_string().contains("migration 99"), "{e}");
}

// ---- TLS and passwords ----

struct Pki {
    ca_pem: String,
    other_ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA, a server certificate it signed for 127.0.0.1, and an unrelated CA.
fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_owned());
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    };
    let issuer = ca("keysafe test CA");
    let other = ca("someone else's CA");
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    Pki {
        ca_pem: issuer.pem(),
        other_ca_pem: other.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// One cluster with TLS on, plain TCP refused, and a role that must give a password.
fn tls_cluster(pki: &Pki) -> TestCluster {
    TestCluster::start(ClusterOptions {
        settings: vec![
            ("ssl".into(), "on".into()),
            ("ssl_cert_file".into(), "'server.crt'".into()),
            ("ssl_key_file".into(), "'server.key'".into()),
            ("password_encryption".into(), "'scram-sha-256'".into()),
        ],
        hba: vec![
            "hostnossl all all 127.0.0.1/32 reject".into(),
            "hostssl all keysafe 127.0.0.1/32 scram-sha-256".into(),
        ],
        files: vec![
            ("server.crt".into(), pki.cert_pem.clone().into_bytes()),
            ("server.key".into(), pki.key_pem.clone().into_bytes()),
        ],
        durable: false,
    })
    .unwrap()
}

#[tokio::test]
async fn tls_modes_verify_what_they_promise() {
    let pki = pki();
    let c = tls_cluster(&pki);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&other_ca, &pki.other_ca_pem).unwrap();
    let db = c.create_database("").unwrap();
    let url =
        |host: &str, params: &str| format!("postgres://postgres@{host}:{}/{db}?{params}", c.port());
    // verify-full with the right CA: encrypted and authenticated.
    let full = format!("sslmode=verify-full&sslrootcert={}", ca.display());
    let store = PostgresStore::create(&config(&url("127.0.0.1", &full)))
        .await
        .unwrap();
    let info = store.session_info().await.unwrap();
    assert!(info.ssl, "{info:?}");
    seed(&store).await;
    // Another CA: refused.
    let wrong = format!("sslmode=verify-full&sslrootcert={}", other_ca.display());
    let e = PostgresStore::open(&config(&url("127.0.0.1", &wrong)))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    // The certificate names 127.0.0.1, not localhost: verify-full refuses, verify-ca (chain
    // only) accepts.
    let e = PostgresStore::open(&config(&url("localhost", &full)))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let chain_only = format!("sslmode=verify-ca&sslrootcert={}", ca.display());
    PostgresStore::open(&config(&url("localhost", &chain_only)))
        .await
        .unwrap();
    // require: encrypted, certificate unchecked (libpq's meaning); prefer takes TLS when
    // offered.
    for mode in ["require", "prefer"] {
        let s = PostgresStore::open(&config(&url("127.0.0.1", &format!("sslmode={mode}"))))
            .await
            .unwrap();
        assert!(s.session_info().await.unwrap().ssl, "{mode}");
    }
    // require with a root certificate checks the chain, as libpq does.
    let e = PostgresStore::open(&config(&url(
        "127.0.0.1",
        &format!("sslmode=require&sslrootcert={}", other_ca.display()),
    )))
    .await
    .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    // This server refuses plain TCP, so the modes above really used TLS.
    let e = PostgresStore::open(&config(&url("127.0.0.1", "sslmode=disable")))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
}

#[tokio::test]
async fn passwords_come_from_outside_the_url_and_are_never_printed() {
    let pki = pki();
    let c = tls_cluster(&pki);
    let db = c.create_database("").unwrap();
    c.psql(
        "postgres",
        &format!(
            "CREATE ROLE keysafe LOGIN PASSWORD 'correct-horse-battery'; \
             ALTER DATABASE {db} OWNER TO keysafe"
        ),
    )
    .unwrap();
    let url = format!(
        "postgres://keysafe@127.0.0.1:{}/{db}?sslmode=require&target_session_attrs=read-write",
        c.port()
    );
    assert_eq!(
        PgConfig::parse(
            &url.replace("keysafe@", "keysafe:correct-horse-battery@"),
            None
        )
        .unwrap_err(),
        PgConfigError::PasswordInUrl
    );
    // Without the password, or with a wrong one: refused.
    let e = PostgresStore::create(&config(&url)).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let wrong = PgConfig::parse(&url, Some(PgPassword::new("wrong".into()))).unwrap();
    let e = PostgresStore::create(&wrong).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(!e.to_string().contains("wrong"));
    // From a private file, named in the storage configuration as a user writes it: accepted,
    // through the factory.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(&file, "correct-horse-battery\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let settings: keysafe_store::StorageSettings =
        toml::from_str(&format!("url = {url:?}\npassword_file = \"pgpass\"")).unwrap();
    let storage = StorageConfig::from_settings(&settings, dir.path()).unwrap();
    let store = keysafe_store::create(&storage).await.unwrap();
    seed(store.as_ref()).await;
    assert!(store.get_client(&fp('a')).await.unwrap().is_some());
    // Raw access for tamper tests connects the same way.
    let mut raw = keysafe_store::testing::RawDb::connect(&storage)
        .await
        .unwrap();
    assert_eq!(
        raw.scalar("SELECT count(*) FROM clients", &[])
            .await
            .unwrap(),
        2.into()
    );
    let cfg = PgConfig::parse(&url, Some(PgPassword::new("correct-horse-battery".into()))).unwrap();
    for shown in [
        format!("{cfg:?}"),
        format!("{cfg}"),
        format!("{storage:?}"),
        format!("{storage}"),
    ] {
        assert!(!shown.contains("correct-horse"), "{shown}");
    }
    assert!(format!("{cfg:?}").contains("[redacted]"));
    // A password file others can read is refused, and so is an empty one; neither is quoted.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let e = keysafe_store::open(&storage).await.err().unwrap();
    assert!(
        matches!(&e, StoreError::Unavailable(m) if m.contains("chmod 600") && !m.contains("correct")),
        "{e:?}"
    );
}

/// The database drops every idle connection of the store (a restart, an idle-session killer):
/// the next read and the next write connect afresh instead of failing on a dead connection.
#[tokio::test]
async fn connections_the_server_dropped_are_replaced_not_reported() {
    let c = cluster();
    let (db, store) = seeded(c).await;
    // Use several pooled connections at once, so there are idle ones to kill.
    let (fa, fb) = (fp('a'), fp('b'));
    let (a, b, c2, d) = tokio::join!(
        store.get_client(&fa),
        store.get_client(&fa),
        store.get_client(&fb),
        store.get_client(&fb),
    );
    for r in [a, b, c2, d] {
        assert!(r.unwrap().is_some());
    }
    let killed = c
        .psql(
            &db,
            // Only this test's database: the cluster is shared by the tests running beside it.
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'keysafe' AND datname = current_database() \
             AND pid <> pg_backend_pid()",
        )
        .unwrap();
    assert_ne!(killed, "0", "no connection of the store was open");
    // The connections notice the end of their sockets.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(store.get_client(&fp('b')).await.unwrap().is_some());
    rotate(&store, 0).await.unwrap();
    assert_eq!(counter(&store).await, 1);
}
