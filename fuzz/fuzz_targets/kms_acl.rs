//! `kms-acls.xml` (keysafe-kms `acl`): Hadoop's configuration XML, the ACL syntax
//! (`"users groups"`, `*`), and the decisions made from them. Properties: nothing panics or
//! hangs; properties written as XML (escaped) read back exactly (names trimmed); a user named
//! in `hadoop.kms.blacklist.OP` is never allowed OP; `*` allows everyone; an operation the file
//! does not set falls back to the key administrators.
#![no_main]

use arbitrary::Arbitrary;
use keysafe_kms::acl::{Acl, AclSet, KeyOp, OpType, parse_hadoop_xml};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Xml(String),
    Props(Vec<(String, String)>),
}

#[derive(Arbitrary, Debug)]
struct Query {
    user: String,
    groups: Vec<String>,
    key: String,
    op: u8,
}

#[derive(Arbitrary, Debug)]
struct Case {
    input: Input,
    admins: String,
    queries: Vec<Query>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Characters XML 1.0 can hold as they are (carriage returns are normalised away).
fn xml_safe(s: &str) -> bool {
    s.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    })
}

fn decide(set: &AclSet, queries: &[Query], props: &[(String, String)], admins: &Acl) {
    for q in queries.iter().take(8) {
        let op = OpType::ALL[usize::from(q.op) % OpType::ALL.len()];
        let allowed = set.has_access(op, &q.user, &q.groups);
        let key_name = format!("hadoop.kms.acl.{}", op.as_str());
        let black_name = format!("hadoop.kms.blacklist.{}", op.as_str());
        // The last value of a property wins, as in Hadoop's Configuration.
        let last = |name: &str| props.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
        if let Some(b) = last(&black_name)
            && Acl::parse(b).allows(&q.user, &q.groups)
        {
            assert!(!allowed, "blacklisted {:?} allowed {}", q.user, op.as_str());
        }
        if last(&black_name).is_none() {
            let want = match last(&key_name) {
                Some(v) => Acl::parse(v).allows(&q.user, &q.groups),
                None => admins.allows(&q.user, &q.groups),
            };
            assert_eq!(allowed, want, "{} for {:?}", op.as_str(), q.user);
        }
        for kop in [
            KeyOp::Management,
            KeyOp::GenerateEek,
            KeyOp::DecryptEek,
            KeyOp::Read,
        ] {
            let _ = set.key_allowed(&q.key, &q.user, &q.groups, kop);
            let _ = set.is_acl_present(&q.key, kop);
        }
    }
}

/// Raw input: a `kms-acls.xml`, with `alice` as key administrator and a few questions.
fn raw(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let q = |user: &str, group: &str| Query {
        user: user.to_owned(),
        groups: vec![group.to_owned()],
        key: "k1".to_owned(),
        op: 0,
    };
    check(Case {
        input: Input::Xml(text.to_owned()),
        admins: "alice".to_owned(),
        queries: (0..9)
            .map(|op| Query {
                op,
                ..q("bob", "hdfs")
            })
            .chain((0..9).map(|op| Query {
                op,
                ..q("alice", "admins")
            }))
            .collect(),
    });
}

fuzz_target!(|data: &[u8]| {
    let case = match keysafe_fuzz::raw_or::<Case>(data) {
        Ok(rest) => return raw(rest),
        Err(None) => return,
        Err(Some(c)) => c,
    };
    check(case);
});

fn check(case: Case) {
    let admins = Acl::parse(&case.admins);
    assert!(Acl::parse("*").allows("anyone", &[]));
    let props = match case.input {
        Input::Xml(text) => match parse_hadoop_xml(&text) {
            Ok(p) => p,
            Err(_) => return,
        },
        Input::Props(props) => {
            let props: Vec<(String, String)> = props
                .into_iter()
                .take(16)
                .filter(|(k, v)| xml_safe(k) && xml_safe(v))
                .collect();
            let mut xml = String::from("<?xml version=\"1.0\"?>\n<configuration>\n");
            for (k, v) in &props {
                xml.push_str(&format!(
                    "  <property><name>{}</name><value>{}</value></property>\n",
                    escape(k),
                    escape(v)
                ));
            }
            xml.push_str("</configuration>\n");
            let back = parse_hadoop_xml(&xml).expect("escaped properties parse");
            let want: Vec<(String, String)> = props
                .iter()
                .map(|(k, v)| (k.trim().to_owned(), v.clone()))
                .collect();
            assert_eq!(back, want);
            back
        }
    };
    let set = AclSet::from_properties(&props, &admins);
    decide(&set, &case.queries, &props, &admins);
}
