//! The PKCS#11 seal: a non-extractable AES-256 key inside an HSM token wraps the keyring (mode
//! `keyring`) or, additionally, every data key (mode `per-deposit`). The module is loaded at run
//! time with cryptoki; every call blocks, so callers run them on a blocking thread. Sessions are
//! kept in a small pool: PKCS#11 sessions are not thread-safe, so each call takes one out and
//! puts it back.
//!
//! The key is looked up by label on every [`Seal::check`]; once it is gone, every operation
//! fails with [`SealError::HsmKeyMissing`] and the server seals itself.

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
use std::sync::{Mutex, OnceLock};
use zeroize::Zeroizing;

const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;
/// Sessions kept open for reuse; more are opened under load and closed when returned.
const POOL_SIZE: usize = 8;

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

/// One initialised context per module path: PKCS#11 allows `C_Initialize` once per process, and
/// a seal migration may open two keys through the same module.
fn context(module: &Path) -> Result<Pkcs11, SealError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let map = CONTEXTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| SealError::Hsm("context lock poisoned".into()))?;
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        SealError::Hsm(format!(
            "cannot load the PKCS#11 module {}: {e}",
            module.display()
        ))
    })?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| SealError::Hsm(format!("C_Initialize: {e}")))?;
    map.insert(module.to_owned(), ctx.clone());
    Ok(ctx)
}

fn find_slot(ctx: &Pkcs11, token: &str) -> Result<Slot, SealError> {
    for slot in ctx
        .get_slots_with_token()
        .map_err(|e| SealError::Hsm(format!("cannot list slots: {e}")))?
    {
        if let Ok(info) = ctx.get_token_info(slot)
            && info.label().trim_end() == token
        {
            return Ok(slot);
        }
    }
    Err(SealError::Hsm(format!("no token labelled {token:?}")))
}

fn hsm(what: &str, e: CkError) -> SealError {
    SealError::Hsm(format!("{what}: {e}"))
}

pub struct Pkcs11Seal {
    ctx: Pkcs11,
    slot: Slot,
    token: String,
    key_label: String,
    mode: Pkcs11Mode,
    pool: Mutex<Vec<Session>>,
    key: Mutex<Option<ObjectHandle>>,
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

impl Pkcs11Seal {
    /// Opens the token and logs in. With `create_key`, generates the key if the token has none
    /// by that label (used by `init` and `seal migrate`); otherwise a missing key is
    /// [`SealError::HsmKeyMissing`]. A wrong PIN is [`SealError::WrongPin`].
    pub fn open(settings: &Pkcs11Settings, create_key: bool) -> Result<Self, SealError> {
        let ctx = context(&settings.module)?;
        let slot = find_slot(&ctx, &settings.token)?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| hsm("C_OpenSession", e))?;
        let pin = AuthPin::new(settings.pin.as_str().into());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                return Err(SealError::WrongPin {
                    token: settings.token.clone(),
                });
            }
            Err(e) => return Err(hsm("C_Login", e)),
        }
        let seal = Self {
            ctx,
            slot,
            token: settings.token.clone(),
            key_label: settings.key_label.clone(),
            mode: settings.mode,
            pool: Mutex::new(Vec::new()),
            key: Mutex::new(None),
        };
        let key = match seal.find_key(&session)? {
            Some(k) => k,
            None if create_key => seal.generate_key(&session)?,
            None => return Err(seal.missing()),
        };
        if let Ok(mut k) = seal.key.lock() {
            *k = Some(key);
        }
        seal.put_back(session);
        Ok(seal)
    }

    fn missing(&self) -> SealError {
        SealError::HsmKeyMissing {
            token: self.token.clone(),
            label: self.key_label.clone(),
        }
    }

    fn key_template(&self) -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(self.key_label.as_bytes().to_vec()),
        ]
    }

    fn find_key(&self, session: &Session) -> Result<Option<ObjectHandle>, SealError> {
        let found = session
            .find_objects(&self.key_template())
            .map_err(|e| hsm("C_FindObjects", e))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(SealError::Hsm(format!(
                "token {:?} holds several keys labelled {:?}",
                self.token, self.key_label
            ))),
        }
    }

    fn generate_key(&self, session: &Session) -> Result<ObjectHandle, SealError> {
        let mut template = self.key_template();
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
        tracing::info!(token = %self.token, label = %self.key_label, "created a non-extractable AES-256 key in the HSM");
        Ok(key)
    }

    fn take(&self) -> Result<Session, SealError> {
        if let Some(s) = self.pool.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(s);
        }
        self.ctx
            .open_ro_session(self.slot)
            .map_err(|e| hsm("C_OpenSession", e))
    }

    fn put_back(&self, session: Session) {
        if let Ok(mut p) = self.pool.lock()
            && p.len() < POOL_SIZE
        {
            p.push(session);
        }
    }

    fn key(&self) -> Result<ObjectHandle, SealError> {
        self.key
            .lock()
            .ok()
            .and_then(|k| *k)
            .ok_or_else(|| self.missing())
    }

    /// Runs `f` with a pooled session and the key; a vanished key is reported as missing.
    fn with_key<T>(
        &self,
        f: impl FnOnce(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, SealError> {
        let key = self.key()?;
        let session = self.take()?;
        let r = f(&session, key);
        match r {
            Ok(v) => {
                self.put_back(session);
                Ok(v)
            }
            // Gone, or no longer allowed to encrypt/decrypt (revoked by an HSM administrator).
            Err(CkError::Pkcs11(
                RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::KeyFunctionNotPermitted,
                _,
            )) => {
                if let Ok(mut k) = self.key.lock() {
                    *k = None;
                }
                Err(self.missing())
            }
            // A GCM tag that does not verify: tokens report it as invalid data or, like
            // SoftHSM2, as a general failure of the operation.
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError
                | RvError::FunctionFailed,
                _,
            )) => {
                self.put_back(session);
                Err(SealError::WrongKey)
            }
            Err(e) => Err(hsm("AES-GCM", e)),
        }
    }
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
        let mut iv = [0u8; IV_LEN];
        crypto::random_bytes(&mut iv).map_err(|_| SealError::Random)?;
        let nonce = iv;
        let ct = self.with_key(|s, key| {
            let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
            s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
        })?;
        let mut out = Vec::with_capacity(IV_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn decrypt(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < IV_LEN + 16 {
            return Err(SealError::WrongKey);
        }
        let (iv, body) = sealed.split_at(IV_LEN);
        let mut iv: [u8; IV_LEN] = iv.try_into().map_err(|_| SealError::WrongKey)?;
        self.with_key(|s, key| {
            let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
            s.decrypt(&Mechanism::AesGcm(params), key, body)
        })
        .map(Zeroizing::new)
    }

    fn check(&self) -> Result<(), SealError> {
        let session = self.take()?;
        let found = self.find_key(&session);
        self.put_back(session);
        match found? {
            Some(handle) if Some(handle) == self.key.lock().ok().and_then(|k| *k) => {
                // Present; and still usable (a revoked key may stay in the token).
                self.encrypt(b"keysafe/seal-check/v1", b"probe").map(|_| ())
            }
            Some(_) | None => {
                // Gone, or replaced by a different object under the same label: either way the
                // key that wrapped the keyring is no longer there.
                if let Ok(mut k) = self.key.lock() {
                    *k = None;
                }
                Err(self.missing())
            }
        }
    }

    fn per_deposit(&self) -> bool {
        self.mode == Pkcs11Mode::PerDeposit
    }
}

/// Deletes the key object (tests, and deliberate crypto-shredding by an operator).
pub fn destroy_key(settings: &Pkcs11Settings) -> Result<(), SealError> {
    let seal = Pkcs11Seal::open(settings, false)?;
    let key = seal.key()?;
    let session = seal
        .ctx
        .open_rw_session(seal.slot)
        .map_err(|e| hsm("C_OpenSession", e))?;
    session
        .destroy_object(key)
        .map_err(|e| hsm("C_DestroyObject", e))
}
