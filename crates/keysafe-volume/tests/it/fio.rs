//! fio (Debian package fio) with `--verify` against a keysafe mount: random and sequential
//! writes of several sizes, every block read back and checked, by several jobs at once. Kept
//! small for CI; docs/volumes.md records the long runs.

use crate::support::*;
use keysafe_volume::format::{Password, init_volume};
use std::process::Command;

fn fio(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("fio")
        .arg(format!("--directory={}", dir.display()))
        .args([
            "--ioengine=psync",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--group_reporting",
            "--output-format=terse",
        ])
        .args(args)
        .output()
        .expect("fio is not installed (Debian package fio; .ci/run installs it)");
    assert!(
        out.status.success(),
        "fio {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fio_verify_through_the_mount() {
    let d = Dirs::new();
    let pw = Password::generate().unwrap();
    init_volume(&d.cipher, &pw, "keysafe-test", 10).unwrap();
    let m = KsMount::new(&d.cipher, &d.mnt, &pw);
    fio(
        &m.mnt,
        &[
            "--name=rand",
            "--rw=randwrite",
            "--bsrange=512-64k",
            "--size=6m",
            "--numjobs=2",
        ],
    );
    fio(
        &m.mnt,
        &["--name=seq", "--rw=write", "--bs=1m", "--size=16m"],
    );
    fio(
        &m.mnt,
        &[
            "--name=mixed",
            "--rw=randrw",
            "--bs=4k",
            "--size=2m",
            "--verify_backlog=64",
        ],
    );
}
