//! `--json` is honoured everywhere it is accepted: every command that takes it is run once here
//! against real servers and its standard output must parse as JSON (JSON lines for `audit
//! export`). The list of commands comes from the command-line definition, so a new command
//! with `--json` fails this test until it is covered.

use crate::{free_port, keysafe, ok, run, run_with_stdin, spawn_serve_at, wait_healthy};
use clap::CommandFactory;
use keysafe_testkit::TestServer;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every runnable (leaf, visible) command that accepts `--json`, as "admin org add".
fn json_commands() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, path: &[String], out: &mut BTreeSet<String>) {
        let subs: Vec<_> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
        if subs.is_empty() {
            if cmd.get_arguments().any(|a| a.get_long() == Some("json")) {
                out.insert(path.join(" "));
            }
            return;
        }
        for s in subs {
            let mut p = path.to_vec();
            p.push(s.get_name().to_owned());
            walk(s, &p, out);
        }
    }
    let mut cmd = keysafe_cli::cli::Cli::command();
    cmd.build();
    let mut out = BTreeSet::new();
    walk(&cmd, &[], &mut out);
    out
}

struct Walk {
    tmp: tempfile::TempDir,
    covered: BTreeSet<String>,
}

impl Walk {
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn cmd(&self, home: Option<&Path>, args: &[&str]) -> Command {
        let mut c = keysafe(self.tmp.path());
        if let Some(h) = home {
            c.env("KEYSAFE_HOME", h);
        }
        c.args(args);
        c
    }

    /// Records which command this is (the words before the first flag or value that is not a
    /// known subcommand name), runs it and parses its stdout as one JSON value.
    async fn json(&mut self, name: &str, c: Command) -> serde_json::Value {
        self.json_with(name, c, None).await
    }

    async fn json_with(
        &mut self,
        name: &str,
        c: Command,
        stdin: Option<Vec<u8>>,
    ) -> serde_json::Value {
        self.covered.insert(name.to_owned());
        let o = match stdin {
            Some(s) => run_with_stdin(c, s).await,
            None => run(c).await,
        };
        let out = ok(&o);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{name} --json printed something else ({e}): {out:?}"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_that_accepts_json_prints_json() {
    let ts = TestServer::start().await;
    let mut w = Walk {
        tmp: tempfile::tempdir().unwrap(),
        covered: BTreeSet::new(),
    };
    let data = ts.data_dir.to_str().unwrap().to_owned();
    let admin = |args: &[&str]| {
        let mut v = vec!["admin", "--data-dir", data.as_str(), "--json"];
        v.extend_from_slice(args);
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    macro_rules! admin {
        ($w:expr, $name:expr, $($a:expr),*) => {{
            let args = admin(&[$($a),*]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let c = $w.cmd(None, &refs);
            $w.json($name, c).await
        }};
    }

    // Organisations and registration.
    let org = admin!(w, "admin org add", "org", "add", "acme");
    let secret = org["auth_secret"].as_str().unwrap().to_owned();
    std::fs::write(w.path("secret"), &secret).unwrap();
    admin!(w, "admin org add", "org", "add", "beta");
    admin!(w, "admin org list", "org", "list");
    admin!(
        w,
        "admin org set-auth",
        "org",
        "set-auth",
        "beta",
        "--random"
    );
    admin!(w, "admin org token", "org", "token", "acme", "--ttl", "10m");
    let mut homes = Vec::new();
    for n in ["a", "b"] {
        let home = w.path(&format!("home-{n}"));
        let c = w.cmd(
            None,
            &[
                "register",
                "--server",
                &ts.url,
                "--org",
                "acme",
                "--auth-file",
                w.path("secret").to_str().unwrap(),
                "--home",
                home.to_str().unwrap(),
                "--json",
            ],
        );
        let v = w.json("register", c).await;
        homes.push((home, v["fingerprint"].as_str().unwrap().to_owned()));
    }
    let (ha, fa) = homes[0].clone();
    let (hb, fb) = homes[1].clone();
    let a = Some(ha.as_path());
    let b = Some(hb.as_path());

    // Deposits.
    let c = w.cmd(a, &["put", "k1", "--json"]);
    let v = w.json_with("put", c, Some(b"secret-one".to_vec())).await;
    assert_eq!(v["version"], 1);
    let v = w.json("get", w.cmd(a, &["get", "k1", "--json"])).await;
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(v["payload_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(payload, b"secret-one");
    assert_eq!(v["version"], 1);
    assert_eq!(v["encoding"], "age");
    assert_eq!(v["decrypted"], true);
    let out = w.path("k1.out");
    let v = w
        .json(
            "get",
            w.cmd(a, &["get", "k1", "-o", out.to_str().unwrap(), "--json"]),
        )
        .await;
    assert!(v.get("payload_base64").is_none(), "{v}");
    assert_eq!(v["output"], out.to_str().unwrap());
    assert_eq!(std::fs::read(&out).unwrap(), b"secret-one");
    let v = w
        .json("get", w.cmd(a, &["get", "k1", "--raw", "--json"]))
        .await;
    assert_eq!(v["decrypted"], false);
    w.json("ls", w.cmd(a, &["ls", "--json"])).await;
    w.json("versions", w.cmd(a, &["versions", "k1", "--json"]))
        .await;
    w.json("share", w.cmd(a, &["share", "k1", "--with", &fb, "--json"]))
        .await;
    let acl = w.json("acl", w.cmd(a, &["acl", "k1", "--json"])).await;
    assert_eq!(acl["recipient_principals"][1]["principal"], fb.as_str());
    w.json("shared", w.cmd(b, &["shared", "--json"])).await;
    w.json(
        "unshare",
        w.cmd(a, &["unshare", "k1", "--with", &fb, "--json"]),
    )
    .await;
    w.json("rm", w.cmd(a, &["rm", "k1", "--json"])).await;
    w.json("undelete", w.cmd(a, &["undelete", "k1", "--json"]))
        .await;
    let c = w.cmd(a, &["put", "k2"]);
    ok(&run_with_stdin(c, b"two".to_vec()).await);
    w.json("purge", w.cmd(a, &["purge", "k2", "--yes", "--json"]))
        .await;
    w.json("whoami", w.cmd(a, &["whoami", "--json"])).await;
    w.json("status", w.cmd(a, &["status", "--json"])).await;
    w.json("cache ls", w.cmd(a, &["cache", "ls", "--json"]))
        .await;
    w.json("cache clear", w.cmd(a, &["cache", "clear", "--json"]))
        .await;

    // Groups.
    admin!(
        w,
        "admin group add",
        "group",
        "add",
        "g1",
        "--org",
        "acme",
        "--member",
        &fa
    );
    admin!(
        w,
        "admin group add-member",
        "group",
        "add-member",
        "g1",
        "--org",
        "acme",
        &fb
    );
    w.json("group ls", w.cmd(a, &["group", "ls", "--json"]))
        .await;
    w.json("group show", w.cmd(a, &["group", "show", "g1", "--json"]))
        .await;
    w.json(
        "group admit",
        w.cmd(a, &["group", "admit", "g1", &fb, "--json"]),
    )
    .await;
    w.json(
        "group create",
        w.cmd(a, &["group", "create", "g2", "--json"]),
    )
    .await;
    admin!(
        w,
        "admin group remove-member",
        "group",
        "remove-member",
        "g1",
        "--org",
        "acme",
        &fb
    );
    admin!(w, "admin group list", "group", "list");

    // Clients.
    admin!(w, "admin client list", "client", "list");
    admin!(w, "admin client disable", "client", "disable", &fb);
    admin!(w, "admin client enable", "client", "enable", &fb);
    admin!(w, "admin client promote", "client", "promote", &fb);
    admin!(w, "admin client demote", "client", "demote", &fb);
    admin!(w, "admin client reset-token", "client", "reset-token", &fb);
    admin!(
        w,
        "admin client disable-unactivated",
        "client",
        "disable-unactivated",
        "--older-than",
        "100days"
    );
    // A pending client to approve.
    admin!(
        w,
        "admin org set-auth",
        "org",
        "set-auth",
        "beta",
        "--approval"
    );
    let hc = w.path("home-c");
    let c = w.cmd(
        None,
        &[
            "register",
            "--server",
            &ts.url,
            "--org",
            "beta",
            "--home",
            hc.to_str().unwrap(),
            "--json",
        ],
    );
    let v = w.json("register", c).await;
    let fc = v["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "pending");
    admin!(w, "admin client approve", "client", "approve", &fc);

    // Lifecycle: a page of clients, the unactivated preview, unused tokens, deletions, and the
    // offline administrator recovery.
    let v = admin!(w, "admin client list", "client", "list", "--limit", "1");
    assert!(v["next_after"].is_string(), "{v}");
    let v = admin!(
        w,
        "admin client disable-unactivated",
        "client",
        "disable-unactivated",
        "--older-than",
        "100days",
        "--dry-run"
    );
    assert!(v["clients"].is_array(), "{v}");
    let v = admin!(w, "admin org tokens", "org", "tokens", "acme");
    assert_eq!(v["tokens"].as_array().unwrap().len(), 1, "{v}");
    let v = admin!(
        w,
        "admin org token-revoke",
        "org",
        "token-revoke",
        "acme",
        "--all"
    );
    assert_eq!(v["revoked"], 1);
    let v = admin!(
        w,
        "admin group delete",
        "group",
        "delete",
        "g2",
        "--org",
        "acme",
        "--yes"
    );
    assert_eq!(v["dry_run"], false);
    let v = admin!(w, "admin client delete", "client", "delete", &fc, "--yes");
    assert_eq!(v["fingerprint"], fc.as_str());
    let v = admin!(w, "admin org delete", "org", "delete", "beta", "--yes");
    assert_eq!(v["name"], "beta");
    let recovered = w.path("recovered-admin");
    let v = admin!(
        w,
        "admin recover-admin",
        "recover-admin",
        "--new-home",
        recovered.to_str().unwrap(),
        "--force"
    );
    assert_eq!(v["client"]["role"], "admin");
    // The cluster: this one node (its heartbeat is recorded at start), then forgetting it (a
    // running node comes back at its next heartbeat).
    let st = admin!(w, "admin cluster status", "cluster", "status");
    let node = st["nodes"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no node in {st}"))
        .to_owned();
    admin!(w, "admin cluster remove", "cluster", "remove", &node);

    // Keyring, audit, backup.
    admin!(w, "admin keyring status", "keyring", "status");
    admin!(w, "admin keyring rotate", "keyring", "rotate", "--wait");
    admin!(w, "admin keyring retire", "keyring", "retire", "1");
    admin!(w, "admin audit verify", "audit", "verify");
    let v = admin!(w, "admin integrity verify", "integrity", "verify");
    assert_eq!(v["failures"], serde_json::json!([]), "{v}");
    {
        w.covered.insert("admin audit export".to_owned());
        let args = admin(&["audit", "export", "--since", "2000-01-01T00:00:00Z"]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ok(&run(w.cmd(None, &refs)).await);
        assert!(out.lines().count() > 10);
        for l in out.lines() {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("audit export: a line is not JSON ({e}): {l}"));
        }
    }
    {
        // Retention: through a checkpoint with entries after it.
        ts.app
            .state
            .audit
            .flush(std::time::Duration::from_secs(30))
            .await;
        let cp = ts.admin.audit_checkpoint_now().await.unwrap().unwrap().seq;
        ts.admin.whoami().await.unwrap();
        ts.app
            .state
            .audit
            .flush(std::time::Duration::from_secs(30))
            .await;
        let archive = w.path("audit-archive.jsonl");
        let v = admin!(
            w,
            "admin audit prune",
            "audit",
            "prune",
            "--through",
            &cp.to_string(),
            "--archive",
            archive.to_str().unwrap()
        );
        assert_eq!(v["through"], cp, "{v}");
    }
    let key = w.path("backup-key.txt");
    let recipient = ok(&run(w.cmd(None, &["backup", "keygen", "-o", key.to_str().unwrap()])).await)
        .trim()
        .to_owned();
    let backup = w.path("keysafe.age");
    let v = admin!(
        w,
        "admin backup create",
        "backup",
        "create",
        "--recipient",
        &recipient,
        "--include-root-key",
        "-o",
        backup.to_str().unwrap()
    );
    assert!(v["bytes"].as_u64().unwrap() > 0);
    w.json(
        "backup verify",
        w.cmd(
            None,
            &[
                "backup",
                "verify",
                backup.to_str().unwrap(),
                "--identity",
                key.to_str().unwrap(),
                "--json",
            ],
        ),
    )
    .await;
    let restored = w.path("restored");
    let port = free_port("127.0.0.1");
    w.json(
        "restore",
        w.cmd(
            None,
            &[
                "restore",
                "--from",
                backup.to_str().unwrap(),
                "--identity",
                key.to_str().unwrap(),
                "--data-dir",
                restored.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--json",
            ],
        ),
    )
    .await;

    // Offline commands on a data directory of their own: init, seal migrate, tls renew; then
    // unseal on it, served sealed.
    let d2 = w.path("d2");
    let port = free_port("127.0.0.1");
    w.json(
        "init",
        w.cmd(
            None,
            &[
                "init",
                "--data-dir",
                d2.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--json",
            ],
        ),
    )
    .await;
    let pass = w.path("pass");
    std::fs::write(&pass, "correct horse battery staple 42").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let d2s = d2.to_str().unwrap();
    w.json(
        "admin seal migrate",
        w.cmd(
            None,
            &[
                "admin",
                "--data-dir",
                d2s,
                "--json",
                "seal",
                "migrate",
                "--to",
                "passphrase",
                "--passphrase-file",
                pass.to_str().unwrap(),
            ],
        ),
    )
    .await;
    w.json(
        "admin tls renew",
        w.cmd(
            None,
            &["admin", "--data-dir", d2s, "--json", "tls", "renew"],
        ),
    )
    .await;
    let (server, url) = spawn_serve_at(w.tmp.path(), &d2, "127.0.0.1", port);
    assert_eq!(wait_healthy(&url).await.status, "sealed");
    w.json(
        "admin unseal",
        w.cmd(
            None,
            &[
                "admin",
                "--data-dir",
                d2s,
                "--json",
                "unseal",
                "--passphrase-file",
                pass.to_str().unwrap(),
            ],
        ),
    )
    .await;
    drop(server);

    // Volumes (a real FUSE mount) and LUKS2 image files, as client a.
    let cipher = w.path("vol-cipher");
    let mnt = w.path("vol-mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (c_s, m_s) = (cipher.to_str().unwrap(), mnt.to_str().unwrap());
    let guard = crate::volume::Unmount(mnt.clone());
    let v = w
        .json(
            "volume prepare",
            w.cmd(
                a,
                &["volume", "prepare", c_s, m_s, "--name", "v1", "--json"],
            ),
        )
        .await;
    assert_eq!(v["key_deposit"], "volume/v1", "{v}");
    w.json(
        "volume mount",
        w.cmd(a, &["volume", "mount", c_s, m_s, "--json"]),
    )
    .await;
    assert!(crate::volume::is_mounted(&mnt));
    let v = w
        .json("volume status", w.cmd(a, &["volume", "status", "--json"]))
        .await;
    assert!(v.to_string().contains("volume/v1"), "{v}");
    w.json(
        "volume acl add",
        w.cmd(
            a,
            &[
                "volume", "acl", "add", "v1", "--allow", "/", "--exe", "/bin/cat", "--json",
            ],
        ),
    )
    .await;
    w.json(
        "volume acl list",
        w.cmd(a, &["volume", "acl", "list", "v1", "--json"]),
    )
    .await;
    w.json(
        "volume acl mode",
        w.cmd(a, &["volume", "acl", "mode", "v1", "permissive", "--json"]),
    )
    .await;
    w.json(
        "volume acl rm",
        w.cmd(a, &["volume", "acl", "rm", "v1", "1", "--json"]),
    )
    .await;
    w.json(
        "volume umount",
        w.cmd(a, &["volume", "umount", m_s, "--json"]),
    )
    .await;
    assert!(!crate::volume::is_mounted(&mnt));
    drop(guard);
    w.json(
        "volume forget",
        w.cmd(a, &["volume", "forget", "v1", "--json"]),
    )
    .await;
    // A directory the stock gocryptfs made, adopted.
    let theirs = w.path("gocryptfs-dir");
    std::fs::create_dir(&theirs).unwrap();
    let passfile = w.path("gocryptfs.pass");
    std::fs::write(&passfile, "old gocryptfs password\n").unwrap();
    let init = Command::new("gocryptfs")
        .args(["-init", "-q", "-passfile"])
        .arg(&passfile)
        .arg(&theirs)
        .output()
        .expect("gocryptfs is not installed (Debian package gocryptfs)");
    assert!(init.status.success(), "{init:?}");
    w.json(
        "volume adopt",
        w.cmd(
            a,
            &[
                "volume",
                "adopt",
                theirs.to_str().unwrap(),
                m_s,
                "--name",
                "v2",
                "--password-file",
                passfile.to_str().unwrap(),
                "--json",
            ],
        ),
    )
    .await;
    // LUKS2: bind, status, unlock --test, unbind on an image file.
    let (img, pass) = crate::luks::luks_image(w.tmp.path());
    let (i_s, p_s) = (img.to_str().unwrap(), pass.to_str().unwrap());
    w.json(
        "luks bind",
        w.cmd(
            a,
            &[
                "luks",
                "bind",
                i_s,
                "--name",
                "d1",
                "--existing-key-file",
                p_s,
                "--json",
            ],
        ),
    )
    .await;
    w.json("luks status", w.cmd(a, &["luks", "status", i_s, "--json"]))
        .await;
    w.json(
        "luks unlock",
        w.cmd(a, &["luks", "unlock", i_s, "--test", "--json"]),
    )
    .await;
    w.json("luks unbind", w.cmd(a, &["luks", "unbind", i_s, "--json"]))
        .await;

    // The load generator, briefly.
    w.json(
        "bench",
        w.cmd(
            None,
            &[
                "bench",
                "--home",
                ha.to_str().unwrap(),
                "--op",
                "get",
                "--duration",
                "1s",
                "--warmup",
                "0s",
                "--connections",
                "1",
                "--keys",
                "2",
                "--json",
            ],
        ),
    )
    .await;

    let all = json_commands();
    assert!(all.len() > 40, "{all:?}");
    assert!(
        all.contains("get") && all.contains("admin tls renew"),
        "{all:?}"
    );
    let missing: Vec<_> = all.difference(&w.covered).collect();
    assert!(
        missing.is_empty(),
        "commands with --json this test does not run: {missing:?}"
    );
    let unknown: Vec<_> = w.covered.difference(&all).collect();
    assert!(unknown.is_empty(), "not commands with --json: {unknown:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_name_every_column_acl_names_recipients_and_get_hints_at_owner() {
    let ts = TestServer::start().await;
    let a = ts.new_client("acme").await;
    let b = ts.new_client("acme").await;
    let tmp = tempfile::tempdir().unwrap();
    let cmd = |home: &Path, args: &[&str]| {
        let mut c = keysafe(tmp.path());
        c.env("KEYSAFE_HOME", home).args(args);
        c
    };
    let (ha, hb) = (a.home_dir().to_owned(), b.home_dir().to_owned());
    ok(&run_with_stdin(
        cmd(&ha, &["put", "db/key"]),
        b"0123456789abcdef0123456789abcdef".to_vec(),
    )
    .await);
    ok(&run(cmd(
        &ha,
        &["share", "db/key", "--with", b.fingerprint.as_str()],
    ))
    .await);
    ok(&run(cmd(&ha, &["get", "db/key"])).await);

    // Every table has a header for every column; sizes say what they measure.
    let header = |out: &str| out.lines().next().unwrap_or_default().to_owned();
    let ls = ok(&run(cmd(&ha, &["ls"])).await);
    assert_eq!(
        header(&ls)
            .split("  ")
            .filter(|c| !c.trim().is_empty())
            .count(),
        5,
        "{ls}"
    );
    assert!(
        header(&ls).contains("STORED BYTES") && header(&ls).contains("STATE"),
        "{ls}"
    );
    // Stored bytes are the ciphertext: more than the 32 bytes put.
    let row: Vec<&str> = ls.lines().nth(1).unwrap().split_whitespace().collect();
    assert!(row[2].parse::<u64>().unwrap() > 32, "{ls}");
    let versions = ok(&run(cmd(&ha, &["versions", "db/key"])).await);
    assert!(header(&versions).contains("STORED BYTES"), "{versions}");
    let cache = ok(&run(cmd(&ha, &["cache", "ls"])).await);
    assert!(header(&cache).contains("CACHED BYTES"), "{cache}");
    let status = ok(&run(cmd(&ha, &["status"])).await);
    let table = status.lines().find(|l| l.contains("SERVER")).unwrap();
    assert!(table.starts_with("USE"), "{status}");
    let mut c = keysafe(tmp.path());
    c.args(["admin", "--data-dir"])
        .arg(&ts.data_dir)
        .args(["keyring", "status"]);
    let keyring = ok(&run(c).await);
    assert!(keyring.contains("VERSION  STATE"), "{keyring}");

    // acl names whose each recipient is.
    let acl = ok(&run(cmd(&ha, &["acl", "db/key"])).await);
    assert!(acl.contains("PRINCIPAL"), "{acl}");
    let owner_line = acl
        .lines()
        .find(|l| l.contains("(owner)"))
        .unwrap_or_else(|| panic!("{acl}"));
    assert!(owner_line.contains("age1"), "{acl}");
    let grantee_line = acl
        .lines()
        .filter(|l| l.contains("age1"))
        .find(|l| l.starts_with(b.fingerprint.as_str()))
        .unwrap_or_else(|| panic!("{acl}"));
    assert!(!grantee_line.contains("(owner)"));

    // A name shared with the caller but not its own: the error says how to reach it.
    let err = crate::fails_with(&run(cmd(&hb, &["get", "db/key"])).await, 3);
    assert!(
        err.contains(&format!("keysafe get db/key --owner {}", a.fingerprint))
            && err.contains("keysafe shared")
            && err.contains("not_found"),
        "{err}"
    );
    // A name nobody shares: the plain answer.
    let err = crate::fails_with(&run(cmd(&hb, &["get", "nothing"])).await, 3);
    assert!(!err.contains("--owner"), "{err}");
    // With --owner it works.
    let o = run(cmd(
        &hb,
        &["get", "db/key", "--owner", a.fingerprint.as_str()],
    ))
    .await;
    assert_eq!(o.stdout, b"0123456789abcdef0123456789abcdef");
}
