//! Hadoop's `auth_to_local` rule language (`hadoop.security.auth_to_local`, the gateway's
//! `auth.name_rules`), as `org.apache.hadoop.security.authentication.util.KerberosName`
//! evaluates it: `RULE:[n:fmt](match)s/from/to/g` with the `/L` lower-case flag, `DEFAULT`, and
//! the `hadoop` / `mit` mechanisms. Pure string work: no Kerberos library is involved.
//!
//! Patterns are Java regular expressions in Hadoop; here they are compiled with the `regex`
//! crate, which accepts the same syntax except backreferences and look-around (a rule using them
//! is refused when the configuration is loaded, never silently misread).

use regex::Regex;
use std::fmt;

/// What went wrong mapping or parsing names (the messages are Hadoop's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A principal that is not `primary[/instance][@REALM]`.
    #[error("Malformed Kerberos name: {0}")]
    Malformed(String),
    /// The rules cannot be parsed (configuration error).
    #[error("Invalid rule: {0}")]
    InvalidRule(String),
    /// No rule applied (`hadoop` mechanism), or a rule produced a name with `/` or `@`.
    #[error("{0}")]
    NoMatchingRule(String),
    /// A `$n` in a rule's format names a component the principal does not have.
    #[error("{0}")]
    BadFormat(String),
}

/// `hadoop.security.auth_to_local.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// Names with `/` or `@` after a rule are an error, and so is a principal no rule maps.
    #[default]
    Hadoop,
    /// MIT's evaluation: such names are allowed, and an unmapped principal maps to itself.
    Mit,
}

/// A principal split as `KerberosName` splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KerberosName {
    pub service: String,
    pub host: Option<String>,
    pub realm: Option<String>,
}

impl KerberosName {
    /// `primary[/instance][@REALM]`; a name with neither `/`-`@` structure nor `@` is kept
    /// whole as the primary (as Hadoop does).
    pub fn parse(name: &str) -> Result<KerberosName, NameError> {
        let (head, realm) = match name.split_once('@') {
            Some((h, r)) => (h, Some(r)),
            None => (name, None),
        };
        let (service, host) = match head.split_once('/') {
            Some((s, h)) => (s, Some(h)),
            None => (head, None),
        };
        let part_ok = |s: &str| !s.is_empty() && !s.contains(['/', '@']);
        let well_formed = part_ok(service) && host.is_none_or(part_ok) && realm.is_none_or(part_ok);
        if !well_formed {
            if name.contains('@') {
                return Err(NameError::Malformed(name.to_owned()));
            }
            return Ok(KerberosName {
                service: name.to_owned(),
                host: None,
                realm: None,
            });
        }
        Ok(KerberosName {
            service: service.to_owned(),
            host: host.map(str::to_owned),
            realm: realm.map(str::to_owned),
        })
    }
}

impl fmt::Display for KerberosName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.service)?;
        if let Some(h) = &self.host {
            write!(f, "/{h}")?;
        }
        if let Some(r) = &self.realm {
            write!(f, "@{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Explicit {
        components: usize,
        format: String,
        /// The `(match)` part, anchored at both ends (Java's `Matcher.matches`).
        matcher: Option<Regex>,
        /// `s/from/to/`: `from` and Java's replacement syntax `to`.
        substitution: Option<(Regex, String)>,
        global: bool,
        /// The text of the rule, for messages.
        text: String,
    },
}

/// One rule with its `/L` flag.
#[derive(Debug, Clone)]
struct RuleEntry {
    rule: Rule,
    lower: bool,
}

/// A parsed rule list with its mechanism and the default realm (`DEFAULT` maps principals of
/// that realm to their first component).
#[derive(Debug, Clone)]
pub struct NameRules {
    rules: Vec<RuleEntry>,
    mechanism: Mechanism,
    default_realm: String,
}

fn rule_parser() -> Result<Regex, NameError> {
    // KerberosName.ruleParser, matched at the start of what remains (`lookingAt`).
    Regex::new(
        r"^\s*((DEFAULT)|(RULE:\[(\d*):([^\]]*)](\(([^)]*)\))?(s/([^/]*)/([^/]*)/(g)?)?))/?(L)?",
    )
    .map_err(|e| NameError::InvalidRule(e.to_string()))
}

fn compile(pattern: &str, anchored: bool, rule: &str) -> Result<Regex, NameError> {
    let p = if anchored {
        format!("^(?:{pattern})$")
    } else {
        pattern.to_owned()
    };
    Regex::new(&p).map_err(|e| NameError::InvalidRule(format!("{rule}: {e}")))
}

impl NameRules {
    /// Parses `rules` (whitespace or newlines between rules, as in `core-site.xml`).
    pub fn parse(
        rules: &str,
        mechanism: Mechanism,
        default_realm: &str,
    ) -> Result<NameRules, NameError> {
        let parser = rule_parser()?;
        let mut out = Vec::new();
        let mut remaining = rules.trim();
        while !remaining.is_empty() {
            let c = parser
                .captures(remaining)
                .ok_or_else(|| NameError::InvalidRule(remaining.to_owned()))?;
            let whole = c.get(0).map_or("", |m| m.as_str());
            let lower = c.get(12).is_some();
            let rule = if c.get(2).is_some() {
                Rule::Default
            } else {
                let text = c.get(1).map_or("", |m| m.as_str()).to_owned();
                let components = c
                    .get(4)
                    .map_or("", |m| m.as_str())
                    .parse::<usize>()
                    .map_err(|_| NameError::InvalidRule(remaining.to_owned()))?;
                let matcher = c
                    .get(7)
                    .map(|m| compile(m.as_str(), true, &text))
                    .transpose()?;
                let substitution = match (c.get(9), c.get(10)) {
                    (Some(from), Some(to)) => Some((
                        compile(from.as_str(), false, &text)?,
                        to.as_str().to_owned(),
                    )),
                    _ => None,
                };
                Rule::Explicit {
                    components,
                    format: c.get(5).map_or("", |m| m.as_str()).to_owned(),
                    matcher,
                    substitution,
                    global: c.get(11).is_some(),
                    text,
                }
            };
            out.push(RuleEntry { rule, lower });
            if whole.is_empty() {
                return Err(NameError::InvalidRule(remaining.to_owned()));
            }
            remaining = &remaining[whole.len()..];
            // Hadoop trims only at the start of the next match (`\s*`); trailing space ends.
            remaining = remaining.trim_start();
        }
        Ok(NameRules {
            rules: out,
            mechanism,
            default_realm: default_realm.to_owned(),
        })
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// `KerberosName.getShortName`: the local user name of `principal`.
    pub fn short_name(&self, principal: &str) -> Result<String, NameError> {
        let name = KerberosName::parse(principal)?;
        let params: Vec<String> = match (&name.host, &name.realm) {
            (None, None) => return Ok(name.service),
            // Java appends a null realm as the text "null"; kept for identical results.
            (None, Some(r)) => vec![r.clone(), name.service.clone()],
            (Some(h), r) => vec![
                r.clone().unwrap_or_else(|| "null".to_owned()),
                name.service.clone(),
                h.clone(),
            ],
        };
        let realm_matches = name.realm.as_deref() == Some(self.default_realm.as_str());
        for entry in &self.rules {
            if let Some(out) = self.apply(entry, &params, realm_matches)? {
                return Ok(out);
            }
        }
        match self.mechanism {
            Mechanism::Hadoop => Err(NameError::NoMatchingRule(format!(
                "No rules applied to {name}"
            ))),
            Mechanism::Mit => Ok(name.to_string()),
        }
    }

    fn apply(
        &self,
        entry: &RuleEntry,
        params: &[String],
        realm_matches: bool,
    ) -> Result<Option<String>, NameError> {
        let result = match &entry.rule {
            Rule::Default => realm_matches.then(|| params[1].clone()),
            Rule::Explicit {
                components,
                format,
                matcher,
                substitution,
                global,
                ..
            } => {
                if params.len() - 1 != *components {
                    None
                } else {
                    let base = replace_parameters(format, params)?;
                    if matcher.as_ref().is_none_or(|m| m.is_match(&base)) {
                        Some(match substitution {
                            None => base,
                            Some((from, to)) => substitute(&base, from, to, *global),
                        })
                    } else {
                        None
                    }
                }
            }
        };
        if let Some(r) = &result
            && r.contains(['/', '@'])
            && self.mechanism == Mechanism::Hadoop
        {
            return Err(NameError::NoMatchingRule(format!(
                "Non-simple name {r} after auth_to_local rule {}",
                entry.display()
            )));
        }
        Ok(result.map(|r| if entry.lower { r.to_lowercase() } else { r }))
    }
}

impl RuleEntry {
    fn display(&self) -> String {
        let mut s = match &self.rule {
            Rule::Default => "DEFAULT".to_owned(),
            Rule::Explicit { text, .. } => text.clone(),
        };
        if self.lower {
            s.push_str("/L");
        }
        s
    }
}

/// `Rule.replaceParameters`: `$n` is component `n` (`$0` the realm); other text is copied.
fn replace_parameters(format: &str, params: &[String]) -> Result<String, NameError> {
    let mut out = String::with_capacity(format.len() + 16);
    let mut rest = format;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let num: usize = after[..digits].parse().map_err(|_| {
            NameError::BadFormat(format!(
                "bad format in username mapping in {}",
                &after[..digits]
            ))
        })?;
        let p = params.get(num).ok_or_else(|| {
            NameError::BadFormat(format!(
                "index {num} from {format} is outside of the valid range 0 to {}",
                params.len() - 1
            ))
        })?;
        out.push_str(p);
        rest = &after[digits..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Java's `Matcher.replaceFirst` / `replaceAll` with Java's replacement syntax (`$n` group
/// references taking as many digits as still name a group, `\x` for a literal `x`).
fn substitute(base: &str, from: &Regex, to: &str, global: bool) -> String {
    let expand = |caps: &regex::Captures<'_>| -> String {
        let groups = caps.len() - 1;
        let mut out = String::new();
        let mut chars = to.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                '$' => {
                    let mut num: Option<usize> = None;
                    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                        let next = num.unwrap_or(0) * 10 + d as usize;
                        if num.is_some() && next > groups {
                            break;
                        }
                        num = Some(next);
                        chars.next();
                    }
                    match num {
                        Some(n) => {
                            if let Some(m) = caps.get(n) {
                                out.push_str(m.as_str());
                            }
                        }
                        // Java throws for a lone `$`; a literal is the least surprising here.
                        None => out.push('$'),
                    }
                }
                c => out.push(c),
            }
        }
        out
    };
    if global {
        from.replace_all(base, |c: &regex::Captures<'_>| expand(c))
            .into_owned()
    } else {
        from.replace(base, |c: &regex::Captures<'_>| expand(c))
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    //! Hadoop's own `TestKerberosName` cases (hadoop-auth), ported.
    use super::*;

    const REALM: &str = "EXAMPLE.COM";

    fn yahoo_rules(m: Mechanism) -> NameRules {
        NameRules::parse(
            "RULE:[1:$1@$0](.*@YAHOO\\.COM)s/@.*//\n\
             RULE:[2:$1](johndoe)s/^.*$/guest/\n\
             RULE:[2:$1;$2](^.*;admin$)s/;admin$//\n\
             RULE:[2:$2](root)\n\
             DEFAULT",
            m,
            REALM,
        )
        .unwrap()
    }

    #[test]
    fn test_rules() {
        let r = yahoo_rules(Mechanism::Hadoop);
        let t = |from: &str| r.short_name(from).unwrap();
        assert_eq!(t("omalley@EXAMPLE.COM"), "omalley");
        assert_eq!(t("hdfs/10.0.0.1@EXAMPLE.COM"), "hdfs");
        assert_eq!(t("oom@YAHOO.COM"), "oom");
        assert_eq!(t("johndoe/zoo@FOO.COM"), "guest");
        assert_eq!(t("joe/admin@FOO.COM"), "joe");
        assert_eq!(t("joe/root@FOO.COM"), "root");
    }

    #[test]
    fn test_anti_patterns() {
        // checkBadName
        assert!(KerberosName::parse("owen/owen/owen@FOO.COM").is_err());
        assert!(KerberosName::parse("owen@foo/bar.com").is_err());
        // checkBadTranslation under the hadoop mechanism ...
        let r = yahoo_rules(Mechanism::Hadoop);
        assert!(matches!(
            r.short_name("foo@ACME.COM"),
            Err(NameError::NoMatchingRule(_))
        ));
        assert!(matches!(
            r.short_name("root/joe@FOO.COM"),
            Err(NameError::NoMatchingRule(_))
        ));
        // ... and the names unchanged under MIT's.
        let r = yahoo_rules(Mechanism::Mit);
        assert_eq!(r.short_name("foo@ACME.COM").unwrap(), "foo@ACME.COM");
        assert_eq!(
            r.short_name("root/joe@FOO.COM").unwrap(),
            "root/joe@FOO.COM"
        );
    }

    #[test]
    fn test_parsing() {
        let full = KerberosName::parse("HTTP/abc.com@EXAMPLE.COM").unwrap();
        assert_eq!(full.service, "HTTP");
        assert_eq!(full.host.as_deref(), Some("abc.com"));
        assert_eq!(full.realm.as_deref(), Some("EXAMPLE.COM"));
        let no_realm = KerberosName::parse("HTTP/abc.com").unwrap();
        assert_eq!(no_realm.host.as_deref(), Some("abc.com"));
        assert_eq!(no_realm.realm, None);
        let no_host = KerberosName::parse("HTTP@EXAMPLE.COM").unwrap();
        assert_eq!(no_host.host, None);
        assert_eq!(no_host.realm.as_deref(), Some("EXAMPLE.COM"));
        assert_eq!(full.to_string(), "HTTP/abc.com@EXAMPLE.COM");
        // Without '@' and not two components: the whole text is the primary.
        let odd = KerberosName::parse("a/b/c").unwrap();
        assert_eq!(odd.service, "a/b/c");
    }

    #[test]
    fn test_to_lower_case() {
        let r = NameRules::parse(
            "RULE:[1:$1]/L\n\
             RULE:[2:$1]/L\n\
             RULE:[2:$1;$2](^.*;admin$)s/;admin$///L\n\
             RULE:[2:$1;$2](^.*;guest$)s/;guest$//g/L\n\
             DEFAULT",
            Mechanism::Hadoop,
            REALM,
        )
        .unwrap();
        for p in [
            "Joe@FOO.COM",
            "Joe/root@FOO.COM",
            "Joe/admin@FOO.COM",
            "Joe/guestguest@FOO.COM",
        ] {
            assert_eq!(r.short_name(p).unwrap(), "joe", "{p}");
        }
    }

    #[test]
    fn default_rule_and_realms() {
        let r = NameRules::parse("DEFAULT", Mechanism::Hadoop, REALM).unwrap();
        assert_eq!(r.short_name("alice@EXAMPLE.COM").unwrap(), "alice");
        assert_eq!(r.short_name("nn/host1@EXAMPLE.COM").unwrap(), "nn");
        assert!(r.short_name("alice@OTHER.COM").is_err(), "another realm");
        // A short name is already simple.
        assert_eq!(r.short_name("alice").unwrap(), "alice");
        let mit = NameRules::parse("DEFAULT", Mechanism::Mit, REALM).unwrap();
        assert_eq!(
            mit.short_name("alice@OTHER.COM").unwrap(),
            "alice@OTHER.COM"
        );
    }

    #[test]
    fn substitutions_and_replacement_syntax() {
        // The classic cluster rules: service principals of the realm to local service users.
        let r = NameRules::parse(
            "RULE:[2:$1@$0]([nd]n@EXAMPLE\\.COM)s/.*/hdfs/\n\
             RULE:[2:$1@$0](rm@EXAMPLE\\.COM)s/.*/yarn/\n\
             RULE:[1:$1@$0](.*@EXAMPLE\\.COM)s/(.*)@.*/u_$1/\n\
             RULE:[1:$1](a+)s/a/b/g",
            Mechanism::Hadoop,
            REALM,
        )
        .unwrap();
        assert_eq!(r.short_name("nn/h1@EXAMPLE.COM").unwrap(), "hdfs");
        assert_eq!(r.short_name("dn/h2@EXAMPLE.COM").unwrap(), "hdfs");
        assert_eq!(r.short_name("rm/h3@EXAMPLE.COM").unwrap(), "yarn");
        assert_eq!(r.short_name("carol@EXAMPLE.COM").unwrap(), "u_carol");
        assert_eq!(r.short_name("aaa@X").unwrap(), "bbb", "g replaces all");
        assert!(r.short_name("jt/h@EXAMPLE.COM").is_err());
        // $ followed by more digits than groups: Java takes the longest valid group number.
        let x =
            NameRules::parse("RULE:[1:$1](.*)s/(.)(.*)/$10/", Mechanism::Hadoop, REALM).unwrap();
        assert_eq!(x.short_name("ab@R").unwrap(), "a0");
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "RULE:[x:$1]",
            "RULE:[1:$1",
            "NONSENSE",
            "RULE:[1:$1](a(b)",
            // Backreferences are Java-only.
            "RULE:[1:$1](a)s/(a)\\1/x/",
        ] {
            assert!(
                NameRules::parse(bad, Mechanism::Hadoop, REALM).is_err(),
                "{bad}"
            );
        }
        let r = NameRules::parse("RULE:[1:$3]", Mechanism::Hadoop, REALM).unwrap();
        assert!(matches!(r.short_name("a@R"), Err(NameError::BadFormat(_))));
        assert!(matches!(
            KerberosName::parse("a@b@c"),
            Err(NameError::Malformed(_))
        ));
    }
}
