//! The local deposit cache. Fetched deposit versions are kept on the client host exactly as the
//! server served them (the payload is what the server stores: age ciphertext or bytes the client
//! encrypted itself; never anything this module decrypted), with the version, the encoding header,
//! the server's entity tag and the owner and name, so that:
//!
//! - in the default `revalidate` mode every `get` still asks a server, conditionally
//!   (`If-None-Match` with the entry's tag): `304 Not Modified` costs one round trip and no
//!   payload, and whatever else the server answers (a new version, `not_found` after a revocation
//!   or a deletion) is what the caller gets. A copy is served without a server's word only when no
//!   server can answer;
//! - in the opt-in `ttl` mode an entry younger than `ttl` answers a `get` without a request (a
//!   host that prefers fewer round trips accepts that a new version, a revocation or a deletion
//!   is seen up to `ttl` late); an older one is revalidated as above;
//! - when no server can answer, a `get` may be served from a copy a server confirmed up to
//!   `max_stale` ago (default 24 hours) and the caller is told so
//!   ([`crate::client::Source::Stale`]); past that it fails and says why;
//! - a refusal that stands (`not_found`, `deleted`, `forbidden`, a disabled client) and a put, rm,
//!   undelete or purge by this client drop the entries of that name.
//!
//! An entry's age counts from the last time a server confirmed it: its fetch, or the latest `304`
//! (recorded as the file's modification time, so a confirmation costs no rewrite).
//!
//! Layout: `HOME/cache/` (mode 0700), one file per entry (mode 0600 from creation, written to a
//! temporary file and renamed into place). A file is one JSON header line, a newline, then the
//! payload bytes. Its name is a SHA-256 of (server set, owner, deposit name) plus `.current` or
//! `.vN`, so nothing about the deposit shows in a directory listing. Entries are keyed by the
//! server set too: a home re-pointed at other servers never sees the old servers' copies.

use crate::error::ClientError;
use keysafe_proto::DepositVersion;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The cache directory inside a client home.
pub const CACHE_DIR: &str = "cache";
/// Entries of an older format (without an entity tag) are misses.
const FORMAT: u32 = 2;
const SUFFIX: &str = ".entry";

/// When a cached copy may answer without a server's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Ask a server every time (conditionally); the copy answers only when none can.
    #[default]
    Revalidate,
    /// Within `ttl` the copy answers without asking (a new version, a revocation or a deletion
    /// may be seen up to `ttl` late).
    Ttl,
}

impl CacheMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Revalidate => "revalidate",
            CacheMode::Ttl => "ttl",
        }
    }
}

/// `[cache]` in `client.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Cache fetched deposits at all.
    pub enabled: bool,
    /// `revalidate` (default) or `ttl`.
    pub mode: CacheMode,
    /// `ttl` mode only: within this age a cached copy answers a `get` without asking a server.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// When no server answers, a cached copy up to this age is served (with a warning). Zero
    /// disables serving stale copies.
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: CacheMode::Revalidate,
            ttl: Duration::from_secs(600),
            max_stale: Duration::from_secs(24 * 3600),
        }
    }
}

/// Which entry: a deposit of an owner, at a requested version or the current one.
#[derive(Debug, Clone, Copy)]
pub struct CacheKey<'a> {
    /// The owner's fingerprint.
    pub owner: &'a str,
    pub name: &'a str,
    /// `None`: whatever is current.
    pub version: Option<DepositVersion>,
}

/// The header line of an entry file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EntryMeta {
    pub format: u32,
    /// Identity of the server set the entry came from.
    pub scope: String,
    pub owner: String,
    pub name: String,
    /// The version asked for; absent for "current".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
    /// The version served.
    pub version: u64,
    /// The `x-keysafe-encoding` header, if the server sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// The server's entity tag (without quotes), sent back in `If-None-Match`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Seconds since the Unix epoch when it was fetched.
    pub fetched_at: u64,
    pub size: u64,
}

/// An entry read back.
pub struct CachedEntry {
    pub meta: EntryMeta,
    pub payload: bytes::Bytes,
    /// How long ago a server last confirmed it (a time in the future counts as infinitely old).
    pub age: Duration,
}

impl std::fmt::Debug for CachedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedEntry")
            .field("meta", &self.meta)
            .field(
                "payload",
                &format_args!("[{} bytes redacted]", self.payload.len()),
            )
            .field("age", &self.age)
            .finish()
    }
}

/// One entry as `keysafe cache ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EntryInfo {
    pub owner: String,
    pub name: String,
    pub requested: Option<u64>,
    pub version: u64,
    pub encoding: Option<String>,
    /// Bytes of the payload as cached (what the server served: ciphertext for age deposits).
    pub size: u64,
    /// Seconds since a server last confirmed the entry.
    pub age_s: u64,
    /// Whether this entry belongs to the server set the home uses now.
    pub current_servers: bool,
}

/// Totals for `keysafe status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: u64,
    pub oldest_age_s: Option<u64>,
}

/// The cache of one client home for one server set.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    scope: String,
    pub config: CacheConfig,
}

fn sha256_hex(parts: &[&str]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p.as_bytes());
    }
    hex::encode(ctx.finish().as_ref())
}

fn cache_err(what: &str, path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::Home(format!("cache: {what} {}: {e}", path.display()))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn age_of(fetched_at: u64) -> Duration {
    let now = now_secs();
    if fetched_at > now {
        // A clock that went backwards, or a forged file: never fresh.
        Duration::MAX
    } else {
        Duration::from_secs(now - fetched_at)
    }
}

/// The last time a server confirmed an entry: its fetch time, or a later `304` recorded as the
/// file's modification time. A modification time in the future does not count.
fn confirmed_at(meta: &EntryMeta, path: &Path) -> u64 {
    let touched = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .filter(|t| *t <= now_secs());
    match touched {
        Some(t) if meta.fetched_at <= now_secs() => t.max(meta.fetched_at),
        _ => meta.fetched_at,
    }
}

/// Identity of a server set: the sorted, normalised URLs.
pub fn scope_of(servers: &[String]) -> String {
    let mut urls: Vec<&str> = servers.iter().map(|s| s.trim_end_matches('/')).collect();
    urls.sort_unstable();
    urls.dedup();
    sha256_hex(&urls)[..32].to_owned()
}

impl Cache {
    /// The cache under `home_dir/cache` for a server set.
    pub fn new(home_dir: &Path, servers: &[String], config: CacheConfig) -> Self {
        Self {
            dir: home_dir.join(CACHE_DIR),
            scope: scope_of(servers),
            config,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn stem(&self, owner: &str, name: &str) -> String {
        sha256_hex(&[&self.scope, owner, name])[..40].to_owned()
    }

    fn path(&self, key: &CacheKey<'_>) -> PathBuf {
        let v = match key.version {
            Some(v) => format!("v{v}"),
            None => "current".to_owned(),
        };
        self.dir
            .join(format!("{}.{v}{SUFFIX}", self.stem(key.owner, key.name)))
    }

    /// Reads an entry of any age; the caller decides whether it is fresh enough. A damaged or
    /// foreign file is removed and counts as a miss.
    pub fn lookup(&self, key: &CacheKey<'_>) -> Option<CachedEntry> {
        let path = self.path(key);
        let bytes = std::fs::read(&path).ok()?;
        match parse_entry(&bytes) {
            Some((meta, payload))
                if meta.scope == self.scope
                    && meta.owner == key.owner
                    && meta.name == key.name
                    && meta.requested == key.version.map(|v| v.get()) =>
            {
                let age = age_of(confirmed_at(&meta, &path));
                Some(CachedEntry {
                    payload: bytes::Bytes::copy_from_slice(payload),
                    meta,
                    age,
                })
            }
            _ => {
                tracing::warn!(path = %path.display(), "removing a damaged cache entry");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Records that a server confirmed the entry (`304`): its age starts again. Best effort:
    /// a confirmation that is not recorded only makes the entry look older.
    pub fn confirm(&self, key: &CacheKey<'_>) {
        let path = self.path(key);
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        if let Err(e) = r {
            tracing::debug!(error = %e, path = %path.display(), "cannot record a cache confirmation");
        }
    }

    /// Stores what a server served, with its entity tag.
    pub fn store(
        &self,
        key: &CacheKey<'_>,
        version: DepositVersion,
        encoding: Option<&str>,
        etag: Option<&str>,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        crate::home::create_private_dir(&self.dir)?;
        let meta = EntryMeta {
            format: FORMAT,
            scope: self.scope.clone(),
            owner: key.owner.to_owned(),
            name: key.name.to_owned(),
            requested: key.version.map(|v| v.get()),
            version: version.get(),
            encoding: encoding.map(str::to_owned),
            etag: etag.map(str::to_owned),
            fetched_at: now_secs(),
            size: payload.len() as u64,
        };
        let mut header = serde_json::to_vec(&meta)
            .map_err(|e| ClientError::Invalid(format!("cache entry header: {e}")))?;
        header.push(b'\n');
        let path = self.path(key);
        crate::home::replace_private_file(&path, &[&header, payload])
            .map_err(|e| cache_err("cannot write", &path, e))
    }

    /// Drops every entry of (owner, name): all versions and "current".
    pub fn invalidate(&self, owner: &str, name: &str) -> Result<usize, ClientError> {
        let prefix = format!("{}.", self.stem(owner, name));
        self.remove_matching(|f| f.starts_with(&prefix))
    }

    /// Drops every entry, of every server set.
    pub fn clear(&self) -> Result<usize, ClientError> {
        self.remove_matching(|f| f.ends_with(SUFFIX) || f.starts_with(".tmp-"))
    }

    fn remove_matching(&self, keep: impl Fn(&str) -> bool) -> Result<usize, ClientError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(cache_err("cannot read", &self.dir, e)),
        };
        let mut n = 0;
        for entry in rd {
            let entry = entry.map_err(|e| cache_err("cannot read", &self.dir, e))?;
            let file = entry.file_name();
            let Some(f) = file.to_str() else { continue };
            if keep(f) {
                std::fs::remove_file(entry.path())
                    .map_err(|e| cache_err("cannot remove", &entry.path(), e))?;
                if f.ends_with(SUFFIX) {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Every readable entry, newest first.
    pub fn entries(&self) -> Result<Vec<EntryInfo>, ClientError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(cache_err("cannot read", &self.dir, e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| cache_err("cannot read", &self.dir, e))?;
            if !entry.file_name().to_string_lossy().ends_with(SUFFIX) {
                continue;
            }
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            let Some((meta, _)) = parse_entry(&bytes) else {
                continue;
            };
            out.push(EntryInfo {
                current_servers: meta.scope == self.scope,
                age_s: age_of(confirmed_at(&meta, &entry.path())).as_secs(),
                owner: meta.owner,
                name: meta.name,
                requested: meta.requested,
                version: meta.version,
                encoding: meta.encoding,
                size: meta.size,
            });
        }
        out.sort_by(|a, b| a.age_s.cmp(&b.age_s).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    pub fn stats(&self) -> Result<CacheStats, ClientError> {
        let entries = self.entries()?;
        Ok(CacheStats {
            entries: entries.len(),
            bytes: entries.iter().map(|e| e.size).sum(),
            oldest_age_s: entries.iter().map(|e| e.age_s).max(),
        })
    }
}

fn parse_entry(bytes: &[u8]) -> Option<(EntryMeta, &[u8])> {
    let nl = bytes.iter().position(|b| *b == b'\n')?;
    let meta: EntryMeta = serde_json::from_slice(&bytes[..nl]).ok()?;
    let payload = &bytes[nl + 1..];
    (meta.format == FORMAT && meta.size == payload.len() as u64).then_some((meta, payload))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn key(v: Option<u64>) -> CacheKey<'static> {
        CacheKey {
            owner: "owner-fp",
            name: "db/key",
            version: v.map(|v| DepositVersion::new(v).unwrap()),
        }
    }

    #[test]
    fn round_trip_private_files_and_invalidation() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Cache::new(
            tmp.path(),
            &["https://127.0.0.2:1".into()],
            CacheConfig::default(),
        );
        assert!(c.lookup(&key(None)).is_none());
        let v3 = DepositVersion::new(3).unwrap();
        c.store(
            &key(None),
            v3,
            Some("age"),
            Some("3-ab"),
            b"\x00ciphertext\n",
        )
        .unwrap();
        c.store(
            &key(Some(2)),
            DepositVersion::new(2).unwrap(),
            None,
            None,
            b"old",
        )
        .unwrap();
        let e = c.lookup(&key(None)).unwrap();
        assert_eq!(&e.payload[..], b"\x00ciphertext\n");
        assert_eq!(e.meta.version, 3);
        assert_eq!(e.meta.encoding.as_deref(), Some("age"));
        assert_eq!(e.meta.etag.as_deref(), Some("3-ab"));
        assert!(e.age < Duration::from_secs(3600));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(c.dir()), 0o700);
            for f in std::fs::read_dir(c.dir()).unwrap() {
                let f = f.unwrap();
                assert_eq!(mode(&f.path()), 0o600);
                assert!(!f.file_name().to_string_lossy().contains("db"));
            }
        }
        // Another server set does not see it.
        let other = Cache::new(
            tmp.path(),
            &["https://127.0.0.3:1".into()],
            CacheConfig::default(),
        );
        assert!(other.lookup(&key(None)).is_none());
        assert_eq!(c.stats().unwrap().entries, 2);
        assert_eq!(c.invalidate("owner-fp", "db/other").unwrap(), 0);
        assert_eq!(c.invalidate("owner-fp", "db/key").unwrap(), 2);
        assert!(c.lookup(&key(Some(2))).is_none());
        assert_eq!(c.stats().unwrap().entries, 0);
    }

    #[test]
    fn damaged_or_misfiled_entries_are_misses() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Cache::new(tmp.path(), &["https://a:1".into()], CacheConfig::default());
        let v = DepositVersion::new(1).unwrap();
        c.store(&key(None), v, None, None, b"payload").unwrap();
        let path = c.path(&key(None));
        // Truncated payload: size no longer matches.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.pop();
        std::fs::write(&path, &bytes).unwrap();
        assert!(c.lookup(&key(None)).is_none());
        assert!(!path.exists());
        // An entry copied under another key's file name is refused.
        c.store(&key(Some(1)), v, None, None, b"payload").unwrap();
        std::fs::copy(c.path(&key(Some(1))), &path).unwrap();
        assert!(c.lookup(&key(None)).is_none());
        // A fetch time in the future is never fresh.
        let mut e = c.lookup(&key(Some(1))).unwrap().meta;
        e.fetched_at = now_secs() + 1000;
        let mut line = serde_json::to_vec(&e).unwrap();
        line.push(b'\n');
        line.extend_from_slice(b"payload");
        std::fs::write(c.path(&key(Some(1))), line).unwrap();
        assert_eq!(c.lookup(&key(Some(1))).unwrap().age, Duration::MAX);
        assert_eq!(c.clear().unwrap(), 1);
    }

    #[test]
    fn a_confirmation_restarts_the_age_and_old_formats_are_misses() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Cache::new(tmp.path(), &["https://a:1".into()], CacheConfig::default());
        let v = DepositVersion::new(1).unwrap();
        c.store(&key(None), v, None, Some("1-aa"), b"payload")
            .unwrap();
        let path = c.path(&key(None));
        // Fetched two hours ago (file and header alike).
        let mut meta = c.lookup(&key(None)).unwrap().meta;
        meta.fetched_at -= 7200;
        let mut line = serde_json::to_vec(&meta).unwrap();
        line.push(b'\n');
        line.extend_from_slice(b"payload");
        std::fs::write(&path, &line).unwrap();
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        assert!(c.lookup(&key(None)).unwrap().age >= Duration::from_secs(7199));
        c.confirm(&key(None));
        assert!(c.lookup(&key(None)).unwrap().age < Duration::from_secs(60));
        // A modification time in the future is ignored, not taken as "just confirmed".
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(86400))
            .unwrap();
        assert!(c.lookup(&key(None)).unwrap().age >= Duration::from_secs(7199));
        // Format 1 (no tag) is a miss, and removed.
        let mut old: serde_json::Value = serde_json::from_slice(&line[..line.len() - 8]).unwrap();
        old["format"] = 1.into();
        let mut bytes = serde_json::to_vec(&old).unwrap();
        bytes.extend_from_slice(b"\npayload");
        std::fs::write(&path, bytes).unwrap();
        assert!(c.lookup(&key(None)).is_none());
        assert!(!path.exists());
    }

    #[test]
    fn config_defaults_and_parsing() {
        let d = CacheConfig::default();
        assert!(d.enabled);
        assert_eq!(d.mode, CacheMode::Revalidate);
        let t: CacheConfig = toml::from_str("mode = \"ttl\"").unwrap();
        assert_eq!(t.mode, CacheMode::Ttl);
        assert!(toml::from_str::<CacheConfig>("mode = \"never\"").is_err());
        assert_eq!(d.ttl, Duration::from_secs(600));
        assert_eq!(d.max_stale, Duration::from_secs(86400));
        let c: CacheConfig = toml::from_str("ttl = \"30s\"\nmax_stale = \"0s\"").unwrap();
        assert_eq!(c.ttl, Duration::from_secs(30));
        assert_eq!(c.max_stale, Duration::ZERO);
        assert!(c.enabled);
        assert!(toml::from_str::<CacheConfig>("tll = \"30s\"").is_err());
    }
}
