//! Records the git commit the server is built from, for the `keysafe_build_info` metric:
//! `KEYSAFE_GIT_COMMIT` if the builder sets it (package and container builds from a tarball),
//! else `git rev-parse` when building from a checkout, else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=KEYSAFE_GIT_COMMIT");
    let commit = std::env::var("KEYSAFE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // Rebuild when the checked-out commit moves (a commit, checkout or reset).
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                println!("cargo:rerun-if-changed={dir}/HEAD");
                println!("cargo:rerun-if-changed={dir}/logs/HEAD");
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    // Only hex digits (or "unknown") reach the binary.
    let commit = if commit.chars().all(|c| c.is_ascii_hexdigit()) {
        commit
    } else {
        "unknown".to_owned()
    };
    println!("cargo:rustc-env=KEYSAFE_GIT_COMMIT={commit}");
}
