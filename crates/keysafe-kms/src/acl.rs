//! `kms-acls.xml`, read as Hadoop's `KMSACLs` and `KeyAuthorizationKeyProvider` read it: operation
//! ACLs (`hadoop.kms.acl.<TYPE>`), blacklists (`hadoop.kms.blacklist.<TYPE>`), per-key ACLs
//! (`key.acl.<name>.<OP>`), default and whitelist key ACLs. One deliberate difference: an
//! operation ACL the file does not set defaults to the gateway's key administrators
//! (`key_admins`), not to Hadoop's `*`, and without a file every ACL is the administrators'.
//! The file is re-read when its modification time changes (checked every second); a file that
//! does not parse keeps the previous ACLs and is reported once per change.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// `hadoop.kms.acl.<TYPE>` types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpType {
    Create,
    Delete,
    Rollover,
    Get,
    GetKeys,
    GetMetadata,
    SetKeyMaterial,
    GenerateEek,
    DecryptEek,
}

impl OpType {
    pub const ALL: [OpType; 9] = [
        OpType::Create,
        OpType::Delete,
        OpType::Rollover,
        OpType::Get,
        OpType::GetKeys,
        OpType::GetMetadata,
        OpType::SetKeyMaterial,
        OpType::GenerateEek,
        OpType::DecryptEek,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            OpType::Create => "CREATE",
            OpType::Delete => "DELETE",
            OpType::Rollover => "ROLLOVER",
            OpType::Get => "GET",
            OpType::GetKeys => "GET_KEYS",
            OpType::GetMetadata => "GET_METADATA",
            OpType::SetKeyMaterial => "SET_KEY_MATERIAL",
            OpType::GenerateEek => "GENERATE_EEK",
            OpType::DecryptEek => "DECRYPT_EEK",
        }
    }
}

/// Key ACL operation types (`KeyOpType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOp {
    Management,
    GenerateEek,
    DecryptEek,
    Read,
    All,
}

impl KeyOp {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOp::Management => "MANAGEMENT",
            KeyOp::GenerateEek => "GENERATE_EEK",
            KeyOp::DecryptEek => "DECRYPT_EEK",
            KeyOp::Read => "READ",
            KeyOp::All => "ALL",
        }
    }
    fn parse(s: &str) -> Option<KeyOp> {
        Some(match s {
            "MANAGEMENT" => KeyOp::Management,
            "GENERATE_EEK" => KeyOp::GenerateEek,
            "DECRYPT_EEK" => KeyOp::DecryptEek,
            "READ" => KeyOp::Read,
            "ALL" => KeyOp::All,
            _ => return None,
        })
    }
}

/// Hadoop's `AccessControlList`: `"users groups"`, `*` for everyone, blank for nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    all: bool,
    users: HashSet<String>,
    groups: HashSet<String>,
}

impl Acl {
    pub fn parse(s: &str) -> Acl {
        let parts: Vec<&str> = s.splitn(2, ' ').collect();
        if parts.iter().any(|p| p.contains('*') && p.trim() == "*") {
            return Acl {
                all: true,
                ..Acl::default()
            };
        }
        let list = |p: Option<&&str>| -> HashSet<String> {
            p.map(|p| {
                p.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
        };
        Acl {
            all: false,
            users: list(parts.first()),
            groups: list(parts.get(1)),
        }
    }
    pub fn everyone() -> Acl {
        Acl::parse("*")
    }
    pub fn allows(&self, user: &str, groups: &[String]) -> bool {
        self.all || self.users.contains(user) || groups.iter().any(|g| self.groups.contains(g))
    }
}

/// One parsed `kms-acls.xml`.
#[derive(Debug, Clone, Default)]
pub struct AclSet {
    ops: HashMap<OpType, Acl>,
    blacklist: HashMap<OpType, Acl>,
    key_acls: HashMap<String, HashMap<KeyOp, Acl>>,
    defaults: HashMap<KeyOp, Acl>,
    whitelist: HashMap<KeyOp, Acl>,
}

impl AclSet {
    /// What the gateway uses without an ACL file: every operation and every default key ACL is
    /// the key administrators' (`admins`), so nobody else reads key material.
    pub fn admins_only(admins: &Acl) -> AclSet {
        let mut s = AclSet::default();
        for op in OpType::ALL {
            s.ops.insert(op, admins.clone());
        }
        for op in [
            KeyOp::Management,
            KeyOp::GenerateEek,
            KeyOp::DecryptEek,
            KeyOp::Read,
        ] {
            s.defaults.insert(op, admins.clone());
        }
        s
    }

    /// Builds from Hadoop configuration properties; operation ACLs they do not set are the
    /// key administrators' (`admins`).
    pub fn from_properties(props: &[(String, String)], admins: &Acl) -> AclSet {
        let mut s = AclSet::default();
        for op in OpType::ALL {
            s.ops.insert(op, admins.clone());
        }
        for (k, v) in props {
            if let Some(t) = k.strip_prefix("hadoop.kms.acl.") {
                if let Some(op) = OpType::ALL.iter().find(|o| o.as_str() == t) {
                    s.ops.insert(*op, Acl::parse(v));
                }
            } else if let Some(t) = k.strip_prefix("hadoop.kms.blacklist.") {
                if let Some(op) = OpType::ALL.iter().find(|o| o.as_str() == t) {
                    s.blacklist.insert(*op, Acl::parse(v));
                }
            } else if let Some(rest) = k.strip_prefix("default.key.acl.") {
                match KeyOp::parse(rest) {
                    Some(KeyOp::All) | None => {
                        tracing::warn!(property = %k, "ignored: not a valid default key ACL")
                    }
                    Some(op) => {
                        s.defaults.insert(op, Acl::parse(v));
                    }
                }
            } else if let Some(rest) = k.strip_prefix("whitelist.key.acl.") {
                match KeyOp::parse(rest) {
                    Some(KeyOp::All) | None => {
                        tracing::warn!(property = %k, "ignored: not a valid whitelist key ACL")
                    }
                    Some(op) => {
                        s.whitelist.insert(op, Acl::parse(v));
                    }
                }
            } else if let Some(rest) = k.strip_prefix("key.acl.") {
                match rest
                    .rsplit_once('.')
                    .and_then(|(n, o)| Some((n, KeyOp::parse(o)?)))
                {
                    Some((name, op)) if !name.is_empty() => {
                        s.key_acls
                            .entry(name.to_owned())
                            .or_default()
                            .insert(op, Acl::parse(v));
                    }
                    _ => tracing::warn!(property = %k, "ignored: not a valid key ACL"),
                }
            }
        }
        s
    }

    /// `hadoop.kms.acl.<op>` allows the user and the blacklist does not name them.
    pub fn has_access(&self, op: OpType, user: &str, groups: &[String]) -> bool {
        let allowed = self.ops.get(&op).is_none_or(|a| a.allows(user, groups));
        let black = self
            .blacklist
            .get(&op)
            .is_some_and(|b| b.allows(user, groups));
        allowed && !black
    }

    /// `isACLPresent`.
    pub fn is_acl_present(&self, acl_name: &str, op: KeyOp) -> bool {
        self.key_acls.contains_key(acl_name)
            || self.defaults.contains_key(&op)
            || self.whitelist.contains_key(&op)
    }

    fn check_key(&self, acl_name: &str, user: &str, groups: &[String], op: KeyOp) -> bool {
        let acls = self.key_acls.get(acl_name).unwrap_or(&self.defaults);
        acls.get(&op).is_some_and(|a| a.allows(user, groups))
    }

    fn has_access_to_key(&self, acl_name: &str, user: &str, groups: &[String], op: KeyOp) -> bool {
        self.check_key(acl_name, user, groups, op)
            || self
                .whitelist
                .get(&op)
                .is_some_and(|a| a.allows(user, groups))
    }

    /// `KeyAuthorizationKeyProvider`'s check for an operation on an existing key.
    pub fn key_allowed(&self, acl_name: &str, user: &str, groups: &[String], op: KeyOp) -> bool {
        self.is_acl_present(acl_name, op)
            && (self.has_access_to_key(acl_name, user, groups, op)
                || self.has_access_to_key(acl_name, user, groups, KeyOp::All))
    }
}

/// Parses a Hadoop configuration XML file (`<configuration><property><name/><value/>`).
pub fn parse_hadoop_xml(text: &str) -> Result<Vec<(String, String)>, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not valid XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "configuration" {
        return Err("the root element must be <configuration>".into());
    }
    let mut out = Vec::new();
    for p in root.children().filter(|n| n.has_tag_name("property")) {
        let text_of = |tag: &str| {
            p.children()
                .find(|n| n.has_tag_name(tag))
                .map(|n| n.text().unwrap_or("").to_owned())
        };
        if let (Some(name), Some(value)) = (text_of("name"), text_of("value")) {
            out.push((name.trim().to_owned(), value));
        }
    }
    Ok(out)
}

/// What the last check of the file saw (to reload on change and report a failure once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    Loaded(SystemTime),
    /// A version that does not parse (its modification time), or a file that is gone (None).
    Broken(Option<SystemTime>),
}

/// The current ACLs, reloaded from the file when it changes.
pub struct Acls {
    current: RwLock<Arc<AclSet>>,
    path: Option<PathBuf>,
    admins: Acl,
    state: RwLock<Option<FileState>>,
}

impl Acls {
    /// A fixed set (no file).
    pub fn fixed(set: AclSet) -> Arc<Acls> {
        Arc::new(Acls {
            current: RwLock::new(Arc::new(set)),
            path: None,
            admins: Acl::default(),
            state: RwLock::new(None),
        })
    }

    /// Loads `path` (it must exist and parse) and returns the holder; operation ACLs the file
    /// does not set are `admins`.
    pub fn from_file(path: &Path, admins: &Acl) -> anyhow::Result<Arc<Acls>> {
        let (set, mtime) = load(path, admins)?;
        Ok(Arc::new(Acls {
            current: RwLock::new(Arc::new(set)),
            path: Some(path.to_owned()),
            admins: admins.clone(),
            state: RwLock::new(Some(FileState::Loaded(mtime))),
        }))
    }

    /// False while the file is missing or does not parse (the previous ACLs are in force).
    pub fn file_ok(&self) -> bool {
        !matches!(
            *self.state.read().unwrap_or_else(|p| p.into_inner()),
            Some(FileState::Broken(_))
        )
    }

    pub fn get(&self) -> Arc<AclSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_state(&self, s: FileState) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    /// Re-reads the file if its modification time changed. A broken or missing file keeps the
    /// old ACLs and is reported once (again only after it changes). Returns whether the ACLs
    /// were replaced.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let last = *self.state.read().unwrap_or_else(|p| p.into_inner());
        let mtime = match std::fs::metadata(path).and_then(|m| m.modified()) {
            Ok(m) => m,
            Err(e) => {
                if last != Some(FileState::Broken(None)) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the KMS ACL file; keeping the previous ACLs");
                    self.set_state(FileState::Broken(None));
                }
                return false;
            }
        };
        if last == Some(FileState::Loaded(mtime)) || last == Some(FileState::Broken(Some(mtime))) {
            return false;
        }
        match load(path, &self.admins) {
            Ok((set, mtime)) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                self.set_state(FileState::Loaded(mtime));
                tracing::info!(path = %path.display(), "reloaded KMS ACLs");
                true
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot reload KMS ACLs; keeping the previous ones");
                self.set_state(FileState::Broken(Some(mtime)));
                false
            }
        }
    }

    /// Checks the file every second until the holder is dropped elsewhere.
    pub fn spawn_watcher(self: &Arc<Self>) {
        if self.path.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                match weak.upgrade() {
                    Some(a) => {
                        a.reload_if_changed();
                    }
                    None => break,
                }
            }
        });
    }
}

fn load(path: &Path, admins: &Acl) -> anyhow::Result<(AclSet, SystemTime)> {
    let mtime = std::fs::metadata(path)?.modified()?;
    let text = std::fs::read_to_string(path)?;
    let props = parse_hadoop_xml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((AclSet::from_properties(&props, admins), mtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn acl_syntax() {
        assert!(Acl::parse("*").allows("x", &[]));
        assert!(Acl::parse(" * ").allows("x", &[]));
        assert!(!Acl::parse("").allows("x", &[]));
        assert!(!Acl::parse(" ").allows("x", &[]));
        // Like Hadoop, the first space separates users from groups.
        let odd = Acl::parse("alice, bob admins");
        assert!(odd.allows("alice", &[]));
        assert!(!odd.allows("bob", &[]));
        let a = Acl::parse("alice,bob admins,ops");
        assert!(a.allows("alice", &[]));
        assert!(a.allows("bob", &[]));
        assert!(!a.allows("carol", &[]));
        assert!(a.allows("carol", &g(&["ops"])));
        let grp = Acl::parse(" staff");
        assert!(!grp.allows("staff", &[]));
        assert!(grp.allows("x", &g(&["staff"])));
    }

    const XML: &str = r#"<?xml version="1.0"?>
<configuration>
  <!-- comment -->
  <property><name>hadoop.kms.acl.CREATE</name><value>admin</value></property>
  <property><name>hadoop.kms.acl.GET_KEYS</name><value> </value></property>
  <property><name>hadoop.kms.blacklist.DECRYPT_EEK</name><value>hdfs</value></property>
  <property><name>key.acl.k1.DECRYPT_EEK</name><value>alice</value></property>
  <property><name>key.acl.k1.READ</name><value>alice</value></property>
  <property><name>key.acl.dotted.name.ALL</name><value>bob</value></property>
  <property><name>default.key.acl.MANAGEMENT</name><value>admin</value></property>
  <property><name>default.key.acl.GENERATE_EEK</name><value>*</value></property>
  <property><name>default.key.acl.ALL</name><value>*</value></property>
  <property><name>whitelist.key.acl.READ</name><value>auditor</value></property>
</configuration>"#;

    #[test]
    fn op_acls_and_blacklist() {
        let s = AclSet::from_properties(&parse_hadoop_xml(XML).unwrap(), &Acl::parse("root"));
        assert!(s.has_access(OpType::Create, "admin", &[]));
        assert!(!s.has_access(OpType::Create, "alice", &[]));
        assert!(
            !s.has_access(OpType::GetKeys, "admin", &[]),
            "blank = nobody"
        );
        assert!(
            !s.has_access(OpType::Delete, "anyone", &[]),
            "absent = the key administrators, not *"
        );
        assert!(
            s.has_access(OpType::Delete, "root", &[]),
            "root administers"
        );
        assert!(
            !s.has_access(OpType::DecryptEek, "alice", &[]),
            "not set: administrators only"
        );
        assert!(s.has_access(OpType::DecryptEek, "root", &[]));
        assert!(
            !s.has_access(OpType::DecryptEek, "hdfs", &[]),
            "blacklisted"
        );
    }

    #[test]
    fn key_acls() {
        let s = AclSet::from_properties(&parse_hadoop_xml(XML).unwrap(), &Acl::parse("root"));
        // k1 has its own entries: defaults do not apply to it.
        assert!(s.key_allowed("k1", "alice", &[], KeyOp::DecryptEek));
        assert!(!s.key_allowed("k1", "bob", &[], KeyOp::DecryptEek));
        assert!(
            !s.key_allowed("k1", "admin", &[], KeyOp::Management),
            "k1 has entries but none for MANAGEMENT"
        );
        assert!(!s.key_allowed("k1", "alice", &[], KeyOp::GenerateEek));
        // The whitelist is OR-ed in for every key.
        assert!(s.key_allowed("k1", "auditor", &[], KeyOp::Read));
        // ALL on a dotted key name.
        assert!(s.key_allowed("dotted.name", "bob", &[], KeyOp::DecryptEek));
        assert!(!s.key_allowed("dotted.name", "alice", &[], KeyOp::DecryptEek));
        // Other keys fall back to the defaults; default.key.acl.ALL is ignored.
        assert!(s.key_allowed("other", "admin", &[], KeyOp::Management));
        assert!(!s.key_allowed("other", "alice", &[], KeyOp::Management));
        assert!(s.key_allowed("other", "alice", &[], KeyOp::GenerateEek));
        assert!(
            !s.key_allowed("other", "alice", &[], KeyOp::DecryptEek),
            "no default"
        );
        assert!(!s.is_acl_present("other", KeyOp::DecryptEek));
    }

    #[test]
    fn without_a_file_only_administrators() {
        let s = AclSet::admins_only(&Acl::parse("alice kms-admins"));
        for op in OpType::ALL {
            assert!(s.has_access(op, "alice", &[]));
            assert!(s.has_access(op, "zed", &g(&["kms-admins"])));
            assert!(!s.has_access(op, "hdfs", &[]), "{op:?}");
        }
        assert!(s.key_allowed("k", "alice", &[], KeyOp::Read));
        assert!(!s.key_allowed("k", "hdfs", &[], KeyOp::Read));
        assert!(!s.key_allowed("k", "hdfs", &[], KeyOp::DecryptEek));
        // No administrators configured: nobody.
        let none = AclSet::admins_only(&Acl::parse(""));
        for op in OpType::ALL {
            assert!(!none.has_access(op, "alice", &[]));
        }
    }

    #[test]
    fn bad_xml_is_refused() {
        assert!(parse_hadoop_xml("<configuration>").is_err());
        assert!(parse_hadoop_xml("<other/>").is_err());
    }

    #[test]
    fn reload_on_change_and_keep_old_on_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kms-acls.xml");
        std::fs::write(&p, XML).unwrap();
        let a = Acls::from_file(&p, &Acl::parse("")).unwrap();
        assert!(!a.get().has_access(OpType::Create, "alice", &[]));
        let newer = XML.replace(
            "<value>admin</value></property>\n  <property><name>hadoop.kms.acl.GET_KEYS",
            "<value>alice</value></property>\n  <property><name>hadoop.kms.acl.GET_KEYS",
        );
        std::fs::write(&p, newer).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        a.reload_if_changed();
        assert!(a.get().has_access(OpType::Create, "alice", &[]));
        std::fs::write(&p, "<configuration>").unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(10))
            .unwrap();
        assert!(!a.reload_if_changed());
        assert!(a.get().has_access(OpType::Create, "alice", &[]), "kept");
        // Reported once: the same broken version is not read (nor logged) again.
        assert_eq!(
            *a.state.read().unwrap(),
            Some(FileState::Broken(Some(
                std::fs::metadata(&p).unwrap().modified().unwrap()
            )))
        );
        assert!(!a.reload_if_changed());
        // Gone: kept, reported once; back and valid: loaded.
        std::fs::remove_file(&p).unwrap();
        assert!(!a.reload_if_changed());
        assert_eq!(*a.state.read().unwrap(), Some(FileState::Broken(None)));
        std::fs::write(&p, XML).unwrap();
        assert!(a.reload_if_changed());
        assert!(!a.get().has_access(OpType::Create, "alice", &[]));
    }
}
