//! HSM faults are not key destruction: a finalised library, a lost login and a token that goes
//! away and comes back leave the seal working once the HSM answers again; a deleted or replaced
//! key is reported missing.

use crate::{Hsm, MODULE, in_child, test_name};
use cryptoki::context::Pkcs11;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use keysafe_core::seal::{Seal, SealError};
use keysafe_hsm::Pkcs11Mode;

const AAD: &[u8] = b"test/aad";

/// Encrypts, and checks that the seal still decrypts what it encrypted before.
#[track_caller]
fn round_trip(seal: &dyn Seal, earlier: &[u8]) {
    assert_eq!(&seal.decrypt(AAD, earlier).unwrap()[..], b"secret");
    let again = seal.encrypt(AAD, b"secret").unwrap();
    assert_eq!(&seal.decrypt(AAD, &again).unwrap()[..], b"secret");
    seal.check().unwrap();
}

#[test]
fn a_restarted_library_is_initialised_again_and_the_key_still_works() {
    in_child(
        test_name!(a_restarted_library_is_initialised_again_and_the_key_still_works),
        |hsm| {
            let seal = hsm.open("k", Pkcs11Mode::PerDeposit, true);
            let sealed = seal.encrypt(AAD, b"secret").unwrap();
            // Another handle on the same library finalises it: every session and login of this
            // process is gone, as after a restart of the HSM client library.
            Pkcs11::new(MODULE).unwrap().finalize().unwrap();
            round_trip(&seal, &sealed);
            // And once more, this time caught by the periodic check first.
            Pkcs11::new(MODULE).unwrap().finalize().unwrap();
            seal.check().unwrap();
            round_trip(&seal, &sealed);
        },
    );
}

#[test]
fn a_lost_login_is_logged_in_again() {
    in_child(test_name!(a_lost_login_is_logged_in_again), |hsm| {
        let seal = hsm.open("k", Pkcs11Mode::Keyring, true);
        let sealed = seal.encrypt(AAD, b"secret").unwrap();
        // A logout through another session logs the whole process out of the token: the key,
        // a private object, becomes invisible to the pooled sessions (CKR_USER_NOT_LOGGED_IN,
        // or an empty search).
        let ctx = Pkcs11::new(MODULE).unwrap();
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == crate::TOKEN)
            .unwrap();
        let other = ctx.open_ro_session(slot).unwrap();
        match other.login(UserType::User, Some(&AuthPin::new(crate::PIN.into()))) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => panic!("{e}"),
        }
        other.logout().unwrap();
        seal.check().unwrap();
        round_trip(&seal, &sealed);
        // The seal logged the process in again (the login is shared by all its sessions).
        assert!(matches!(
            other.get_session_info().unwrap().session_state(),
            cryptoki::session::SessionState::RoUser
        ));
    });
}

#[test]
fn a_token_that_goes_away_and_comes_back_is_not_shredding() {
    in_child(
        test_name!(a_token_that_goes_away_and_comes_back_is_not_shredding),
        |hsm| {
            let seal = hsm.open("k", Pkcs11Mode::PerDeposit, true);
            let sealed = seal.encrypt(AAD, b"secret").unwrap();
            let away = hsm.dir.join("tokens-away");
            std::fs::rename(hsm.tokens(), &away).unwrap();
            // While it is away every call fails, but none says the key is gone.
            for _ in 0..3 {
                if let Err(SealError::HsmKeyMissing { .. }) = seal.check() {
                    panic!("an absent token is not a destroyed key");
                }
                if let Err(SealError::HsmKeyMissing { .. }) = seal.decrypt(AAD, &sealed) {
                    panic!("an absent token is not a destroyed key");
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            std::fs::rename(&away, hsm.tokens()).unwrap();
            // Back: once the backoff has passed, everything works again.
            let mut ok = false;
            for _ in 0..100 {
                if seal.check().is_ok() {
                    ok = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            assert!(ok, "the seal never came back");
            round_trip(&seal, &sealed);
        },
    );
}

#[test]
fn a_deleted_key_is_missing_and_stays_missing() {
    in_child(
        test_name!(a_deleted_key_is_missing_and_stays_missing),
        |hsm| {
            let seal = hsm.open("k", Pkcs11Mode::PerDeposit, true);
            let sealed = seal.encrypt(AAD, b"secret").unwrap();
            hsm.tool(&["--delete-object", "--type", "secrkey", "--label", "k"]);
            assert!(matches!(
                seal.decrypt(AAD, &sealed),
                Err(SealError::HsmKeyMissing { .. })
            ));
            assert!(matches!(seal.check(), Err(SealError::HsmKeyMissing { .. })));
            assert!(matches!(
                seal.encrypt(AAD, b"x"),
                Err(SealError::HsmKeyMissing { .. })
            ));
        },
    );
}

#[test]
fn a_deleted_key_is_found_missing_by_the_check() {
    in_child(
        test_name!(a_deleted_key_is_found_missing_by_the_check),
        |hsm| {
            let seal = hsm.open("k", Pkcs11Mode::Keyring, true);
            seal.check().unwrap();
            hsm.tool(&["--delete-object", "--type", "secrkey", "--label", "k"]);
            assert!(matches!(seal.check(), Err(SealError::HsmKeyMissing { .. })));
        },
    );
}

#[test]
fn another_key_under_the_same_label_is_missing() {
    in_child(
        test_name!(another_key_under_the_same_label_is_missing),
        |hsm| {
            let seal = hsm.open("k", Pkcs11Mode::Keyring, true);
            seal.check().unwrap();
            hsm.tool(&["--delete-object", "--type", "secrkey", "--label", "k"]);
            hsm.tool(&[
                "--keygen",
                "--key-type",
                "AES:32",
                "--label",
                "k",
                "--private",
            ]);
            assert!(matches!(seal.check(), Err(SealError::HsmKeyMissing { .. })));
            let _: &Hsm = hsm;
        },
    );
}

/// Opens the seal (creating the key when the token has none) and round-trips a secret: run on
/// its own it is a test of its own, and [`processes_starting_at_once_on_one_token_all_open_it`]
/// runs it in several processes at once.
#[test]
fn opens_and_round_trips() {
    in_child(test_name!(opens_and_round_trips), |hsm| {
        let seal = hsm.open("k", Pkcs11Mode::Keyring, true);
        let sealed = seal.encrypt(AAD, b"secret").unwrap();
        round_trip(&seal, &sealed);
    });
}

/// Nodes of a cluster share one HSM token. SoftHSM2 shared by processes that start at once
/// answers some of them with `CKR_GENERAL_ERROR`, or leaves the token out of their slot list;
/// opening the seal tries again, so every process opens it.
#[test]
fn processes_starting_at_once_on_one_token_all_open_it() {
    in_child(
        test_name!(processes_starting_at_once_on_one_token_all_open_it),
        |hsm| {
            drop(hsm.open("k", Pkcs11Mode::Keyring, true));
            const PROCESSES: usize = 4;
            const STARTS: usize = 15;
            let failures: Vec<String> = std::thread::scope(|s| {
                let runs: Vec<_> = (0..PROCESSES)
                    .map(|_| {
                        s.spawn(|| {
                            let mut failed = Vec::new();
                            for _ in 0..STARTS {
                                if let Err(e) =
                                    crate::run_in_this_store(hsm, test_name!(opens_and_round_trips))
                                {
                                    failed.push(e);
                                }
                            }
                            failed
                        })
                    })
                    .collect();
                runs.into_iter().flat_map(|r| r.join().unwrap()).collect()
            });
            assert!(
                failures.is_empty(),
                "{} of {} starts failed; the first:\n{}",
                failures.len(),
                PROCESSES * STARTS,
                failures[0]
            );
        },
    );
}
