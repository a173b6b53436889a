//! The KMS operations over a [`KeyBackend`], with Hadoop's server-side caches
//! (`CachingKeyProvider`) and pre-generated EEK queues. Authorisation happens in `http`.

use crate::backend::{
    BackendError, KeyBackend, KeyMeta, KeyVersionRecord, split_version_name, version_name,
};
use crate::config::{CacheConfig, EekQueueConfig};
use crate::crypto::{IV_LEN, eek_transform, random_bytes};
use crate::error::{KmsError, KmsResult};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

pub const DEFAULT_CIPHER: &str = "AES/CTR/NoPadding";
pub const DEFAULT_BITLENGTH: u32 = 128;
/// How many times a rollover re-reads and retries when another gateway rolled first.
const ROLL_RETRIES: usize = 8;

/// An encrypted encryption key as the client gets it.
#[derive(Debug, Clone)]
pub struct Eek {
    pub key_name: String,
    pub version_name: String,
    pub iv: [u8; IV_LEN],
    pub material: Vec<u8>,
}

/// `KeyProvider.Metadata` plus the number of versions.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub meta: KeyMeta,
    pub versions: u32,
}

impl Metadata {
    /// The key's metadata as its current version carries it.
    pub fn of(current: &KeyVersionRecord) -> Self {
        Self {
            meta: current.meta.clone(),
            versions: current.version + 1,
        }
    }
}

/// What a create request asks for.
#[derive(Default)]
pub struct CreateRequest {
    pub name: String,
    pub cipher: Option<String>,
    pub length: Option<u32>,
    pub material: Option<Zeroizing<Vec<u8>>>,
    pub description: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

type Cached<T> = Mutex<HashMap<String, (Instant, T)>>;

pub struct Kms {
    backend: Arc<dyn KeyBackend>,
    cache: CacheConfig,
    current: Cached<Arc<KeyVersionRecord>>,
    versions: Cached<Arc<KeyVersionRecord>>,
    metadata: Cached<Metadata>,
    queue_cfg: EekQueueConfig,
    queues: Mutex<HashMap<String, EekQueue>>,
    /// The key names as last listed, for batch metadata requests (`cache.listing_timeout`).
    listing: Mutex<Option<(Instant, Arc<HashSet<String>>)>>,
}

#[derive(Default)]
struct EekQueue {
    items: VecDeque<Eek>,
    refilling: bool,
    /// Bumped on drain so an in-flight refill does not put stale EEKs back.
    epoch: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn cache_get<T: Clone>(c: &Cached<T>, k: &str, ttl: Duration) -> Option<T> {
    let g = lock(c);
    g.get(k)
        .filter(|(at, _)| at.elapsed() < ttl)
        .map(|(_, v)| v.clone())
}

/// Backend failures as Hadoop errors. What keysafe refused because of the request (too large,
/// malformed) is a final 4xx `IllegalArgumentException`; only an unavailable store is the
/// `IOException` (500) that makes Hadoop's load-balancing client try another gateway.
pub fn backend_err(e: BackendError) -> KmsError {
    match e {
        BackendError::InvalidName(m) => KmsError::illegal(m),
        e @ BackendError::TooLarge(_) => {
            KmsError::illegal(e.to_string()).with_status(http::StatusCode::PAYLOAD_TOO_LARGE)
        }
        e @ BackendError::Rejected(_) => KmsError::illegal(e.to_string()),
        other => KmsError::io(other.to_string()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn check_material(meta: &KeyMeta, m: &[u8]) -> KmsResult<()> {
    if m.len() * 8 != meta.length as usize {
        return Err(KmsError::io(format!(
            "Wrong key length. Required {}, but got {}",
            meta.length,
            m.len() * 8
        )));
    }
    Ok(())
}

fn new_material(meta: &KeyMeta) -> KmsResult<Zeroizing<Vec<u8>>> {
    if !matches!(meta.length, 128 | 192 | 256) {
        return Err(KmsError::illegal(format!(
            "Wrong keysize: must be equal to 128, 192 or 256, got {}",
            meta.length
        )));
    }
    random_bytes(meta.length as usize / 8)
}

impl Kms {
    pub fn new(
        backend: Arc<dyn KeyBackend>,
        cache: CacheConfig,
        queue_cfg: EekQueueConfig,
    ) -> Self {
        Self {
            backend,
            cache,
            current: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
            metadata: Mutex::new(HashMap::new()),
            queue_cfg,
            queues: Mutex::new(HashMap::new()),
            listing: Mutex::new(None),
        }
    }

    pub fn backend(&self) -> &Arc<dyn KeyBackend> {
        &self.backend
    }

    pub async fn create(&self, req: CreateRequest) -> KmsResult<KeyVersionRecord> {
        if req.name.is_empty() {
            return Err(KmsError::illegal("Parameter 'name' cannot be empty"));
        }
        if req.name.chars().any(|c| c.is_uppercase()) {
            return Err(KmsError::illegal(format!(
                "Uppercase key names are unsupported: {}",
                req.name
            )));
        }
        let meta = KeyMeta {
            cipher: req.cipher.unwrap_or_else(|| DEFAULT_CIPHER.to_owned()),
            length: req.length.filter(|l| *l != 0).unwrap_or(DEFAULT_BITLENGTH),
            description: req.description,
            attributes: req.attributes,
            created: now_ms(),
        };
        let material = match req.material {
            Some(m) => {
                check_material(&meta, &m)?;
                m
            }
            None => new_material(&meta)?,
        };
        let rec = KeyVersionRecord {
            name: req.name.clone(),
            version: 0,
            material,
            meta,
        };
        match self.backend.create(&rec).await {
            Ok(()) => {}
            Err(BackendError::AlreadyExists) => {
                return Err(KmsError::io(format!(
                    "Key {} already exists in keysafe",
                    req.name
                )));
            }
            Err(e) => return Err(backend_err(e)),
        }
        self.invalidate(&req.name);
        Ok(rec)
    }

    pub async fn delete(&self, name: &str) -> KmsResult<()> {
        let r = self.backend.delete(name).await;
        self.invalidate(name);
        lock(&self.queues).remove(name);
        match r {
            Ok(()) => Ok(()),
            Err(BackendError::NotFound) => Err(KmsError::io(format!(
                "Key {name} does not exist in keysafe"
            ))),
            Err(e) => Err(backend_err(e)),
        }
    }

    /// Appends a version after whatever is current in the backend (never a cached view), retrying
    /// when another gateway rolled at the same moment.
    pub async fn roll(
        &self,
        name: &str,
        material: Option<Zeroizing<Vec<u8>>>,
    ) -> KmsResult<KeyVersionRecord> {
        for _ in 0..ROLL_RETRIES {
            let cur = self
                .backend
                .current(name)
                .await
                .map_err(backend_err)?
                .ok_or_else(|| KmsError::io(format!("Key {name} not found")))?;
            let material = match &material {
                Some(m) => {
                    check_material(&cur.meta, m)?;
                    m.clone()
                }
                None => new_material(&cur.meta)?,
            };
            let rec = KeyVersionRecord {
                name: name.to_owned(),
                version: cur.version + 1,
                material,
                meta: cur.meta.clone(),
            };
            match self.backend.roll(&rec).await {
                Ok(()) => {
                    self.invalidate(name);
                    return Ok(rec);
                }
                Err(BackendError::Conflict) => continue,
                Err(BackendError::NotFound) => {
                    return Err(KmsError::io(format!("Key {name} not found")));
                }
                Err(e) => return Err(backend_err(e)),
            }
        }
        Err(KmsError::io(format!(
            "Key {name}: too many concurrent rollovers, try again"
        )))
    }

    /// Drops every cached view of the key and its EEK queue (`_invalidatecache`, roll, delete).
    pub fn invalidate(&self, name: &str) {
        *lock(&self.listing) = None;
        lock(&self.current).remove(name);
        lock(&self.metadata).remove(name);
        let prefix = format!("{name}@");
        lock(&self.versions).retain(|k, _| {
            !(k.starts_with(&prefix) && k[prefix.len()..].bytes().all(|b| b.is_ascii_digit()))
        });
        self.drain(name);
    }

    pub fn drain(&self, name: &str) {
        let mut q = lock(&self.queues);
        if let Some(q) = q.get_mut(name) {
            q.items.clear();
            q.epoch += 1;
        }
    }

    pub async fn current(&self, name: &str) -> KmsResult<Option<Arc<KeyVersionRecord>>> {
        if self.cache.enable
            && let Some(r) = cache_get(&self.current, name, self.cache.current_key_timeout)
        {
            return Ok(Some(r));
        }
        self.read_current(name).await
    }

    /// The metadata of a key. Both this and [`Self::current`] come from one read of the key's
    /// current version, so a miss of either cache refreshes both.
    pub async fn metadata(&self, name: &str) -> KmsResult<Option<Metadata>> {
        if self.cache.enable
            && let Some(m) = cache_get(&self.metadata, name, self.cache.timeout)
        {
            return Ok(Some(m));
        }
        Ok(self.read_current(name).await?.map(|r| Metadata::of(&r)))
    }

    /// Reads the current version from the backend and remembers it and its metadata.
    async fn read_current(&self, name: &str) -> KmsResult<Option<Arc<KeyVersionRecord>>> {
        let r = self.backend.current(name).await.map_err(backend_err)?;
        let r = r.map(Arc::new);
        if let (true, Some(r)) = (self.cache.enable, &r) {
            let now = Instant::now();
            lock(&self.current).insert(name.to_owned(), (now, r.clone()));
            lock(&self.metadata).insert(name.to_owned(), (now, Metadata::of(r)));
        }
        Ok(r)
    }

    pub async fn names(&self) -> KmsResult<Vec<String>> {
        self.backend.names().await.map_err(backend_err)
    }

    /// The key names, listed at most once per `cache.listing_timeout` (created or deleted
    /// through this gateway: at once).
    pub async fn names_snapshot(&self) -> KmsResult<Arc<HashSet<String>>> {
        if self.cache.enable
            && let Some((at, l)) = lock(&self.listing).as_ref()
            && at.elapsed() < self.cache.listing_timeout
        {
            return Ok(l.clone());
        }
        let l: Arc<HashSet<String>> = Arc::new(self.names().await?.into_iter().collect());
        *lock(&self.listing) = Some((Instant::now(), l.clone()));
        Ok(l)
    }

    /// A version by its `name@n`, or None (also for malformed version names).
    pub async fn key_version(&self, vn: &str) -> KmsResult<Option<Arc<KeyVersionRecord>>> {
        let Some((name, n)) = split_version_name(vn) else {
            return Ok(None);
        };
        if self.cache.enable
            && let Some(r) = cache_get(&self.versions, vn, self.cache.timeout)
        {
            return Ok(Some(r));
        }
        let r = self.backend.version(name, n).await.map_err(backend_err)?;
        let r = r.filter(|r| r.name == name && r.version == n).map(Arc::new);
        if let (true, Some(r)) = (self.cache.enable, &r) {
            lock(&self.versions).insert(vn.to_owned(), (Instant::now(), r.clone()));
        }
        Ok(r)
    }

    pub async fn versions(&self, name: &str) -> KmsResult<Vec<Arc<KeyVersionRecord>>> {
        let Some(cur) = self.current(name).await? else {
            return Ok(vec![]);
        };
        let mut out = Vec::with_capacity(cur.version as usize + 1);
        for n in 0..cur.version {
            if let Some(v) = self.key_version(&version_name(name, n)).await? {
                out.push(v);
            }
        }
        out.push(cur);
        Ok(out)
    }

    /// `verifyKeyVersionBelongsToKey`.
    pub async fn version_of_key(&self, vn: &str, name: &str) -> KmsResult<Arc<KeyVersionRecord>> {
        let kv = self
            .key_version(vn)
            .await?
            .ok_or_else(|| KmsError::illegal(format!("'{vn}' not found")))?;
        if kv.name != name {
            return Err(KmsError::illegal(format!(
                "KeyVersion '{vn}' does not belong to the key '{name}'"
            )));
        }
        Ok(kv)
    }

    fn make_eek(key: &KeyVersionRecord, iv: [u8; IV_LEN], dek: &[u8]) -> KmsResult<Eek> {
        Ok(Eek {
            key_name: key.name.clone(),
            version_name: key.version_name(),
            iv,
            material: eek_transform(&key.material, &iv, dek)?.to_vec(),
        })
    }

    fn fresh_eek(key: &KeyVersionRecord) -> KmsResult<Eek> {
        let dek = random_bytes(key.material.len())?;
        let ivb = random_bytes(IV_LEN)?;
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&ivb);
        Self::make_eek(key, iv, &dek)
    }

    async fn current_or_io(&self, name: &str) -> KmsResult<Arc<KeyVersionRecord>> {
        self.current(name)
            .await?
            .ok_or_else(|| Self::no_such_key(name))
    }

    /// What Hadoop's KMS answers for an operation on a key that does not exist.
    pub fn no_such_key(name: &str) -> KmsError {
        KmsError::io(format!("java.io.IOException: Key {name} not found"))
    }

    /// `num` EEKs under `key`, the current version of `name` (only existing keys get a
    /// queue), from the queue when it has them.
    pub fn generate_eeks(
        self: &Arc<Self>,
        name: &str,
        key: Arc<KeyVersionRecord>,
        num: usize,
    ) -> KmsResult<Vec<Eek>> {
        let mut out = Vec::with_capacity(num);
        let mut need_refill = false;
        if self.queue_cfg.size > 0 {
            let mut qs = lock(&self.queues);
            let q = qs.entry(name.to_owned()).or_default();
            while out.len() < num {
                match q.items.pop_front() {
                    Some(e) => out.push(e),
                    None => break,
                }
            }
            let low = (self.queue_cfg.size as f64 * self.queue_cfg.low_watermark) as usize;
            if q.items.len() <= low && !q.refilling {
                q.refilling = true;
                need_refill = true;
            }
        }
        if out.len() < num {
            while out.len() < num {
                out.push(Self::fresh_eek(&key)?);
            }
        }
        if need_refill {
            let me = self.clone();
            let name = name.to_owned();
            tokio::spawn(async move { me.refill(&name).await });
        }
        Ok(out)
    }

    async fn refill(&self, name: &str) {
        let epoch = lock(&self.queues).get(name).map_or(0, |q| q.epoch);
        let filled = match self.current(name).await {
            Ok(Some(key)) => {
                let have = lock(&self.queues).get(name).map_or(0, |q| q.items.len());
                let want = self.queue_cfg.size.saturating_sub(have);
                (0..want)
                    .map(|_| Self::fresh_eek(&key))
                    .collect::<KmsResult<Vec<_>>>()
            }
            _ => Ok(vec![]),
        };
        let mut qs = lock(&self.queues);
        if let Some(q) = qs.get_mut(name) {
            q.refilling = false;
            if q.epoch == epoch
                && let Ok(v) = filled
            {
                q.items.extend(v);
            }
        }
    }

    /// How many EEKs are queued for `name` (for tests and metrics).
    pub fn queued(&self, name: &str) -> usize {
        lock(&self.queues).get(name).map_or(0, |q| q.items.len())
    }

    pub fn decrypt(kv: &KeyVersionRecord, iv: &[u8], eek: &[u8]) -> KmsResult<Zeroizing<Vec<u8>>> {
        eek_transform(&kv.material, iv, eek)
    }

    /// Decrypts under `kv` and re-encrypts under the current version, same IV.
    pub async fn reencrypt(&self, kv: &KeyVersionRecord, iv: &[u8], eek: &[u8]) -> KmsResult<Eek> {
        let dek = eek_transform(&kv.material, iv, eek)?;
        let cur = self.current_or_io(&kv.name).await?;
        let mut ivb = [0u8; IV_LEN];
        ivb.copy_from_slice(iv);
        Self::make_eek(&cur, ivb, &dek)
    }
}

#[cfg(test)]
mod tests {
    //! Pure unit tests over the in-memory backend (no server): caches and queues.
    use super::*;
    use crate::backend::MemoryBackend;

    fn kms(size: usize) -> Arc<Kms> {
        Arc::new(Kms::new(
            Arc::new(MemoryBackend::default()),
            CacheConfig::default(),
            EekQueueConfig {
                size,
                low_watermark: 0.3,
            },
        ))
    }

    async fn current(k: &Kms, name: &str) -> Arc<KeyVersionRecord> {
        k.current(name).await.unwrap().unwrap()
    }

    fn req(name: &str) -> CreateRequest {
        CreateRequest {
            name: name.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn roll_drains_queue_and_new_eeks_use_new_version() {
        let k = kms(10);
        k.create(req("k")).await.unwrap();
        let e = k.generate_eeks("k", current(&k, "k").await, 1).unwrap();
        assert_eq!(e[0].version_name, "k@0");
        // Wait for the background refill.
        for _ in 0..100 {
            if k.queued("k") > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(k.queued("k") > 0);
        k.roll("k", None).await.unwrap();
        assert_eq!(k.queued("k"), 0, "drained on roll");
        let e = k.generate_eeks("k", current(&k, "k").await, 3).unwrap();
        assert!(e.iter().all(|e| e.version_name == "k@1"));
    }

    /// Two gateways over one store, with the default caches.
    fn two_gateways() -> (Kms, Kms) {
        let backend = Arc::new(MemoryBackend::default());
        let a = Kms::new(
            backend.clone(),
            CacheConfig::default(),
            EekQueueConfig::default(),
        );
        (
            a,
            Kms::new(backend, CacheConfig::default(), EekQueueConfig::default()),
        )
    }

    #[tokio::test]
    async fn caches_serve_stale_until_invalidated() {
        let (a, b) = two_gateways();
        a.create(req("k")).await.unwrap();
        assert_eq!(b.current("k").await.unwrap().unwrap().version, 0);
        a.roll("k", None).await.unwrap();
        // b still has its cached current version (Hadoop's 30 s current-key cache) ...
        assert_eq!(b.current("k").await.unwrap().unwrap().version, 0);
        b.invalidate("k");
        // ... until its cache is invalidated.
        assert_eq!(b.current("k").await.unwrap().unwrap().version, 1);
        // A roll through b appends after a's version, whatever b had cached.
        b.roll("k", None).await.unwrap();
        assert_eq!(a.roll("k", None).await.unwrap().version, 3);
    }

    #[tokio::test]
    async fn one_read_fills_the_current_version_and_the_metadata_cache() {
        let (a, b) = two_gateways();
        a.create(req("k")).await.unwrap();
        // A metadata miss remembers the current version it read ...
        assert_eq!(b.metadata("k").await.unwrap().unwrap().versions, 1);
        a.roll("k", None).await.unwrap();
        assert_eq!(b.current("k").await.unwrap().unwrap().version, 0);
        // ... and a current-version miss the metadata.
        b.invalidate("k");
        assert_eq!(b.current("k").await.unwrap().unwrap().version, 1);
        a.roll("k", None).await.unwrap();
        assert_eq!(b.metadata("k").await.unwrap().unwrap().versions, 2);
        b.invalidate("k");
        assert_eq!(b.metadata("k").await.unwrap().unwrap().versions, 3);
    }

    #[tokio::test]
    async fn every_version_carries_the_key_metadata() {
        // The key ACL check reads the metadata from whichever version a request names.
        let k = kms(0);
        let mut r = req("m");
        r.description = Some("zone key".into());
        r.attributes.insert("key.acl.name".into(), "zone".into());
        k.create(r).await.unwrap();
        k.roll("m", None).await.unwrap();
        k.roll("m", None).await.unwrap();
        let first = k.key_version("m@0").await.unwrap().unwrap().meta.clone();
        assert_eq!(first.attributes["key.acl.name"], "zone");
        for vn in ["m@1", "m@2"] {
            let meta = k.key_version(vn).await.unwrap().unwrap().meta.clone();
            assert_eq!(meta.attributes, first.attributes);
            assert_eq!(meta.description, first.description);
            assert_eq!(
                (meta.cipher, meta.length),
                (first.cipher.clone(), first.length)
            );
        }
    }

    #[tokio::test]
    async fn create_rules() {
        let k = kms(0);
        assert_eq!(
            k.create(req("Upper")).await.unwrap_err().class,
            crate::error::JavaClass::IllegalArgument
        );
        assert_eq!(
            k.create(req("")).await.unwrap_err().class,
            crate::error::JavaClass::IllegalArgument
        );
        let mut r = req("m");
        r.length = Some(256);
        r.material = Some(Zeroizing::new(vec![1; 16]));
        let e = k.create(r).await.unwrap_err();
        assert_eq!(e.message, "Wrong key length. Required 256, but got 128");
        k.create(req("k")).await.unwrap();
        let e = k.create(req("k")).await.unwrap_err();
        assert_eq!(e.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(k.current("k").await.unwrap().unwrap().material.len(), 16);
    }
}
