//! Packaging: completions and man pages generated from the command-line definition; the Debian
//! package built (from the test's debug binary, by packaging/build-deb.sh and cargo-deb),
//! installed into a fresh root with `dpkg --root` (maintainer scripts run chrootless against
//! that root, so no user is ever created on this machine), its systemd units accepted by
//! `systemd-analyze verify` and scored by `systemd-analyze security`.

use clap::CommandFactory;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Every visible command path: ["keysafe"], ["keysafe", "admin"], ["keysafe", "admin", "org"], ...
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut p = path.clone();
            p.push(sub.get_name().to_owned());
            walk(sub, p, out);
        }
    }
    let mut out = Vec::new();
    walk(
        &keysafe_cli::cli::Cli::command(),
        vec!["keysafe".to_owned()],
        &mut out,
    );
    out
}

#[track_caller]
fn success(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn tool(name: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        found,
        "{name} is missing: .ci/run installs it (cargo-deb: cargo install cargo-deb --locked; systemd-analyze: apt-get install systemd)"
    );
}

#[test]
fn completions_and_a_man_page_for_every_command_are_generated() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_keysafe");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = success(
            &Command::new(bin)
                .args(["completions", shell])
                .output()
                .unwrap(),
        );
        assert!(script.contains("keysafe"), "{shell}");
        assert!(
            script.contains("renew"),
            "{shell}: the deepest commands are there"
        );
    }
    let bash = success(
        &Command::new(bin)
            .args(["completions", "bash"])
            .output()
            .unwrap(),
    );
    std::fs::write(tmp.path().join("keysafe.bash"), &bash).unwrap();
    success(
        &Command::new("bash")
            .arg("-n")
            .arg(tmp.path().join("keysafe.bash"))
            .output()
            .unwrap(),
    );
    let bad = Command::new(bin)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));

    let man = tmp.path().join("man");
    let o = Command::new(bin).arg("man").arg(&man).output().unwrap();
    success(&o);
    let paths = command_paths();
    assert!(paths.len() > 50, "{}", paths.len());
    let mut pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for p in &paths {
        let file = format!("{}.1", p.join("-"));
        let text = std::fs::read_to_string(man.join(&file))
            .unwrap_or_else(|e| panic!("no man page {file}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{file}");
        // The synopsis names the whole command (roff escapes '-' as '\-').
        assert!(text.replace("\\-", "-").contains(&p.join(" ")), "{file}");
    }
    assert_eq!(
        pages.len(),
        paths.len(),
        "one page per command, no more: {pages:?}"
    );
    assert!(
        !pages
            .iter()
            .any(|p| p.contains("completions") || p.contains("-man"))
    );
}

/// A fresh root for dpkg: an empty package database and a user database with root only.
fn fresh_root(r: &Path) {
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "etc",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    for (f, text) in [
        ("var/lib/dpkg/status", ""),
        ("var/lib/dpkg/available", ""),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n"),
        ("etc/gshadow", "root:*::\n"),
    ] {
        std::fs::write(r.join(f), text).unwrap();
    }
}

fn dpkg(root: &Path, args: &[&str]) -> Output {
    Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        // Maintainer scripts run on this host with DPKG_ROOT set, acting on the root only.
        .args(["--force-script-chrootless", "--force-depends"])
        .args(args)
        .output()
        .unwrap()
}

fn entry<'a>(db: &'a str, name: &str) -> Option<Vec<&'a str>> {
    db.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == name)
}

fn meta(p: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn the_debian_package_builds_installs_into_a_fresh_root_and_its_units_verify() {
    for t in [
        "cargo-deb",
        "dpkg",
        "dpkg-deb",
        "systemd-analyze",
        "useradd",
        "strip",
    ] {
        tool(t);
    }
    let is_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    assert!(
        is_root,
        "installing into a fresh root with dpkg --root needs root (CI runs as root)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let out = t.join("out");

    // Build: the test's debug binary, stripped, packaged with fast compression.
    let o = Command::new(workspace().join("packaging/build-deb.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_keysafe"))
        .args(["--fast", "--strip", "-o"])
        .arg(&out)
        .current_dir(workspace())
        .env("CARGO_TARGET_DIR", t.join("target"))
        .output()
        .unwrap();
    success(&o);
    let deb = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    let fields = success(
        &Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .args(["Package", "Version", "Depends", "Section"])
            .output()
            .unwrap(),
    );
    assert!(fields.contains("Package: keysafe\n"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {}-1", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );
    assert!(
        fields.contains("passwd") && fields.contains("libc6"),
        "{fields}"
    );

    // Contents: the binary, both units, the configuration, completions, a man page per command.
    let listing = success(
        &Command::new("dpkg-deb")
            .arg("-c")
            .arg(&deb)
            .output()
            .unwrap(),
    );
    let files: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let mut want: Vec<String> = [
        "./usr/bin/keysafe",
        "./usr/lib/systemd/system/keysafe.service",
        "./usr/lib/systemd/system/keysafe-kms.service",
        "./etc/keysafe/kms.toml",
        "./etc/keysafe/keysafe.env",
        "./usr/share/bash-completion/completions/keysafe",
        "./usr/share/zsh/vendor-completions/_keysafe",
        "./usr/share/fish/vendor_completions.d/keysafe.fish",
        "./usr/share/doc/keysafe/operations.md",
        "./usr/share/doc/keysafe/examples/prometheus-alerts.yml",
    ]
    .map(str::to_owned)
    .to_vec();
    for p in command_paths() {
        want.push(format!("./usr/share/man/man1/{}.1.gz", p.join("-")));
    }
    for w in &want {
        assert!(
            files.contains(&w.as_str()),
            "{w} is not in the package:\n{listing}"
        );
    }
    let control = t.join("control");
    success(
        &Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(&control)
            .output()
            .unwrap(),
    );
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.contains("/etc/keysafe/kms.toml")
            && conffiles.contains("/etc/keysafe/keysafe.env")
    );
    assert_eq!(meta(&control.join("postinst")).0 & 0o111, 0o111);

    // Install into a fresh root. Nothing of this machine's user database changes.
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let group_before = std::fs::read("/etc/group").unwrap();
    let r = t.join("root");
    fresh_root(&r);
    success(&dpkg(&r, &["-i", deb.to_str().unwrap()]));
    success(&dpkg(&r, &["-i", deb.to_str().unwrap()])); // again: an upgrade in place
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
    assert_eq!(std::fs::read("/etc/group").unwrap(), group_before);

    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    assert_eq!(passwd.matches("\nkeysafe:").count(), 1, "{passwd}");
    let user = entry(&passwd, "keysafe").unwrap();
    let grp = entry(&group, "keysafe").unwrap();
    let (uid, gid): (u32, u32) = (user[2].parse().unwrap(), grp[2].parse().unwrap());
    assert!(uid < 1000 && uid > 0, "a system user: {user:?}");
    assert_eq!(user[3], grp[2]);
    assert_eq!(user[5], "/var/lib/keysafe");
    assert_eq!(user[6], "/usr/sbin/nologin");
    assert_eq!(meta(&r.join("var/lib/keysafe")), (0o700, uid, gid));
    assert_eq!(meta(&r.join("var/lib/keysafe-kms")), (0o700, uid, gid));
    assert_eq!(meta(&r.join("etc/keysafe")), (0o750, 0, gid));
    assert_eq!(meta(&r.join("etc/keysafe/kms.toml")), (0o640, 0, gid));
    let version = success(
        &Command::new(r.join("usr/bin/keysafe"))
            .arg("--version")
            .output()
            .unwrap(),
    );
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    // The units: verified against the root (the host's own units provide the targets they
    // name; man pages are checked above), with no warning at all.
    let units = r.join("usr/lib/systemd/system");
    for f in std::fs::read_dir("/usr/lib/systemd/system").unwrap() {
        let f = f.unwrap();
        let dest = units.join(f.file_name());
        if !dest.exists() && f.file_type().unwrap().is_file() {
            std::fs::copy(f.path(), dest).unwrap();
        }
    }
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::copy("/bin/kill", r.join("bin/kill")).unwrap();
    for unit in ["keysafe.service", "keysafe-kms.service"] {
        let o = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", r.display()))
            .args(["--man=no", &format!("/usr/lib/systemd/system/{unit}")])
            .output()
            .unwrap();
        success(&o);
        assert!(
            o.stderr.is_empty(),
            "{unit}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(format!("--root={}", r.display()))
            .arg(format!("/usr/lib/systemd/system/{unit}"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no score in:\n{text}"));
        // docs/packaging.md records the score; a unit that loses its hardening fails here.
        assert!(score <= 1.5, "{unit} exposure {score}:\n{text}");
    }
    let service = std::fs::read_to_string(units.join("keysafe.service")).unwrap();
    for directive in [
        "Type=notify",
        "WatchdogSec=",
        "User=keysafe",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/keysafe",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            service.contains(directive),
            "keysafe.service lacks {directive:?}"
        );
    }

    // Purge: the configuration goes; the keys, database and audit trail never do.
    std::fs::write(r.join("var/lib/keysafe/keysafe.db"), "precious").unwrap();
    let o = dpkg(&r, &["--purge", "keysafe"]);
    success(&o);
    assert!(!r.join("etc/keysafe").exists());
    assert!(!r.join("usr/bin/keysafe").exists());
    assert_eq!(
        std::fs::read_to_string(r.join("var/lib/keysafe/keysafe.db")).unwrap(),
        "precious"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("/var/lib/keysafe is kept"));
}
