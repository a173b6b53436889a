//! Fixtures the fuzz targets share: one tokio runtime per process, scratch directories on a
//! memory file system, and fixed key material so that targets can sign or encrypt what they
//! then feed to a parser (a fuzzer cannot forge a MAC, so the targets that check one make
//! valid ones themselves and let the fuzzer choose what is inside).

use std::path::PathBuf;

/// Splits an input into its natural form or a structured one: a leading `0x00` byte means the
/// rest is the raw format the parser reads (so seeds can be written by hand: `printf '\0'` and
/// the file), anything else is decoded with `arbitrary` into the target's structured input.
pub fn raw_or<T: for<'a> arbitrary::Arbitrary<'a>>(data: &[u8]) -> Result<&[u8], Option<T>> {
    match data.split_first() {
        Some((0, rest)) => Ok(rest),
        _ => {
            Err(arbitrary::Arbitrary::arbitrary_take_rest(arbitrary::Unstructured::new(data)).ok())
        }
    }
}
use std::sync::OnceLock;

/// A current-thread runtime for the async parts (the gateway, the domain service).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// A temporary directory, on `/dev/shm` when there is one (targets that write files run
/// thousands of times a second; a disk would make them slow and wear it).
pub fn scratch_dir() -> tempfile::TempDir {
    let base = PathBuf::from("/dev/shm");
    if base.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("keysafe-fuzz-")
            .tempdir_in(&base)
        {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("keysafe-fuzz-")
        .tempdir()
        .expect("a temporary directory")
}

/// A fixed age identity (its recipient is what targets encrypt to):
/// `age1h2dhxz8hztqv5w7dml00kf0t46hfzxrd3tuy697w6e4mrngngskq3g68x0`, so committed seeds made
/// with `age -r` open with it.
pub fn age_identity() -> &'static age::x25519::Identity {
    static ID: OnceLock<age::x25519::Identity> = OnceLock::new();
    ID.get_or_init(|| {
        // A throwaway identity made for the fuzz targets; it protects nothing.
        "AGE-SECRET-KEY-158E2KPQTSM3WZFXQ2QQA0FETV8LZVJ85YETZJ7MWES5RUE2PW64S73ZVDA"
            .parse()
            .expect("a valid age identity")
    })
}

/// A self-signed certificate for a fixed P-256 key, with the given common name and DNS names
/// (names rcgen refuses are dropped). DER.
pub fn certificate(common_name: &str, dns: &[String]) -> Vec<u8> {
    static KEY: OnceLock<rcgen::KeyPair> = OnceLock::new();
    let key = KEY.get_or_init(|| rcgen::KeyPair::generate().expect("a P-256 key"));
    let mut params = rcgen::CertificateParams::default();
    for d in dns {
        if let Ok(name) = rcgen::string::Ia5String::try_from(d.as_str()) {
            params.subject_alt_names.push(rcgen::SanType::DnsName(name));
        }
    }
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    match params.self_signed(key) {
        Ok(c) => c.der().to_vec(),
        Err(_) => Vec::new(),
    }
}

/// A clock the targets move by hand (token rotation and grace windows without sleeping).
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(ms: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(ms))
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn get(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl keysafe_core::Clock for ManualClock {
    fn now(&self) -> keysafe_proto::Timestamp {
        keysafe_proto::Timestamp::from_unix_millis(self.get())
    }
}

/// The real domain service over a real SQLite store (in a scratch directory on tmpfs) with a
/// file seal and a manual clock, and an administrator caller. Built once per process.
pub struct Domain {
    pub service: std::sync::Arc<keysafe_core::Service>,
    pub clock: std::sync::Arc<ManualClock>,
    pub admin: keysafe_core::Caller,
    _dir: tempfile::TempDir,
}

impl Domain {
    pub async fn new(limits: keysafe_core::Limits) -> Self {
        use std::sync::Arc;
        let dir = scratch_dir();
        let seal: Arc<dyn keysafe_core::Seal> = Arc::new(
            keysafe_core::FileSeal::create(&dir.path().join("root.key")).expect("a root key"),
        );
        let settings: keysafe_store::StorageSettings =
            toml::from_str("url = \"sqlite:keysafe.db\"").expect("storage settings");
        let storage = keysafe_store::StorageConfig::from_settings(&settings, dir.path())
            .expect("a storage configuration");
        let store = keysafe_store::create(&storage)
            .await
            .expect("a SQLite store");
        let clock = Arc::new(ManualClock::new(
            keysafe_proto::Timestamp::now().unix_millis(),
        ));
        keysafe_core::Service::initialise_keyring(store.as_ref(), seal.clone(), clock.as_ref())
            .await
            .expect("a keyring");
        let service = Arc::new(
            keysafe_core::Service::open(store, Some(seal), clock.clone(), limits)
                .await
                .expect("the service"),
        );
        let admin_fp =
            keysafe_proto::ClientFingerprint::parse(&"ad".repeat(32)).expect("a fingerprint");
        service
            .bootstrap_admin(
                &admin_fp,
                b"admin certificate",
                keysafe_proto::ClientName::parse("admin").expect("a name"),
                None,
            )
            .await
            .expect("the first administrator");
        let admin = keysafe_core::Caller {
            fingerprint: admin_fp,
            org: keysafe_proto::OrgName::parse(keysafe_core::service::ADMIN_ORG)
                .expect("the administrator organisation"),
            role: keysafe_proto::api::ClientRole::Admin,
        };
        Self {
            service,
            clock,
            admin,
            _dir: dir,
        }
    }

    /// Creates an organisation and registers a client into it with a one-time token; returns
    /// the client's fingerprint and first sequenced token.
    pub async fn register(
        &self,
        org: &str,
        fp_hex: &str,
    ) -> (keysafe_proto::ClientFingerprint, String) {
        let org = keysafe_proto::OrgName::parse(org).expect("an organisation name");
        let _ = self
            .service
            .create_org(
                &self.admin,
                keysafe_proto::api::OrgCreateRequest {
                    name: org.clone(),
                    contacts: vec![],
                },
            )
            .await;
        let t = self
            .service
            .mint_registration_token(&self.admin, &org, None)
            .await
            .expect("a registration token");
        let fp = keysafe_proto::ClientFingerprint::parse(fp_hex).expect("a fingerprint");
        let (_, token) = self
            .service
            .register(
                Some(&fp),
                Some(b"client certificate"),
                keysafe_proto::api::RegisterRequest {
                    org,
                    auth_secret: Some(t.token),
                    name: None,
                    recipient: None,
                },
            )
            .await
            .expect("a registration");
        (fp, token.0)
    }
}
