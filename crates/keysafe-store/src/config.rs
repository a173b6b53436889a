//! Which storage backend holds keysafe's state and how to reach it: the `[storage]` section of
//! `keysafe.toml` ([`StorageSettings`], raw) validated once into a [`StorageConfig`]. The
//! crates above pass a `StorageConfig` to the factory ([`crate::open`], [`crate::create`]) and
//! never look inside it. A database password never sits in the URL (refused) nor on a command
//! line: it comes from `password_file` or `KEYSAFE_STORAGE_PASSWORD`, read only when the
//! store is opened, so nothing that prints or logs a configuration can show it.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable that holds the database password when no `password_file` is set.
pub const PASSWORD_ENV: &str = "KEYSAFE_STORAGE_PASSWORD";

/// The default location: one SQLite file in the data directory.
pub const DEFAULT_URL: &str = "sqlite:keysafe.db";

/// The `[storage]` section as written. Either `url`, or the older `backend = "sqlite"` with
/// `sqlite_path` (still read, so existing data directories keep working).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    url: Option<String>,
    backend: Option<String>,
    sqlite_path: Option<PathBuf>,
    password_file: Option<PathBuf>,
}

/// A refused `[storage]` section or `--storage` value; says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StorageConfigError(String);

/// Where a backend that needs one finds its database password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// A file readable by its owner only (mode 0600), first line.
    File(PathBuf),
    /// The [`PASSWORD_ENV`] environment variable, if set; otherwise no password (for example,
    /// PostgreSQL's peer or certificate authentication).
    Environment,
}

impl PasswordSource {
    /// Reads the password; `None` when none is configured.
    pub fn read(&self) -> Result<Option<Zeroizing<String>>, StorageConfigError> {
        match self {
            // Set but empty counts as unset, as libpq's PGPASSWORD does.
            PasswordSource::Environment => Ok(std::env::var(PASSWORD_ENV)
                .ok()
                .filter(|p| !p.is_empty())
                .map(Zeroizing::new)),
            PasswordSource::File(path) => {
                if let Err(e) = keysafe_core::seal::check_private_file(path) {
                    return Err(StorageConfigError(match e {
                        keysafe_core::seal::PrivateFileError::Insecure(mode) => format!(
                            "the storage password file {} is readable by others (mode {mode:o}); \
                             run chmod 600 on it",
                            path.display()
                        ),
                        keysafe_core::seal::PrivateFileError::Io(e) => {
                            format!("cannot read {}: {e}", path.display())
                        }
                    }));
                }
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    StorageConfigError(format!("cannot read {}: {e}", path.display()))
                })?);
                let line = text.lines().next().unwrap_or_default();
                if line.is_empty() {
                    return Err(StorageConfigError(format!(
                        "the storage password file {} is empty",
                        path.display()
                    )));
                }
                Ok(Some(Zeroizing::new(line.to_owned())))
            }
        }
    }
}

/// A validated storage configuration. Relative SQLite paths are resolved against the data
/// directory. `Display` says where the data lives (the database file, or the connection
/// string); neither it nor `Debug` can show a secret (there is none inside).
#[derive(Clone, PartialEq, Eq)]
pub struct StorageConfig {
    pub(crate) backend: Backend,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        /// The connection string as configured, without a password.
        url: String,
        password: PasswordSource,
    },
}

impl StorageConfig {
    /// Validates a `[storage]` section; `data_dir` anchors relative paths.
    pub fn from_settings(s: &StorageSettings, data_dir: &Path) -> Result<Self, StorageConfigError> {
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                data_dir.join(p)
            }
        };
        let password = match &s.password_file {
            Some(p) => PasswordSource::File(resolve(p)),
            None => PasswordSource::Environment,
        };
        let backend = match (&s.url, &s.backend, &s.sqlite_path) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(StorageConfigError(
                    "storage: give either url or the older backend/sqlite_path, not both".into(),
                ));
            }
            (Some(url), None, None) => parse_url(url, data_dir, password)?,
            (None, backend, path) => {
                match backend.as_deref().unwrap_or("sqlite") {
                    "sqlite" => {}
                    other => {
                        return Err(StorageConfigError(format!(
                            "storage.backend {other:?}: expected \"sqlite\" (or set storage.url)"
                        )));
                    }
                }
                Backend::Sqlite {
                    path: resolve(path.as_deref().unwrap_or(Path::new("keysafe.db"))),
                }
            }
        };
        if s.password_file.is_some() && matches!(backend, Backend::Sqlite { .. }) {
            return Err(StorageConfigError(
                "storage.password_file applies to PostgreSQL; a SQLite file has no password".into(),
            ));
        }
        Ok(Self { backend })
    }

    /// The storage URL for a `--storage` value: a URL is kept, anything else is a SQLite path.
    pub fn url_from_arg(arg: &str) -> String {
        if arg.contains("://") || arg.starts_with("sqlite:") {
            arg.to_owned()
        } else {
            format!("sqlite:{arg}")
        }
    }
}

impl fmt::Display for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Sqlite { path } => write!(f, "{}", path.display()),
            Backend::Postgres { url, .. } => f.write_str(url),
        }
    }
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageConfig({self})")
    }
}

fn parse_url(
    url: &str,
    data_dir: &Path,
    password: PasswordSource,
) -> Result<Backend, StorageConfigError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(StorageConfigError(
                "storage.url \"sqlite:\" names no file: write sqlite:keysafe.db or sqlite:/PATH"
                    .into(),
            ));
        }
        let p = Path::new(path);
        return Ok(Backend::Sqlite {
            path: if p.is_absolute() {
                p.to_owned()
            } else {
                data_dir.join(p)
            },
        });
    }
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"));
    let Some(rest) = rest else {
        return Err(StorageConfigError(format!(
            "storage.url {:?}: expected sqlite:PATH or postgres://USER@HOST[,HOST2...]/DATABASE",
            redact(url)
        )));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or_default();
    if userinfo.is_some_and(|u| u.contains(':')) || query.split('&').any(secret_parameter) {
        return Err(StorageConfigError(format!(
            "storage.url must not contain the password (it would be logged and shown): put it \
             in storage.password_file or {PASSWORD_ENV}; the URL without it is {}",
            redact(url)
        )));
    }
    if authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .is_empty()
    {
        return Err(StorageConfigError(format!(
            "storage.url {url:?} names no host"
        )));
    }
    // Everything else about the URL (hosts, ports, sslmode, target_session_attrs, ...) is
    // checked by the backend's own parser now, so a bad URL stops `init` or `serve` before
    // anything is written.
    crate::postgres::PgConfig::parse(url, None)
        .map_err(|e| StorageConfigError(format!("storage.url: {e}")))?;
    Ok(Backend::Postgres {
        url: url.to_owned(),
        password,
    })
}

/// A query parameter that carries a secret (`password`, and libpq's `sslpassword`).
fn secret_parameter(kv: &str) -> bool {
    kv.split('=')
        .next()
        .is_some_and(|k| k.to_ascii_lowercase().ends_with("password"))
}

/// A URL with any password removed, for error messages.
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => format!("{}@{host}", user.split(':').next().unwrap_or_default()),
        None => authority.to_owned(),
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let query: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !secret_parameter(kv))
        .collect();
    let mut out = if scheme.is_empty() {
        format!("{authority}{path}")
    } else {
        format!("{scheme}://{authority}{path}")
    };
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query.join("&"));
    }
    out
}

/// The documented `[storage]` section of `keysafe.toml`, with the URL `init` chose.
pub fn storage_section(url: &str, password_file: Option<&Path>) -> String {
    // Quoted and escaped by the toml crate: a value reads back as exactly itself (Rust's `{:?}`
    // escapes some characters in ways TOML does not read, e.g. `\u{1b}`).
    let toml_str = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let url = toml_str(url);
    let password_file = match password_file {
        Some(p) => format!("password_file = {}", toml_str(&p.display().to_string())),
        None => "# password_file = \"/etc/keysafe/storage.password\"".to_owned(),
    };
    format!(
        r#"[storage]
# Where keysafe keeps its state (docs/operations.md, "Storage"):
#   "sqlite:PATH"  one embedded database file (WAL, synchronous=FULL); a relative PATH is
#                  inside the data directory. The default.
#   "postgres://USER@HOST[,HOST2...]/DATABASE?target_session_attrs=read-write"
#                  PostgreSQL, for several keysafe nodes over one database
#                  (docs/postgresql.md). Never put the password in the URL.
url = {url}
# PostgreSQL: a file holding the database password (mode 0600). Without it,
# KEYSAFE_STORAGE_PASSWORD is used.
{password_file}

"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_section_reads_back_exactly() {
        for (url, file) in [
            (
                "postgres://ks@db1,db2/keysafe?target_session_attrs=read-write",
                "/etc/pw",
            ),
            ("sqlite:odd\"name\n[x]\u{1b}.db", "tab\there\u{7f}"),
            ("sqlite:C:\\data\\ks.db", "pin\\\"file"),
        ] {
            let text = storage_section(url, Some(Path::new(file)));
            let s: StorageSettings = toml::from_str::<toml::Table>(&text)
                .unwrap()
                .get("storage")
                .unwrap()
                .clone()
                .try_into()
                .unwrap();
            assert_eq!(s.url.as_deref(), Some(url), "{text}");
            assert_eq!(s.password_file.as_deref(), Some(Path::new(file)), "{text}");
        }
    }

    fn settings(toml_text: &str) -> StorageSettings {
        toml::from_str(toml_text).unwrap()
    }

    fn parse(toml_text: &str) -> Result<StorageConfig, StorageConfigError> {
        StorageConfig::from_settings(&settings(toml_text), Path::new("/data"))
    }

    #[test]
    fn sqlite_in_every_spelling() {
        let want = StorageConfig {
            backend: Backend::Sqlite {
                path: "/data/keysafe.db".into(),
            },
        };
        for text in [
            "",
            "url = \"sqlite:keysafe.db\"",
            "url = \"sqlite://keysafe.db\"",
            "backend = \"sqlite\"",
            "backend = \"sqlite\"\nsqlite_path = \"keysafe.db\"",
            "url = \"sqlite:/data/keysafe.db\"",
        ] {
            assert_eq!(parse(text).unwrap(), want, "{text}");
        }
        assert_eq!(parse("").unwrap().to_string(), "/data/keysafe.db");
        assert_eq!(
            StorageConfig::url_from_arg("/srv/ks.db"),
            "sqlite:/srv/ks.db"
        );
        assert_eq!(StorageConfig::url_from_arg("sqlite:x.db"), "sqlite:x.db");
        assert_eq!(
            StorageConfig::url_from_arg("postgres://ks@db/ks"),
            "postgres://ks@db/ks"
        );
        #[derive(Deserialize)]
        struct File {
            storage: StorageSettings,
        }
        let section: File = toml::from_str(&storage_section(DEFAULT_URL, None)).unwrap();
        assert_eq!(section.storage.url.as_deref(), Some(DEFAULT_URL));
    }

    #[test]
    fn refusals_say_what_to_write() {
        for (text, needle) in [
            ("backend = \"mysql\"", "expected \"sqlite\""),
            ("url = \"mysql://h/db\"", "expected sqlite:PATH"),
            ("url = \"sqlite:\"", "names no file"),
            ("url = \"sqlite:a.db\"\nsqlite_path = \"b.db\"", "not both"),
            ("url = \"postgres:///db\"", "names no host"),
            ("password_file = \"p\"", "applies to PostgreSQL"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(toml::from_str::<StorageSettings>("colour = \"red\"").is_err());
    }

    /// A password in the URL is refused, and the refusal does not repeat it.
    #[test]
    fn passwords_never_in_the_url() {
        for url in [
            "postgres://ks:hunter2@db1,db2/keysafe?target_session_attrs=read-write",
            "postgresql://db/keysafe?user=ks&password=hunter2",
            "postgres://ks@db/keysafe?sslmode=require&PASSWORD=hunter2",
            "postgres://ks@db/keysafe?sslcert=c.pem&sslpassword=hunter2",
        ] {
            let e = parse(&format!("url = {url:?}")).unwrap_err().to_string();
            assert!(e.contains("must not contain the password"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let ok = parse(
            "url = \"postgres://ks@db1:5432,db2/keysafe?target_session_attrs=read-write\"\n\
             password_file = \"pg.pass\"",
        )
        .unwrap();
        assert_eq!(
            ok.backend,
            Backend::Postgres {
                url: "postgres://ks@db1:5432,db2/keysafe?target_session_attrs=read-write".into(),
                password: PasswordSource::File("/data/pg.pass".into()),
            }
        );
    }

    #[test]
    fn password_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\nignored\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = PasswordSource::File(p.clone())
                .read()
                .unwrap_err()
                .to_string();
            assert!(e.contains("chmod 600") && !e.contains("s3cret"), "{e}");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(
            PasswordSource::File(p)
                .read()
                .unwrap()
                .as_deref()
                .map(String::as_str),
            Some("s3cret")
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let e = PasswordSource::File(empty).read().unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    /// PostgreSQL URLs are checked in full when the configuration is read, so `init` and
    /// `serve` stop before touching anything.
    #[test]
    fn postgres_urls_are_checked_when_read() {
        for (url, needle) in [
            ("postgres://ks@db", "names no database"),
            ("postgres://ks@db/keysafe?sslmode=allow", "sslmode=allow"),
            ("postgres://ks@db/keysafe?colour=red", "colour"),
            (
                "postgres://ks@db/keysafe?sslmode=verify-full",
                "sslrootcert",
            ),
            ("postgres://ks@db/keysafe?sslcert=c.pem", "not supported"),
        ] {
            let e = parse(&format!("url = {url:?}")).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
        }
        for url in [
            "postgres://ks@db1:5432,db2:5433/keysafe?target_session_attrs=read-write",
            "postgresql://ks@127.0.0.1/keysafe?sslmode=disable&connect_timeout=3",
        ] {
            parse(&format!("url = {url:?}")).unwrap();
        }
    }
}
