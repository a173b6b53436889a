//! A throwaway MIT Kerberos KDC per test: its own realm on 127.0.0.1 and a free port, database,
//! stash and logs in a temporary directory (`KRB5_CONFIG` and `KRB5_KDC_PROFILE` point there,
//! the database path is in `[dbmodules]`), principals and keytabs made with `kadmin.local`.
//! Killed when dropped. Missing KDC programs fail the test (never skip it): `.ci/run` installs
//! `krb5-kdc`, `krb5-admin-server` and `krb5-user`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub struct Kdc {
    pub realm: String,
    pub port: u16,
    pub dir: TempDir,
    /// The client configuration (realm, KDC address); give it to Java as
    /// `-Djava.security.krb5.conf`.
    pub krb5_conf: PathBuf,
    child: Child,
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    // Both TCP and UDP must be free on the port.
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn sbin(tool: &str) -> PathBuf {
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(d).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{tool} not found: install the MIT KDC packages (apt-get install -y krb5-kdc krb5-admin-server krb5-user)"
    );
}

/// The `[realms]` block of one realm, over several lines as MIT's parser wants.
fn realm_block(realm: &str, port: u16) -> String {
    format!(
        "    {realm} = {{\n        kdc = 127.0.0.1:{port}\n        admin_server = 127.0.0.1:{port}\n    }}\n"
    )
}

impl Kdc {
    /// Starts a KDC for `realm`. `extra_realms` are other KDCs the client configuration should
    /// know (for cross-realm tests), with `capaths` from each of them to this realm.
    pub fn start(realm: &str) -> Kdc {
        Self::start_with(realm, &[])
    }

    pub fn start_with(realm: &str, extra: &[&Kdc]) -> Kdc {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let kdc_conf = d.join("kdc.conf");
        std::fs::write(
            &kdc_conf,
            format!(
                "[kdcdefaults]\n    kdc_ports = {port}\n    kdc_tcp_ports = {port}\n    kdc_listen = 127.0.0.1:{port}\n    kdc_tcp_listen = 127.0.0.1:{port}\n\n\
                 [realms]\n    {realm} = {{\n        database_module = db\n        key_stash_file = {stash}\n        acl_file = {acl}\n        max_life = 10h\n        max_renewable_life = 1d\n        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n        kdc_listen = 127.0.0.1:{port}\n        kdc_tcp_listen = 127.0.0.1:{port}\n    }}\n\n\
                 [dbmodules]\n    db = {{\n        db_library = db2\n        database_name = {db}\n    }}\n\n\
                 [logging]\n    kdc = FILE:{log}\n    default = FILE:{log}\n",
                stash = d.join("stash").display(),
                acl = d.join("kadm5.acl").display(),
                db = d.join("principal").display(),
                log = d.join("kdc.log").display(),
            ),
        )
        .unwrap();
        std::fs::write(d.join("kadm5.acl"), "").unwrap();
        let krb5_conf = d.join("krb5.conf");
        let mut realms = realm_block(realm, port);
        let mut capaths = String::new();
        for k in extra {
            realms.push_str(&realm_block(&k.realm, k.port));
            capaths.push_str(&format!(
                "    {other} = {{\n        {realm} = .\n    }}\n    {realm} = {{\n        {other} = .\n    }}\n",
                other = k.realm
            ));
        }
        std::fs::write(
            &krb5_conf,
            format!(
                "[libdefaults]\n    default_realm = {realm}\n    dns_lookup_kdc = false\n    dns_lookup_realm = false\n    dns_canonicalize_hostname = false\n    rdns = false\n    udp_preference_limit = 1\n    ticket_lifetime = 10h\n    forwardable = true\n    default_ccache_name = FILE:{ccache}\n\n\
                 [realms]\n{realms}\n[domain_realm]\n    localhost = {realm}\n\n[capaths]\n{capaths}",
                ccache = d.join("default.ccache").display(),
            ),
        )
        .unwrap();
        let mut k = Kdc {
            realm: realm.to_owned(),
            port,
            krb5_conf,
            child: Command::new("true").spawn().unwrap(),
            dir,
        };
        k.run(Command::new(sbin("kdb5_util")).args([
            "create",
            "-s",
            "-r",
            realm,
            "-P",
            "master-password-for-tests",
        ]));
        let log = std::fs::File::create(k.dir.path().join("krb5kdc.out")).unwrap();
        let child = k
            .env(Command::new(sbin("krb5kdc")).args(["-n", "-r", realm]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        k.child = child;
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > until {
                panic!(
                    "the KDC did not start: {}",
                    std::fs::read_to_string(k.dir.path().join("krb5kdc.out")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        k
    }

    fn env<'a>(&self, c: &'a mut Command) -> &'a mut Command {
        c.env("KRB5_CONFIG", &self.krb5_conf)
            .env("KRB5_KDC_PROFILE", self.dir.path().join("kdc.conf"))
            .env(
                "KRB5CCNAME",
                format!("FILE:{}", self.dir.path().join("default.ccache").display()),
            )
    }

    fn run(&self, c: &mut Command) -> String {
        let o = self.env(c).stdin(Stdio::null()).output().unwrap();
        assert!(
            o.status.success(),
            "{c:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn kadmin(&self, query: &str) -> String {
        self.run(Command::new(sbin("kadmin.local")).args(["-r", &self.realm, "-q", query]))
    }

    /// `name@REALM` for a name without a realm.
    pub fn principal(&self, name: &str) -> String {
        if name.contains('@') {
            name.to_owned()
        } else {
            format!("{name}@{}", self.realm)
        }
    }

    /// Adds principals with random keys.
    pub fn add(&self, names: &[&str]) {
        for n in names {
            self.kadmin(&format!("addprinc -randkey {}", self.principal(n)));
        }
    }

    /// Adds a principal with a password (for cross-realm `krbtgt` keys both KDCs must share).
    pub fn add_with_password(&self, name: &str, password: &str) {
        self.kadmin(&format!("addprinc -pw {password} {}", self.principal(name)));
    }

    /// Writes the current keys of `names` into a keytab file `file` (in the KDC's folder).
    pub fn keytab(&self, file: &str, names: &[&str]) -> PathBuf {
        let p = self.dir.path().join(file);
        for n in names {
            self.kadmin(&format!(
                "ktadd -k {} -norandkey {}",
                p.display(),
                self.principal(n)
            ));
        }
        p
    }

    /// `kinit -k -t keytab principal` into a new ticket cache, then tickets for `services`
    /// (`kvno`), so that an in-process initiator needs no KDC. Returns the cache file.
    pub fn kinit(&self, principal: &str, keytab: &Path, services: &[&str]) -> PathBuf {
        let cache = self
            .dir
            .path()
            .join(format!("cc-{}", principal.replace(['/', '@'], "_")));
        let cc = format!("FILE:{}", cache.display());
        self.run(
            Command::new(sbin("kinit"))
                .args(["-c", &cc, "-k", "-t"])
                .arg(keytab)
                .arg(self.principal(principal)),
        );
        for s in services {
            self.run(Command::new(sbin("kvno")).args(["-c", &cc, s]));
        }
        cache
    }
}
