//! The PKCS#11 seal: a non-extractable AES-256 key inside an HSM token wraps the keyring (mode
//! `keyring`) or, additionally, every data key (mode `per-deposit`). The module is loaded at run
//! time with cryptoki; every call blocks, so callers run them on a blocking thread. Sessions are
//! kept in a small pool: PKCS#11 sessions are not thread-safe, so each call takes one out and
//! puts it back.
//!
//! An HSM or token restart is not key destruction. When a call fails for any reason other than
//! a GCM tag that does not verify, the seal reconnects before it concludes anything: it
//! initialises the library again if it has to, finds the token by label (its slot may have
//! changed), opens a fresh session, logs in again and finds the key by label, then retries the
//! call once. Only a reconnection that logs in successfully and then finds no key by that label,
//! or finds a key that no longer decrypts the probe made when the seal was opened (a different
//! key under the same label, or one no longer allowed to decrypt), reports
//! [`SealError::HsmKeyMissing`], which seals the server for good. A reconnection that fails
//! (token absent, device error, PIN refused) is an ordinary [`SealError::Hsm`] error: the call
//! fails, the server stays unsealed, and the next attempt waits out an exponential backoff so a
//! dead HSM is not hammered.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keysafe_core::crypto;
use keysafe_core::seal::{Seal, SealError};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;
/// Sessions kept open for reuse; more are opened under load and closed when returned.
const POOL_SIZE: usize = 8;
/// What the probe encrypts when the seal is opened; decrypting it later proves that the key
/// found under the label is still the key that was opened.
const PROBE_AAD: &[u8] = b"keysafe/seal-probe/v1";
const PROBE_PLAINTEXT: &[u8] = b"keysafe seal probe";
/// Backoff between reconnection attempts while the HSM does not answer.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often opening the seal is tried again after a device-level failure, and the first wait
/// (doubled each time: 0.1 + 0.2 + 0.4 + 0.8 s).
const OPEN_RETRIES: u32 = 4;
const OPEN_RETRY_WAIT: Duration = Duration::from_millis(100);

/// `keyring`: the HSM opens the keyring at start. `per-deposit`: every data key also goes
/// through the HSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkcs11Mode {
    Keyring,
    PerDeposit,
}

impl Pkcs11Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Pkcs11Mode::Keyring => "keyring",
            Pkcs11Mode::PerDeposit => "per-deposit",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "keyring" => Some(Self::Keyring),
            "per-deposit" => Some(Self::PerDeposit),
            _ => None,
        }
    }
}

/// Where the key lives and how to log in.
pub struct Pkcs11Settings {
    pub module: PathBuf,
    pub token: String,
    pub key_label: String,
    pub pin: Zeroizing<String>,
    pub mode: Pkcs11Mode,
}

impl fmt::Debug for Pkcs11Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Settings")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("key_label", &self.key_label)
            .field("pin", &"[redacted]")
            .field("mode", &self.mode)
            .finish()
    }
}

/// A loaded module. `gate` is held (shared) around every call a seal makes and (exclusive)
/// around finalising and initialising the library again, which PKCS#11 forbids while other
/// calls are running.
struct Module {
    ctx: Pkcs11,
    gate: RwLock<()>,
}

impl Module {
    fn shared(&self) -> Result<RwLockReadGuard<'_, ()>, SealError> {
        self.gate
            .read()
            .map_err(|_| SealError::Hsm("module lock poisoned".into()))
    }

    /// Finalises and initialises the library again: the only way some libraries (SoftHSM2
    /// among them) notice a token that came back. Sessions of every seal on this module
    /// become invalid; each reconnects on its next call.
    fn restart(&self) -> Result<(), SealError> {
        let _exclusive = self
            .gate
            .write()
            .map_err(|_| SealError::Hsm("module lock poisoned".into()))?;
        match self.ctx.clone().finalize() {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
            Err(e) => return Err(hsm("C_Finalize", e)),
        }
        initialize(&self.ctx)
    }
}

/// One loaded module per path: PKCS#11 allows `C_Initialize` once per process, and a seal
/// migration may open two keys through the same module.
fn module(path: &Path) -> Result<Arc<Module>, SealError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    let map = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| SealError::Hsm("context lock poisoned".into()))?;
    if let Some(m) = map.get(path) {
        return Ok(m.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|e| {
        SealError::Hsm(format!(
            "cannot load the PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    initialize(&ctx)?;
    let m = Arc::new(Module {
        ctx,
        gate: RwLock::new(()),
    });
    map.insert(path.to_owned(), m.clone());
    Ok(m)
}

/// `C_Initialize`; a library that is initialised already is fine.
fn initialize(ctx: &Pkcs11) -> Result<(), SealError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(hsm("C_Initialize", e)),
    }
}

fn find_slot(ctx: &Pkcs11, token: &str) -> Result<Slot, CkError> {
    for slot in ctx.get_slots_with_token()? {
        if let Ok(info) = ctx.get_token_info(slot)
            && info.label().trim_end() == token
        {
            return Ok(slot);
        }
    }
    Err(CkError::Pkcs11(
        RvError::TokenNotPresent,
        cryptoki::context::Function::GetTokenInfo,
    ))
}

fn hsm(what: &str, e: CkError) -> SealError {
    SealError::Hsm(format!("{what}: {e}"))
}

fn token_absent(token: &str) -> SealError {
    SealError::Hsm(format!("no token labelled {token:?}"))
}

/// A GCM tag that does not verify: tokens report it as invalid data or, like SoftHSM2, as a
/// general failure of the operation. Only meaningful for a decryption.
fn is_tag_failure(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError
                | RvError::FunctionFailed,
            _,
        )
    )
}

/// The connection the pooled sessions belong to. `generation` changes with every reconnection,
/// so a session opened before it is never used or closed again (after a restart its handle may
/// name somebody else's session).
struct Live {
    slot: Slot,
    key: ObjectHandle,
    generation: u64,
    /// Set once a fresh login found the key absent (or replaced): final.
    gone: bool,
    backoff: Duration,
    retry_at: Option<Instant>,
}

/// What a reconnection found.
enum Reconnected {
    Key(Slot, ObjectHandle, Session),
    /// Logged in, and no key by the label decrypts the probe (or none exists).
    Absent,
}

pub struct Pkcs11Seal {
    module: Arc<Module>,
    token: String,
    key_label: String,
    /// Kept to log in again after a token restart.
    pin: Zeroizing<String>,
    mode: Pkcs11Mode,
    /// The probe encrypted by the key when the seal was opened: identifies that key.
    probe: Vec<u8>,
    live: Mutex<Live>,
    pool: Mutex<Vec<(u64, Session)>>,
}

impl fmt::Debug for Pkcs11Seal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Seal")
            .field("token", &self.token)
            .field("key_label", &self.key_label)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn login(session: &Session, pin: &str, token: &str) -> Result<(), SealError> {
    let pin = AuthPin::new(pin.into());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            Err(SealError::WrongPin {
                token: token.to_owned(),
            })
        }
        Err(e) => Err(hsm("C_Login", e)),
    }
}

fn key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn find_key(
    session: &Session,
    token: &str,
    label: &str,
) -> Result<Option<ObjectHandle>, SealError> {
    let found = session
        .find_objects(&key_template(label))
        .map_err(|e| hsm("C_FindObjects", e))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(SealError::Hsm(format!(
            "token {token:?} holds several keys labelled {label:?}"
        ))),
    }
}

fn gcm_encrypt(
    session: &Session,
    key: ObjectHandle,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Result<Vec<u8>, CkError>, SealError> {
    let mut iv = [0u8; IV_LEN];
    crypto::random_bytes(&mut iv).map_err(|_| SealError::Random)?;
    let nonce = iv;
    let ct = GcmParams::new(&mut iv, aad, TAG_BITS.into())
        .and_then(|params| session.encrypt(&Mechanism::AesGcm(params), key, plaintext));
    Ok(ct.map(|ct| {
        let mut out = Vec::with_capacity(IV_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }))
}

/// `Err(None)`: the input is too short to be ours (a wrong key, for the caller).
fn gcm_decrypt(
    session: &Session,
    key: ObjectHandle,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, Option<CkError>> {
    if sealed.len() < IV_LEN + 16 {
        return Err(None);
    }
    let (iv, body) = sealed.split_at(IV_LEN);
    let mut iv: [u8; IV_LEN] = iv.try_into().map_err(|_| None)?;
    GcmParams::new(&mut iv, aad, TAG_BITS.into())
        .and_then(|params| session.decrypt(&Mechanism::AesGcm(params), key, body))
        .map_err(Some)
}

impl Pkcs11Seal {
    /// Opens the token and logs in. With `create_key`, generates the key if the token has none
    /// by that label (used by `init` and `seal migrate`); otherwise a missing key is
    /// [`SealError::HsmKeyMissing`]. A wrong PIN is [`SealError::WrongPin`].
    ///
    /// A device-level failure (anything reported as [`SealError::Hsm`]) is tried again a few
    /// times, the library restarted in between: SoftHSM2 tokens shared by several processes
    /// answer a concurrent start with `CKR_GENERAL_ERROR` or leave the token out of the slot
    /// list, and network HSMs report brief faults the same way. A wrong PIN and a missing key
    /// are answers, not faults, and are never retried (a PIN retry would count against the
    /// token's attempts).
    pub fn open(settings: &Pkcs11Settings, create_key: bool) -> Result<Self, SealError> {
        let module = module(&settings.module)?;
        let mut wait = OPEN_RETRY_WAIT;
        let mut retries = 0;
        let mut first_fault = None;
        loop {
            match Self::open_once(&module, settings, create_key) {
                Err(SealError::Hsm(e)) if retries < OPEN_RETRIES => {
                    tracing::debug!(token = %settings.token, error = %e, wait_ms = wait.as_millis() as u64, "cannot open the HSM seal; trying again");
                    first_fault.get_or_insert(e);
                    std::thread::sleep(wait);
                    wait *= 2;
                    retries += 1;
                    // SoftHSM2 lists only the tokens it could read when it was initialised.
                    module.restart()?;
                }
                outcome => {
                    // A failure ends with its own one-line error; a success after faults is
                    // worth one warning, since the HSM needed watching.
                    if let (Ok(_), Some(first)) = (&outcome, &first_fault) {
                        tracing::warn!(token = %settings.token, attempts = retries + 1, first_error = %first, "opened the HSM seal after device-level failures");
                    }
                    return outcome;
                }
            }
        }
    }

    fn open_once(
        module: &Arc<Module>,
        settings: &Pkcs11Settings,
        create_key: bool,
    ) -> Result<Self, SealError> {
        let calls = module.shared()?;
        let slot = match find_slot(&module.ctx, &settings.token) {
            Ok(s) => s,
            Err(CkError::Pkcs11(RvError::TokenNotPresent, _)) => {
                return Err(token_absent(&settings.token));
            }
            Err(e) => return Err(hsm("cannot list slots", e)),
        };
        let session = module
            .ctx
            .open_rw_session_no_drop(slot)
            .map_err(|e| hsm("C_OpenSession", e))?;
        let missing = || SealError::HsmKeyMissing {
            token: settings.token.clone(),
            label: settings.key_label.clone(),
        };
        let opened = login(&session, &settings.pin, &settings.token)
            .and_then(|()| find_key(&session, &settings.token, &settings.key_label))
            .and_then(|found| match found {
                Some(k) => Ok(k),
                None if create_key => generate_key(&session, settings),
                None => Err(missing()),
            })
            .and_then(
                |key| match gcm_encrypt(&session, key, PROBE_AAD, PROBE_PLAINTEXT)? {
                    Ok(probe) => Ok((key, probe)),
                    Err(CkError::Pkcs11(RvError::KeyFunctionNotPermitted, _)) => Err(missing()),
                    Err(e) => Err(hsm("AES-GCM", e)),
                },
            );
        let (key, probe) = match opened {
            Ok(v) => v,
            Err(e) => {
                let _ = session.close();
                return Err(e);
            }
        };
        drop(calls);
        let seal = Self {
            module: module.clone(),
            token: settings.token.clone(),
            key_label: settings.key_label.clone(),
            pin: settings.pin.clone(),
            mode: settings.mode,
            probe,
            live: Mutex::new(Live {
                slot,
                key,
                generation: 0,
                gone: false,
                backoff: Duration::ZERO,
                retry_at: None,
            }),
            pool: Mutex::new(Vec::new()),
        };
        seal.put_back(0, session);
        Ok(seal)
    }

    fn missing(&self) -> SealError {
        SealError::HsmKeyMissing {
            token: self.token.clone(),
            label: self.key_label.clone(),
        }
    }

    fn live(&self) -> Result<std::sync::MutexGuard<'_, Live>, SealError> {
        self.live
            .lock()
            .map_err(|_| SealError::Hsm("seal state lock poisoned".into()))
    }

    /// The current generation, slot and key handle; [`SealError::HsmKeyMissing`] once the key
    /// was found gone.
    fn current(&self) -> Result<(u64, Slot, ObjectHandle), SealError> {
        let live = self.live()?;
        if live.gone {
            return Err(self.missing());
        }
        Ok((live.generation, live.slot, live.key))
    }

    /// A pooled session of `generation`, or a new one. The caller holds the module's gate.
    fn take(&self, generation: u64, slot: Slot) -> Result<Session, CkError> {
        if let Ok(mut pool) = self.pool.lock() {
            while let Some((g, s)) = pool.pop() {
                if g == generation {
                    return Ok(s);
                }
                // From before a reconnection: forgotten, never closed (see `Live`).
                drop(s);
            }
        }
        self.module.ctx.open_ro_session_no_drop(slot)
    }

    /// Returns a working session to the pool (or closes it when the pool is full). The caller
    /// does not hold the module's gate.
    fn put_back(&self, generation: u64, session: Session) {
        if !self.live().is_ok_and(|l| l.generation == generation) {
            // From before a reconnection: forgotten, never closed (see `Live`).
            return;
        }
        if let Ok(mut p) = self.pool.lock()
            && p.len() < POOL_SIZE
        {
            p.push((generation, session));
            return;
        }
        if let Ok(_calls) = self.module.shared() {
            let _ = session.close();
        }
    }

    /// Runs `f` with a session and the key. Any failure other than `tag_failure` (a decryption
    /// whose tag does not verify, answered as [`SealError::WrongKey`]) makes the seal reconnect
    /// and try once more; only a reconnection that finds the key gone answers
    /// [`SealError::HsmKeyMissing`].
    fn with_key<T>(
        &self,
        what: &str,
        tag_failure: impl Fn(&CkError) -> bool,
        f: impl Fn(&Session, ObjectHandle) -> Result<Result<T, CkError>, SealError>,
    ) -> Result<T, SealError> {
        let mut reconnected = false;
        loop {
            let (generation, slot, key) = self.current()?;
            let outcome = {
                let _calls = self.module.shared()?;
                match self.take(generation, slot) {
                    Ok(session) => f(&session, key).map(|r| (Some(session), r)),
                    Err(e) => Ok((None, Err(e))),
                }
            };
            let failure = match outcome? {
                (Some(session), Ok(v)) => {
                    self.put_back(generation, session);
                    return Ok(v);
                }
                (Some(session), Err(e)) if tag_failure(&e) => {
                    self.put_back(generation, session);
                    return Err(SealError::WrongKey);
                }
                // The session may be dead: forgotten, not closed.
                (Some(_), Err(e)) => hsm(what, e),
                (None, Err(e)) => hsm("C_OpenSession", e),
                (None, Ok(_)) => return Err(SealError::Hsm("no session".into())),
            };
            if reconnected {
                return Err(failure);
            }
            tracing::warn!(token = %self.token, error = %failure, "HSM call failed; reconnecting before concluding anything");
            self.reconnect(generation)?;
            reconnected = true;
        }
    }

    /// Re-establishes the connection to the key if nobody did since `seen` (a later
    /// generation): find the token (initialising the library again if it is not there), open a
    /// session, log in, find the key by label and check the probe. After a failure, the next
    /// attempt waits out an exponential backoff. The caller does not hold the module's gate.
    fn reconnect(&self, seen: u64) -> Result<(), SealError> {
        let mut live = self.live()?;
        if live.gone {
            return Err(self.missing());
        }
        if live.generation != seen {
            return Ok(());
        }
        if let Some(at) = live.retry_at
            && Instant::now() < at
        {
            return Err(SealError::Hsm(format!(
                "the HSM token {:?} is not reachable; the next attempt is in {} ms",
                self.token,
                at.saturating_duration_since(Instant::now()).as_millis()
            )));
        }
        // Every pooled session belongs to the old connection.
        if let Ok(mut p) = self.pool.lock() {
            p.clear();
        }
        match self.connect_fresh() {
            Ok(Reconnected::Key(slot, key, session)) => {
                live.slot = slot;
                live.key = key;
                live.generation += 1;
                live.backoff = Duration::ZERO;
                live.retry_at = None;
                let generation = live.generation;
                drop(live);
                tracing::info!(token = %self.token, label = %self.key_label, "HSM session re-established; the key is present");
                self.put_back(generation, session);
                Ok(())
            }
            Ok(Reconnected::Absent) => {
                live.gone = true;
                tracing::error!(token = %self.token, label = %self.key_label, "logged in to the HSM token afresh: the key is not there (destroyed, replaced or revoked)");
                Err(self.missing())
            }
            Err(e) => {
                live.backoff = (live.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                live.retry_at = Some(Instant::now() + live.backoff);
                tracing::warn!(token = %self.token, error = %e, backoff_ms = live.backoff.as_millis() as u64, "cannot reach the HSM key; the seal stays as it is");
                Err(e)
            }
        }
    }

    fn connect_fresh(&self) -> Result<Reconnected, SealError> {
        let found = {
            let _calls = self.module.shared()?;
            find_slot(&self.module.ctx, &self.token)
        };
        let slot = match found {
            Ok(s) => s,
            // A library that was finalised, or one that only looks for tokens when it is
            // initialised: start it again and look once more.
            Err(CkError::Pkcs11(RvError::CryptokiNotInitialized | RvError::TokenNotPresent, _)) => {
                self.module.restart()?;
                let _calls = self.module.shared()?;
                find_slot(&self.module.ctx, &self.token).map_err(|_| token_absent(&self.token))?
            }
            Err(e) => return Err(hsm("cannot list slots", e)),
        };
        let _calls = self.module.shared()?;
        let session = self
            .module
            .ctx
            .open_ro_session_no_drop(slot)
            .map_err(|e| hsm("C_OpenSession", e))?;
        let found = login(&session, &self.pin, &self.token)
            .and_then(|()| find_key(&session, &self.token, &self.key_label));
        let verdict = match found {
            Ok(Some(key)) => match gcm_decrypt(&session, key, PROBE_AAD, &self.probe) {
                Ok(_) => return Ok(Reconnected::Key(slot, key, session)),
                // A key under the label that does not open the probe is not our key; one that
                // may no longer decrypt has been revoked. Either way the key that sealed is gone.
                Err(None) => Ok(Reconnected::Absent),
                Err(Some(e))
                    if is_tag_failure(&e)
                        || matches!(e, CkError::Pkcs11(RvError::KeyFunctionNotPermitted, _)) =>
                {
                    Ok(Reconnected::Absent)
                }
                Err(Some(e)) => Err(hsm("AES-GCM", e)),
            },
            // Logged in, and nothing by that label: the key is gone.
            Ok(None) => Ok(Reconnected::Absent),
            Err(e) => Err(e),
        };
        let _ = session.close();
        verdict
    }
}

fn generate_key(session: &Session, settings: &Pkcs11Settings) -> Result<ObjectHandle, SealError> {
    let mut template = key_template(&settings.key_label);
    template.extend([
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::ValueLen(32.into()),
    ]);
    let key = session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|e| hsm("C_GenerateKey", e))?;
    tracing::info!(token = %settings.token, label = %settings.key_label, "created a non-extractable AES-256 key in the HSM");
    Ok(key)
}

impl Seal for Pkcs11Seal {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn descriptor(&self) -> String {
        format!(
            "pkcs11;mode={};token={};key={}",
            self.mode.as_str(),
            self.token,
            self.key_label
        )
    }

    fn encrypt(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.with_key(
            "AES-GCM encrypt",
            |_: &CkError| false,
            |s, key| gcm_encrypt(s, key, aad, plaintext),
        )
    }

    fn decrypt(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < IV_LEN + 16 {
            return Err(SealError::WrongKey);
        }
        self.with_key("AES-GCM decrypt", is_tag_failure, |s, key| {
            Ok(gcm_decrypt(s, key, aad, sealed).map_err(|e| {
                e.unwrap_or(CkError::Pkcs11(
                    RvError::EncryptedDataLenRange,
                    cryptoki::context::Function::Decrypt,
                ))
            }))
        })
        .map(Zeroizing::new)
    }

    /// Finds the key by label and decrypts the probe with it: present, the same key, and
    /// usable. Anything else reconnects (fresh session and login) before it concludes.
    fn check(&self) -> Result<(), SealError> {
        let (generation, slot, key) = self.current()?;
        let verified = {
            let _calls = self.module.shared()?;
            self.take(generation, slot).ok().filter(|session| {
                matches!(
                    find_key(session, &self.token, &self.key_label),
                    Ok(Some(found)) if found == key
                ) && gcm_decrypt(session, key, PROBE_AAD, &self.probe).is_ok()
            })
        };
        match verified {
            Some(session) => {
                self.put_back(generation, session);
                Ok(())
            }
            // A reconnection logs in afresh, finds the key by label and checks the probe (or
            // another thread's reconnection just did).
            None => self.reconnect(generation),
        }
    }

    fn per_deposit(&self) -> bool {
        self.mode == Pkcs11Mode::PerDeposit
    }
}

/// Deletes the key object (tests, and deliberate crypto-shredding by an operator).
pub fn destroy_key(settings: &Pkcs11Settings) -> Result<(), SealError> {
    let seal = Pkcs11Seal::open(settings, false)?;
    let (_, slot, key) = seal.current()?;
    let _calls = seal.module.shared()?;
    let session = seal
        .module
        .ctx
        .open_rw_session(slot)
        .map_err(|e| hsm("C_OpenSession", e))?;
    session
        .destroy_object(key)
        .map_err(|e| hsm("C_DestroyObject", e))
}
