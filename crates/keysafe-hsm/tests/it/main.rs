//! The PKCS#11 seal against SoftHSM2. SoftHSM2 reads its configuration (`SOFTHSM2_CONF`) once,
//! when the library is initialised, so every test runs its body in a child process of this test
//! binary with a token store of its own (setting the variable in this process would need
//! `unsafe`, and tests in one process would share one configuration).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod faults;

use keysafe_hsm::{Pkcs11Mode, Pkcs11Seal, Pkcs11Settings};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "4711-0815";
pub const TOKEN: &str = "faults";
const CHILD_ENV: &str = "KEYSAFE_HSM_TEST_DIR";

/// The token store of a child: its directory, and the configuration that points at it.
pub struct Hsm {
    pub dir: PathBuf,
}

impl Hsm {
    pub fn tokens(&self) -> PathBuf {
        self.dir.join("tokens")
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    pub fn settings(&self, label: &str, mode: Pkcs11Mode) -> Pkcs11Settings {
        Pkcs11Settings {
            module: MODULE.into(),
            token: TOKEN.into(),
            key_label: label.into(),
            pin: PIN.to_owned().into(),
            mode,
        }
    }

    pub fn open(&self, label: &str, mode: Pkcs11Mode, create: bool) -> Pkcs11Seal {
        Pkcs11Seal::open(&self.settings(label, mode), create).unwrap()
    }

    /// Runs `pkcs11-tool` against this token store, logged in.
    pub fn tool(&self, args: &[&str]) {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.conf())
            .args([
                "--module",
                MODULE,
                "--token-label",
                TOKEN,
                "--login",
                "--pin",
                PIN,
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn init_token(dir: &Path) {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    std::fs::write(
        dir.join("softhsm2.conf"),
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let st = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .args(["--init-token", "--free", "--label", TOKEN])
        .args(["--so-pin", "12345678", "--pin", PIN])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "softhsm2-util failed");
}

/// Runs `body` in a child process of this test binary (the test named `name`) with a fresh
/// SoftHSM2 token store; in the child, runs it directly.
pub fn in_child(name: &str, body: impl FnOnce(&Hsm)) {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        body(&Hsm { dir: dir.into() });
        return;
    }
    let work = tempfile::tempdir().unwrap();
    init_token(work.path());
    // Test names omit the crate: `it::faults::x` runs as `faults::x`.
    let name = name.split_once("::").map_or(name, |(_, rest)| rest);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", work.path().join("softhsm2.conf"))
        .env(CHILD_ENV, work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child test {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the test `name` of this binary in a new process on `hsm`'s token store (the store of
/// the calling child), as another process using the same token would; the error is its output.
pub fn run_in_this_store(hsm: &Hsm, name: &str) -> Result<(), String> {
    let name = name.split_once("::").map_or(name, |(_, rest)| rest);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", hsm.conf())
        .env(CHILD_ENV, &hsm.dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.contains("1 passed") {
        Ok(())
    } else {
        Err(format!(
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The full name of a test function, for [`in_child`].
#[macro_export]
macro_rules! test_name {
    ($f:ident) => {
        concat!(module_path!(), "::", stringify!($f))
    };
}
