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

/// Moves every entry's fetch time, and the time a server last confirmed it (the file's
/// modification time), `secs` into the past.
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
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t - secs);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(then)
            .unwrap();
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_revalidates_serves_stale_only_while_down_and_refuses_past_max_stale() {
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
    assert!(meta["etag"].as_str().unwrap().starts_with("1-"), "{meta}");
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

    // Library users share the cache. By default every get asks a server: a `304` confirms the
    // cached copy (no payload travels) and restarts its age.
    let lib = KeysafeClient::from_home(&tc.home).unwrap();
    backdate(&home, 3600);
    let f = lib.get(&name, None).await.unwrap();
    assert_eq!(f.source, Source::Validated, "{f:?}");
    assert_eq!(f.acl_serial, Some(0), "a 304 carries the current headers");
    let age = lib
        .cache()
        .unwrap()
        .lookup(&keysafe_client::cache::CacheKey {
            owner: tc.fingerprint.as_str(),
            name: "db/key",
            version: None,
        })
        .unwrap()
        .age;
    assert!(age < std::time::Duration::from_secs(600), "{age:?}");
    // A damaged tag in the entry is not sent: the get is unconditional and refreshes it.
    for p in entries(&home) {
        let bytes = std::fs::read(&p).unwrap();
        let nl = bytes.iter().position(|b| *b == b'\n').unwrap();
        let mut meta: serde_json::Value = serde_json::from_slice(&bytes[..nl]).unwrap();
        meta["etag"] = "1-\"injected".into();
        let mut out = serde_json::to_vec(&meta).unwrap();
        out.extend_from_slice(&bytes[nl..]);
        std::fs::write(&p, out).unwrap();
    }
    assert_eq!(lib.get(&name, None).await.unwrap().source, Source::Server);
    assert_eq!(
        lib.get(&name, None).await.unwrap().source,
        Source::Validated
    );
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

    // Every server down: the copy is served, with a warning on stderr naming its age.
    ts.stop().await;
    backdate(&home, 60);
    let o = run(client(&home, t, &["get", "db/key"])).await;
    ok(&o);
    assert_eq!(o.stdout, b"two");
    let warn = String::from_utf8_lossy(&o.stderr);
    assert_eq!(warn.lines().count(), 1, "{warn}");
    assert!(
        warn.starts_with(
            "keysafe: warning: serving a cached copy of db/key version 2 last confirmed by a server 1m"
        ),
        "{warn}"
    );
    assert!(warn.contains("cannot reach"), "{warn}");
    // --no-cache asks a server, and there is none; nor was version 1 ever cached.
    fails_with(
        &run(client(&home, t, &["get", "db/key", "--no-cache"])).await,
        6,
    );
    fails_with(
        &run(client(&home, t, &["get", "db/key", "--version", "1"])).await,
        6,
    );

    // The opt-in ttl mode: within the TTL the copy answers without asking, silently.
    set_cache(&home, "mode = \"ttl\"\nttl = \"10m\"");
    let o = run(client(&home, t, &["get", "db/key"])).await;
    ok(&o);
    assert_eq!(o.stdout, b"two");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Past max-stale: refused, saying why the copy was not served.
    set_cache(&home, "max_stale = \"1h\"");
    backdate(&home, 2 * 3600);
    let err = fails_with(&run(client(&home, t, &["get", "db/key"])).await, 6);
    assert!(err.contains("cannot reach"), "{err}");
    assert!(
        err.contains("the cached copy is not served: a server last confirmed it 2h")
            && err.contains("past the cache's max_stale (1h)"),
        "{err}"
    );
    set_cache(&home, "max_stale = \"3h\"");
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
async fn another_writer_and_a_revocation_are_seen_at_the_next_get() {
    let ts = TestServer::start().await;
    let a = ts.new_client("acme").await;
    let b = ts.new_client("acme").await;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (ha, hb) = (a.home_dir().to_owned(), b.home_dir().to_owned());
    let fa = a.fingerprint.as_str();
    let fb = b.fingerprint.as_str();

    ok(&run_with_stdin(client(&ha, t, &["put", "db/key"]), ONE.to_vec()).await);
    ok(&run(client(
        &ha,
        t,
        &["share", "db/key", "--with", fb, "--write"],
    ))
    .await);
    assert_eq!(run(client(&ha, t, &["get", "db/key"])).await.stdout, ONE);
    assert_eq!(
        run(client(&hb, t, &["get", "db/key", "--owner", fa]))
            .await
            .stdout,
        ONE
    );
    assert_eq!(entries(&ha).len(), 1);
    assert_eq!(entries(&hb).len(), 1);

    // Another client stores a new version: the owner's next get returns it, not its copy.
    ok(&run_with_stdin(
        client(&hb, t, &["put", "db/key", "--owner", fa]),
        b"from-b".to_vec(),
    )
    .await);
    let o = run(client(&ha, t, &["get", "db/key"])).await;
    assert_eq!(o.stdout, b"from-b");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // In the opt-in ttl mode the copy answers within the TTL: a newer version is seen late.
    set_cache(&ha, "mode = \"ttl\"\nttl = \"1h\"");
    ok(&run_with_stdin(
        client(&hb, t, &["put", "db/key", "--owner", fa]),
        b"from-b-again".to_vec(),
    )
    .await);
    assert_eq!(
        run(client(&ha, t, &["get", "db/key"])).await.stdout,
        b"from-b"
    );
    set_cache(&ha, "mode = \"revalidate\"");
    assert_eq!(
        run(client(&ha, t, &["get", "db/key"])).await.stdout,
        b"from-b-again"
    );

    // The owner revokes: the grantee's next get fails, and its cached copy is gone.
    assert_eq!(
        run(client(&hb, t, &["get", "db/key", "--owner", fa]))
            .await
            .stdout,
        b"from-b-again"
    );
    assert_eq!(entries(&hb).len(), 1);
    ok(&run(client(&ha, t, &["unshare", "db/key", "--with", fb])).await);
    let err = fails_with(
        &run(client(&hb, t, &["get", "db/key", "--owner", fa])).await,
        3,
    );
    assert!(err.contains("not_found"), "{err}");
    assert!(
        entries(&hb).is_empty(),
        "a revoked deposit leaves the cache"
    );
    // ... and with the server down afterwards, nothing is served either.
    ts.stop().await;
    fails_with(
        &run(client(&hb, t, &["get", "db/key", "--owner", fa])).await,
        6,
    );
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
    assert_eq!(st["cache"]["mode"], "revalidate");
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
