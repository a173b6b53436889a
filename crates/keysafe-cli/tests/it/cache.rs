//! The local deposit cache, through the binary against a real server that is then stopped.

use crate::{fails_with, keysafe, ok, run, run_with_stdin};
use keysafe_client::client::ClientOptions;
use keysafe_client::{KeysafeClient, Source};
use keysafe_proto::DepositName;
use keysafe_testkit::TestServer;
use std::path::{Path, PathBuf};

/// Long enough never to occur by chance in ciphertext.
const ONE: &[u8] = b"first-cached-secret-payload-000001";
fn client(home: &Path, tmp: &Path, args: &[&str]) -> std::process::Command {
    let mut c = keysafe(tmp);
    c.args(args).env("KEYSAFE_HOME", home);
    c
}

/// Replaces the `[cache]` section of client.toml.
fn set_cache(home: &Path, section: &str) {
    let path = home.join("client.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let base = text
        .split("\n[cache]")
        .next()
        .unwrap()
        .trim_end()
        .to_owned();
    std::fs::write(&path, format!("{base}\n\n[cache]\n{section}\n")).unwrap();
}

fn entries(home: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(home.join("cache")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".entry"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Moves every entry's fetch time `secs` into the past.
fn backdate(home: &Path, secs: u64) {
    for p in entries(home) {
        let bytes = std::fs::read(&p).unwrap();
        let nl = bytes.iter().position(|b| *b == b'\n').unwrap();
        let mut meta: serde_json::Value = serde_json::from_slice(&bytes[..nl]).unwrap();
        let t = meta["fetched_at"].as_u64().unwrap();
        meta["fetched_at"] = (t - secs).into();
        let mut out = serde_json::to_vec(&meta).unwrap();
        out.extend_from_slice(&bytes[nl..]);
        std::fs::write(&p, out).unwrap();
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_answers_within_ttl_serves_stale_while_down_and_refuses_past_max_stale() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let home = tc.home_dir().to_owned();
    let name = DepositName::parse("db/key").unwrap();

    ok(&run_with_stdin(client(&home, t, &["put", "db/key"]), ONE.to_vec()).await);
    assert!(entries(&home).is_empty());
    assert_eq!(run(client(&home, t, &["get", "db/key"])).await.stdout, ONE);

    // The entry: private, named by a hash, the payload exactly as served after one header line.
    let files = entries(&home);
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).unwrap();
    let nl = bytes.iter().position(|b| *b == b'\n').unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&bytes[..nl]).unwrap();
    assert_eq!(meta["name"], "db/key");
    assert_eq!(meta["version"], 1);
    assert_eq!(meta["owner"], tc.fingerprint.as_str());
    // End-to-end encrypted: the cache holds the age file as served, never the plaintext.
    assert_eq!(meta["encoding"], "age");
    assert!(bytes[nl + 1..].starts_with(b"age-encryption.org/v1\n"));
    assert!(!bytes.windows(ONE.len()).any(|w| w == ONE));
    assert!(
        !files[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains("key")
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&home.join("cache")), 0o700);
        assert_eq!(mode(&files[0]), 0o600);
    }
    let ls: serde_json::Value =
        serde_json::from_str(&ok(&run(client(&home, t, &["cache", "ls", "--json"])).await))
            .unwrap();
    assert_eq!(ls["entries"][0]["name"], "db/key");
    assert_eq!(ls["entries"][0]["version"], 1);
    assert_eq!(ls["entries"][0]["current_servers"], true);

    // Library users share the cache: a fresh client of the home answers from it.
    let lib = KeysafeClient::from_home(&tc.home).unwrap();
    let f = lib.get(&name, None).await.unwrap();
    assert!(matches!(f.source, Source::Cache { .. }), "{f:?}");
    let uncached = KeysafeClient::from_home_with(
        &tc.home,
        &ClientOptions {
            use_cache: false,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        uncached.get(&name, None).await.unwrap().source,
        Source::Server
    );

    // A put by this client invalidates: the next get sees the new version at once.
    ok(&run_with_stdin(client(&home, t, &["put", "db/key"]), b"two".to_vec()).await);
    assert!(entries(&home).is_empty());
    assert_eq!(
        run(client(&home, t, &["get", "db/key"])).await.stdout,
        b"two"
    );
    // So does rm: a deleted deposit is not served from the cache.
    ok(&run(client(&home, t, &["rm", "db/key"])).await);
    fails_with(&run(client(&home, t, &["get", "db/key"])).await, 5);
    ok(&run(client(&home, t, &["undelete", "db/key"])).await);
    assert_eq!(
        run(client(&home, t, &["get", "db/key"])).await.stdout,
        b"two"
    );

    // Every server down. Within the TTL the cache answers, silently.
    ts.stop().await;
    let o = run(client(&home, t, &["get", "db/key"])).await;
    ok(&o);
    assert_eq!(o.stdout, b"two");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // --no-cache asks a server, and there is none; nor was version 1 ever cached.
    fails_with(
        &run(client(&home, t, &["get", "db/key", "--no-cache"])).await,
        6,
    );
    fails_with(
        &run(client(&home, t, &["get", "db/key", "--version", "1"])).await,
        6,
    );

    // Past the TTL but within max-stale: served, with a warning on stderr.
    set_cache(&home, "ttl = \"0s\"\nmax_stale = \"1h\"");
    backdate(&home, 60);
    let o = run(client(&home, t, &["get", "db/key"])).await;
    ok(&o);
    assert_eq!(o.stdout, b"two");
    let warn = String::from_utf8_lossy(&o.stderr);
    assert_eq!(warn.lines().count(), 1, "{warn}");
    assert!(
        warn.starts_with("keysafe: warning: serving a cached copy of db/key version 2 fetched 1m"),
        "{warn}"
    );
    assert!(warn.contains("cannot reach"), "{warn}");

    // Past max-stale: refused with the connection error.
    backdate(&home, 2 * 3600);
    let err = fails_with(&run(client(&home, t, &["get", "db/key"])).await, 6);
    assert!(err.contains("cannot reach"), "{err}");
    set_cache(&home, "ttl = \"0s\"\nmax_stale = \"3h\"");
    ok(&run(client(&home, t, &["get", "db/key"])).await);
    // A cache that is switched off is not read.
    set_cache(&home, "enabled = false");
    fails_with(&run(client(&home, t, &["get", "db/key"])).await, 6);

    // cache clear empties it; nothing is served afterwards.
    set_cache(&home, "max_stale = \"24h\"");
    let out = ok(&run(client(&home, t, &["cache", "clear"])).await);
    assert!(out.contains("Removed 1 cached"), "{out}");
    assert!(entries(&home).is_empty());
    fails_with(&run(client(&home, t, &["get", "db/key"])).await, 6);
    let ls = ok(&run(client(&home, t, &["cache", "ls"])).await);
    assert_eq!(ls.lines().count(), 1, "{ls}");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_the_cache() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let home = tc.home_dir().to_owned();
    ok(&run_with_stdin(client(&home, t, &["put", "--raw", "a"]), b"12345".to_vec()).await);
    ok(&run(client(&home, t, &["get", "a"])).await);
    let st: serde_json::Value =
        serde_json::from_str(&ok(&run(client(&home, t, &["status", "--json"])).await)).unwrap();
    assert_eq!(st["cache"]["enabled"], true);
    assert_eq!(st["cache"]["entries"], 1);
    assert_eq!(st["cache"]["bytes"], 5);
    assert_eq!(st["cache"]["ttl_s"], 600);
    assert_eq!(st["cache"]["max_stale_s"], 86400);
    assert_eq!(st["client"]["fingerprint"], tc.fingerprint.as_str());
    assert_eq!(st["client"]["org"], "acme");
    assert_eq!(st["using"], ts.url.as_str());
    assert_eq!(st["servers"][0]["pinned"], ts.fingerprint.as_str());
    let human = ok(&run(client(&home, t, &["status"])).await);
    assert!(human.contains("cache        1 entries, 5 bytes"), "{human}");
    assert!(human.contains("matches pin"), "{human}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_is_not_papered_over_and_drops_the_entry() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let home = tc.home_dir().to_owned();
    ok(&run_with_stdin(client(&home, t, &["put", "a"]), b"v".to_vec()).await);
    ok(&run(client(&home, t, &["get", "a"])).await);
    assert_eq!(entries(&home).len(), 1);
    // Past the TTL, the server refuses the (now disabled) client: no stale copy, entry gone.
    set_cache(&home, "ttl = \"0s\"");
    backdate(&home, 5);
    ts.admin
        .client_action(&tc.fingerprint, "disable")
        .await
        .unwrap();
    let err = fails_with(&run(client(&home, t, &["get", "a"])).await, 4);
    assert!(err.contains("client_disabled"), "{err}");
    assert!(entries(&home).is_empty());
}
