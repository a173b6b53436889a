//! `kms-audit.log` in Hadoop's `SimpleKMSAuditLogger` format, with `KMSAudit`'s aggregation of
//! the frequent operations (first access logged at once, later ones counted per window). The
//! file is created with mode 0600, reopened on request (SIGHUP, after logrotate moved it), and
//! never holds a credential: URLs are logged with every query value except a few known harmless
//! ones replaced by `<redacted>` (Hadoop logs `?delegation=<token>` as it came).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Query parameters whose values are logged; every other value is redacted.
const LOGGED_PARAMS: &[&str] = &[
    "op",
    "user.name",
    "doas",
    "eek_op",
    "num_keys",
    "key",
    "renewer",
];

/// `path?query` with the values of unknown parameters (tokens, anything else) redacted.
pub fn redact_url(path: &str, query: Option<&str>) -> String {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return path.to_owned();
    };
    let parts: Vec<String> = q
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let name: String = form_urlencoded::parse(format!("{k}=").as_bytes())
                .next()
                .map(|(n, _)| n.into_owned())
                .unwrap_or_default();
            if v.is_empty() || LOGGED_PARAMS.contains(&name.to_ascii_lowercase().as_str()) {
                kv.to_owned()
            } else {
                format!("{k}=<redacted>")
            }
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

fn open_log(p: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(p)
        .map_err(|e| anyhow::anyhow!("cannot open the audit log {}: {e}", p.display()))?;
    Ok(f)
}

/// `KMS.KMSOp` names used in the log.
pub const AGGREGATED: [&str; 5] = [
    "GET_KEY_VERSION",
    "GET_CURRENT_KEY",
    "DECRYPT_EEK",
    "GENERATE_EEK",
    "REENCRYPT_EEK",
];

pub struct Audit {
    out: Option<Mutex<std::fs::File>>,
    path: Option<PathBuf>,
    window: Duration,
    counts: Mutex<HashMap<(String, String, String), u64>>,
}

fn timestamp() -> String {
    // ISO 8601 like log4j's %d{ISO8601}: "2026-11-28 18:00:00,123" (UTC).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let ms = now.subsec_millis();
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02},{ms:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

impl Audit {
    pub fn open(path: Option<&Path>, window: Duration) -> anyhow::Result<Arc<Audit>> {
        let out = match path {
            Some(p) => Some(Mutex::new(open_log(p)?)),
            None => None,
        };
        let a = Arc::new(Audit {
            out,
            path: path.map(Path::to_owned),
            window,
            counts: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&a);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(window).await;
                match weak.upgrade() {
                    Some(a) => a.flush(),
                    None => break,
                }
            }
        });
        Ok(a)
    }

    /// Reopens the file by name (after log rotation moved it): later lines go to a new file,
    /// created 0600. On failure the current file stays in use.
    pub fn reopen(&self) -> anyhow::Result<()> {
        let (Some(out), Some(p)) = (&self.out, &self.path) else {
            return Ok(());
        };
        self.flush();
        let f = open_log(p)?;
        *out.lock().unwrap_or_else(|p| p.into_inner()) = f;
        Ok(())
    }

    fn line(&self, msg: &str) {
        // Names come from requests: never let one start a new line of the log.
        let msg: String = msg
            .chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect();
        if let Some(f) = &self.out {
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(f, "{} {msg}", timestamp());
        }
    }

    fn kv(op: &str, key: Option<&str>, user: &str) -> String {
        match key {
            Some(k) => format!("op={op}, key={k}, user={user}"),
            None => format!("op={op}, user={user}"),
        }
    }

    pub fn ok(&self, op: &str, key: Option<&str>, user: &str, extra: &str) {
        if let (true, Some(k)) = (AGGREGATED.contains(&op), key) {
            let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let id = (op.to_owned(), k.to_owned(), user.to_owned());
            match c.get_mut(&id) {
                Some(n) => *n += 1,
                None => {
                    c.insert(id, 0);
                    drop(c);
                    self.line(&format!(
                        "OK[{}, accessCount=1, interval=0ms] {extra}",
                        Self::kv(op, key, user)
                    ));
                }
            }
            return;
        }
        self.line(&format!("OK[{}] {extra}", Self::kv(op, key, user)));
    }

    pub fn unauthorized(&self, op: &str, key: Option<&str>, user: &str) {
        self.line(&format!("UNAUTHORIZED[{}] ", Self::kv(op, key, user)));
    }

    pub fn error(&self, user: &str, method: &str, msg: &str) {
        self.line(&format!(
            "ERROR[user={user}] Method:'{method}' Exception:'{msg}'"
        ));
    }

    pub fn unauthenticated(&self, remote: &str, method: &str, url: &str, msg: &str) {
        self.line(&format!(
            "UNAUTHENTICATED RemoteHost:{remote} Method:{method} URL:{url} ErrorMsg:'{msg}'"
        ));
    }

    /// Writes the counts gathered since the last window and forgets them.
    pub fn flush(&self) {
        let drained: Vec<_> = {
            let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            c.drain().collect()
        };
        for ((op, key, user), n) in drained {
            if n > 0 {
                self.line(&format!(
                    "OK[op={op}, key={key}, user={user}, accessCount={n}, interval={}ms] ",
                    self.window.as_millis()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn format_and_aggregation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kms-audit.log");
        let a = Audit::open(Some(&p), Duration::from_secs(3600)).unwrap();
        a.ok(
            "CREATE_KEY",
            Some("k"),
            "alice",
            "UserProvidedMaterial:false Description:null",
        );
        a.ok("GET_KEYS", None, "alice", "");
        for _ in 0..5 {
            a.ok("GENERATE_EEK", Some("k"), "hdfs", "");
        }
        a.unauthorized("DECRYPT_EEK", Some("k"), "hdfs");
        a.error("bob", "GET", "boom");
        a.ok("CREATE_KEY", Some("evil\nOK[op=DELETE_KEY"), "alice", "");
        a.flush();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().map(|l| &l[24..]).collect();
        assert_eq!(
            lines,
            vec![
                "OK[op=CREATE_KEY, key=k, user=alice] UserProvidedMaterial:false Description:null",
                "OK[op=GET_KEYS, user=alice] ",
                "OK[op=GENERATE_EEK, key=k, user=hdfs, accessCount=1, interval=0ms] ",
                "UNAUTHORIZED[op=DECRYPT_EEK, key=k, user=hdfs] ",
                "ERROR[user=bob] Method:'GET' Exception:'boom'",
                "OK[op=CREATE_KEY, key=evil\\nOK[op=DELETE_KEY, user=alice] ",
                "OK[op=GENERATE_EEK, key=k, user=hdfs, accessCount=4, interval=3600000ms] ",
            ]
        );
        assert_eq!(&text[4..5], "-");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[tokio::test]
    async fn reopen_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kms-audit.log");
        let a = Audit::open(Some(&p), Duration::from_secs(3600)).unwrap();
        a.ok("GET_KEYS", None, "alice", "");
        std::fs::rename(&p, dir.path().join("kms-audit.log.1")).unwrap();
        a.ok("GET_KEYS", None, "bob", "");
        a.reopen().unwrap();
        a.ok("GET_KEYS", None, "carol", "");
        let old = std::fs::read_to_string(dir.path().join("kms-audit.log.1")).unwrap();
        let new = std::fs::read_to_string(&p).unwrap();
        assert!(
            old.contains("user=alice") && old.contains("user=bob"),
            "{old}"
        );
        assert!(
            new.contains("user=carol") && !new.contains("user=bob"),
            "{new}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn urls_never_carry_credentials() {
        assert_eq!(redact_url("/kms/v1/keys", None), "/kms/v1/keys");
        assert_eq!(
            redact_url(
                "/kms/v1/keys/names",
                Some("user.name=alice&delegation=HAAEcm9v&doAs=bob")
            ),
            "/kms/v1/keys/names?user.name=alice&delegation=<redacted>&doAs=bob"
        );
        assert_eq!(
            redact_url("/kms/v1/", Some("op=CANCELDELEGATIONTOKEN&token=SECRET&x")),
            "/kms/v1/?op=CANCELDELEGATIONTOKEN&token=<redacted>&x"
        );
        assert_eq!(
            redact_url("/kms/v1/", Some("%74oken=SECRET")),
            "/kms/v1/?%74oken=<redacted>"
        );
    }
}
