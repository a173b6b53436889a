//! Where users' groups come from, for the `"users groups"` half of ACLs and proxy-user rules.

use crate::config::{GroupSourceKind, GroupsConfig};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Groups {
    kind: GroupSourceKind,
    fixed: BTreeMap<String, Vec<String>>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

impl Groups {
    pub fn new(cfg: &GroupsConfig) -> Self {
        Self {
            kind: cfg.source,
            fixed: cfg.users.clone(),
            ttl: cfg.cache,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn of(&self, user: &str) -> Vec<String> {
        match self.kind {
            GroupSourceKind::Static => self.fixed.get(user).cloned().unwrap_or_default(),
            GroupSourceKind::Host => {
                let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((at, g)) = c.get(user)
                    && at.elapsed() < self.ttl
                {
                    return g.clone();
                }
                let g = host_groups(
                    user,
                    &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
                    &std::fs::read_to_string("/etc/group").unwrap_or_default(),
                );
                c.insert(user.to_owned(), (Instant::now(), g.clone()));
                g
            }
        }
    }
}

/// The user's primary group (from passwd) then supplementary groups (from group), like `id -Gn`.
pub fn host_groups(user: &str, passwd: &str, group: &str) -> Vec<String> {
    let gid = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == user)
        .map(|f| f[3].to_owned());
    let mut out = Vec::new();
    for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
        if f.len() < 4 {
            continue;
        }
        if gid.as_deref() == Some(f[2]) {
            out.insert(0, f[0].to_owned());
        } else if f[3].split(',').any(|m| m == user) {
            out.push(f[0].to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_group_files() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        let group = "root:x:0:\nalice:x:1000:\nstaff:x:50:bob,alice\nwheel:x:10:bob\n";
        assert_eq!(host_groups("alice", passwd, group), vec!["alice", "staff"]);
        assert_eq!(host_groups("bob", passwd, group), vec!["staff", "wheel"]);
        assert!(host_groups("nobody", passwd, group).is_empty());
    }

    #[test]
    fn static_map() {
        let mut cfg = GroupsConfig::default();
        cfg.users.insert("alice".into(), vec!["staff".into()]);
        let g = Groups::new(&cfg);
        assert_eq!(g.of("alice"), vec!["staff"]);
        assert!(g.of("bob").is_empty());
    }
}
