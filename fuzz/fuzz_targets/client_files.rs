//! The files a client reads back from its home (keysafe-client): `client.toml` (through
//! `ClientHome::load`, as every command does), cache entries (`Cache::lookup`, `entries`), the
//! `token` file, and tokens offered by a server's `x-keysafe-token` answers. A home may be
//! edited by hand, damaged by a crash or planted by another user of a shared directory.
//! Properties: nothing panics; `client.toml` survives save-then-load unchanged; a damaged or
//! foreign cache entry is a miss (never served for another deposit, never with a wrong size);
//! what the cache stores it serves back; the token held only moves to higher counters.
#![no_main]

use arbitrary::Arbitrary;
use keysafe_client::cache::{Cache, CacheConfig, CacheKey};
use keysafe_client::home::{ClientHome, HomeConfig};
use keysafe_client::token::{TOKEN_FILE, TokenKeeper};
use keysafe_proto::DepositVersion;
use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
enum Input {
    Config(String),
    Entry {
        bytes: Vec<u8>,
        owner: String,
        name: String,
        version: Option<u64>,
    },
    Store {
        owner: String,
        name: String,
        version: Option<u64>,
        served: u64,
        encoding: Option<String>,
        etag: Option<String>,
        payload: Vec<u8>,
    },
    Token {
        file: Vec<u8>,
        offers: Vec<String>,
    },
}

/// One scratch home per process; each input cleans up after itself.
fn home() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(keysafe_fuzz::scratch_dir).path()
}

fn servers() -> Vec<String> {
    vec!["https://127.0.0.1:11371".to_owned()]
}

fn version(v: Option<u64>) -> Option<DepositVersion> {
    v.and_then(|v| DepositVersion::new(v).ok())
}

fn clear_cache(c: &Cache) {
    let _ = std::fs::remove_dir_all(c.dir());
}

fuzz_target!(|data: &[u8]| {
    // `\0` then a client.toml, `\x01` then a cache entry file, `\x02` then a token file;
    // anything else is structured.
    let input = match data.split_first() {
        Some((0, rest)) => Input::Config(String::from_utf8_lossy(rest).into_owned()),
        Some((1, rest)) => Input::Entry {
            bytes: rest.to_vec(),
            owner: "ab".repeat(32),
            name: "db/key".to_owned(),
            version: None,
        },
        Some((2, rest)) => Input::Token {
            file: rest.to_vec(),
            offers: vec!["7.abc".to_owned()],
        },
        _ => match arbitrary::Arbitrary::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
            Ok(i) => i,
            Err(_) => return,
        },
    };
    let dir = home();
    match input {
        Input::Config(text) => {
            std::fs::write(dir.join("client.toml"), &text).expect("scratch write");
            let key = dir.join("client.key");
            std::fs::write(&key, b"not a key").expect("scratch write");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("scratch chmod");
            let Ok(home) = ClientHome::load(dir) else {
                return;
            };
            assert!(!home.config.servers.is_empty());
            for s in &home.config.servers {
                let _ = home.trust_for(s);
            }
            let _ = home.cache_config();
            let text = toml::to_string_pretty(&home.config).expect("a loaded config serialises");
            let again: HomeConfig = match toml::from_str(&text) {
                Ok(c) => c,
                Err(e) => panic!("a saved client.toml does not load: {e}\n{text}"),
            };
            assert_eq!(
                toml::to_string_pretty(&again).expect("serialises"),
                text,
                "save then load changes client.toml"
            );
        }
        Input::Entry {
            bytes,
            owner,
            name,
            version: v,
        } => {
            let cache = Cache::new(dir, &servers(), CacheConfig::default());
            let key = CacheKey {
                owner: &owner,
                name: &name,
                version: version(v),
            };
            // Store something for the key to learn its file, then replace the file's bytes.
            if cache
                .store(&key, DepositVersion::FIRST, None, None, b"x")
                .is_err()
            {
                clear_cache(&cache);
                return;
            }
            let path = std::fs::read_dir(cache.dir())
                .expect("the cache directory")
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "entry"))
                .expect("the stored entry");
            std::fs::write(&path, &bytes).expect("scratch write");
            let _ = cache.entries();
            let _ = cache.stats();
            if let Some(e) = cache.lookup(&key) {
                assert_eq!(e.meta.owner, owner);
                assert_eq!(e.meta.name, name);
                assert_eq!(e.meta.requested, key.version.map(|v| v.get()));
                assert_eq!(e.meta.size, e.payload.len() as u64);
            }
            clear_cache(&cache);
        }
        Input::Store {
            owner,
            name,
            version: v,
            served,
            encoding,
            etag,
            payload,
        } => {
            let Ok(served) = DepositVersion::new(served) else {
                return;
            };
            let cache = Cache::new(dir, &servers(), CacheConfig::default());
            let key = CacheKey {
                owner: &owner,
                name: &name,
                version: version(v),
            };
            cache
                .store(&key, served, encoding.as_deref(), etag.as_deref(), &payload)
                .expect("a store into a scratch directory");
            let e = cache.lookup(&key).expect("what was stored is served");
            assert_eq!(&e.payload[..], &payload[..]);
            assert_eq!(e.meta.version, served.get());
            assert_eq!(e.meta.encoding, encoding);
            assert_eq!(e.meta.etag, etag);
            assert_eq!(cache.entries().expect("entries").len(), 1);
            assert_eq!(cache.invalidate(&owner, &name).expect("invalidate"), 1);
            assert!(cache.lookup(&key).is_none());
            clear_cache(&cache);
        }
        Input::Token { file, offers } => {
            let path = dir.join(TOKEN_FILE);
            std::fs::write(&path, &file).expect("scratch write");
            let k = TokenKeeper::in_home(dir);
            let _ = k.current();
            let before = k.counter();
            let m = TokenKeeper::in_memory();
            for t in offers.iter().take(8) {
                let held = m.counter();
                m.offer(t).expect("an in-memory keeper never fails");
                let now = m.counter();
                assert!(now >= held, "the counter went back");
                if now != held {
                    assert_eq!(m.current().as_deref().map(String::as_str), Some(t.as_str()));
                }
            }
            if let Some(t) = offers.first() {
                let _ = k.offer(t);
                assert!(k.counter() >= before);
            }
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(dir.join("token.lock"));
        }
    }
});
