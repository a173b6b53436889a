//! Interoperability with the stock gocryptfs tool, both ways, over real FUSE mounts.

use crate::support::*;
use keysafe_volume::format::{Password, VolumeConfig, init_volume};

fn password() -> Password {
    Password::generate().expect("password")
}

/// A volume made and filled through keysafe reads back byte for byte through gocryptfs, and
/// nothing of the clear tree (names, contents, the password) shows in the cipher directory.
#[test]
fn keysafe_writes_gocryptfs_reads() {
    let d = Dirs::new();
    let pw = password();
    init_volume(&d.cipher, &pw, "keysafe-test", 10).expect("init");
    {
        let m = KsMount::new(&d.cipher, &d.mnt, &pw);
        fill_tree(&m.mnt);
        check_tree(&m.mnt);
        m.unmount();
    }
    assert_nothing_in_clear(&d.cipher, pw.as_bytes());
    let g = GoMount::new(&d.cipher, &d.mnt, pw.as_bytes());
    check_tree(&g.mnt);
    drop(g);
    assert!(
        GoMount::refuses(&d.cipher, &d.mnt, b"not the password"),
        "gocryptfs must refuse another password"
    );
}

/// A directory made by `gocryptfs -init` and filled by gocryptfs mounts through keysafe.
#[test]
fn gocryptfs_writes_keysafe_reads() {
    let d = Dirs::new();
    let pw = b"a human password";
    gocryptfs_init(&d.cipher, pw);
    {
        let g = GoMount::new(&d.cipher, &d.mnt, pw);
        fill_tree(&g.mnt);
    }
    let cfg = VolumeConfig::load(&d.cipher).expect("config");
    assert!(cfg.creator().starts_with("gocryptfs"));
    let m = KsMount::new(&d.cipher, &d.mnt, &Password::from_bytes(pw.to_vec()));
    check_tree(&m.mnt);
    // And keysafe can keep writing into it, which gocryptfs then reads.
    std::fs::write(m.mnt.join("from-keysafe"), bytes(9, 12_345)).expect("write");
    m.unmount();
    let g = GoMount::new(&d.cipher, &d.mnt, pw);
    assert_eq!(
        std::fs::read(g.mnt.join("from-keysafe")).expect("read"),
        bytes(9, 12_345)
    );
}

/// A wrong password is refused before anything is mounted.
#[test]
fn wrong_password_is_refused() {
    let d = Dirs::new();
    init_volume(&d.cipher, &password(), "keysafe-test", 10).expect("init");
    let cfg = VolumeConfig::load(&d.cipher).expect("config");
    let e = cfg.unlock(&password()).expect_err("wrong password");
    assert!(e.to_string().contains("password"), "{e}");
}
