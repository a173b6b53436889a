//! Names and numbers that arrive from outside (paths, query strings, JSON fields, stored rows):
//! deposit, organisation, client and group names, listing prefixes, versions, fingerprints,
//! principals in their wire and stored forms, `If-None-Match` values and RFC 3339 timestamps.
//! Every input goes through every parser. Properties: nothing panics; an accepted value
//! satisfies its documented rule and survives `parse(display(x)) == x` and a JSON round trip.
#![no_main]

use keysafe_core::service::IfNoneMatch;
use keysafe_proto::{
    ClientFingerprint, ClientName, DepositName, DepositVersion, GroupName, OrgName, Principal,
    Timestamp,
};
use libfuzzer_sys::fuzz_target;

fn json_round_trip<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(v).expect("serialises");
    let back: T = serde_json::from_str(&text).expect("what was serialised parses again");
    assert_eq!(&back, v);
}

fn deposit_name_rule(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
        && s.split('/').all(|seg| !matches!(seg, "" | "." | ".."))
}

fn org_name_rule(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    match DepositName::parse(s) {
        Ok(n) => {
            assert!(deposit_name_rule(s), "accepted {s:?}");
            assert_eq!(n.as_str(), s);
            assert_eq!(DepositName::parse(&n.to_string()).as_ref(), Ok(&n));
            assert!(DepositName::validate_prefix(s).is_ok());
            json_round_trip(&n);
        }
        Err(e) => {
            assert!(!deposit_name_rule(s), "refused {s:?}");
            assert!(e.message().contains("1-256 characters"));
        }
    }
    let _ = DepositName::validate_prefix(s);

    let org = OrgName::parse(s);
    assert_eq!(org.is_ok(), org_name_rule(s), "{s:?}");
    if let Ok(o) = &org {
        assert_eq!(OrgName::parse(&o.to_string()).as_ref(), Ok(o));
        json_round_trip(o);
    }
    let group = GroupName::parse(s);
    assert_eq!(
        group.is_ok(),
        org.is_ok(),
        "groups follow the organisation rule"
    );
    if let Ok(g) = &group {
        assert_eq!(GroupName::parse(&g.to_string()).as_ref(), Ok(g));
        json_round_trip(g);
    }

    if let Ok(c) = ClientName::parse(s) {
        assert!(!s.is_empty() && s.chars().count() <= 128);
        assert!(!s.chars().any(char::is_control));
        assert_eq!(ClientName::parse(c.as_str()).as_ref(), Ok(&c));
        let text = serde_json::to_string(&c).expect("serialises");
        let back: ClientName = serde_json::from_str(&text).expect("parses again");
        assert_eq!(back, c);
    }

    if let Ok(v) = DepositVersion::parse(s) {
        assert_eq!(v.to_string(), s, "only the canonical form is accepted");
        assert!(v.get() >= 1 && v.get() <= DepositVersion::MAX);
        assert!(v.next() >= v);
        json_round_trip(&v);
    }
    if let Ok(n) = s.parse::<u64>() {
        assert_eq!(
            DepositVersion::new(n).is_ok(),
            (1..=DepositVersion::MAX).contains(&n)
        );
    }

    if let Ok(fp) = ClientFingerprint::parse(s) {
        assert_eq!(fp.as_str(), s.trim());
        assert_eq!(fp.as_str().len(), 64);
        assert!(fp.as_str().starts_with(fp.short()));
        assert_eq!(ClientFingerprint::parse(&fp.to_string()).as_ref(), Ok(&fp));
        json_round_trip(&fp);
    }

    let acme = OrgName::parse("acme").expect("a valid organisation");
    if let Ok(p) = Principal::parse_in(s, &acme) {
        assert_eq!(Principal::parse_in(&p.wire(), &acme).as_ref(), Ok(&p));
        assert_eq!(Principal::parse_stored(&p.stored()).as_ref(), Ok(&p));
        assert_eq!(p.is_group(), p.as_client().is_none());
    }
    if let Ok(p) = Principal::parse_stored(s) {
        assert_eq!(Principal::parse_stored(&p.stored()).as_ref(), Ok(&p));
        if let Principal::Group { org, .. } = &p {
            assert_eq!(Principal::parse_in(&p.wire(), org).as_ref(), Ok(&p));
        }
    }

    match IfNoneMatch::parse(s) {
        Some(IfNoneMatch::Tags(tags)) => {
            assert!((1..=32).contains(&tags.len()));
            assert!(tags.iter().all(|t| t.len() <= 128 && !t.contains('"')));
        }
        Some(IfNoneMatch::Any) => assert_eq!(s.trim(), "*"),
        Some(IfNoneMatch::Absent) => panic!("a header value never parses as absent"),
        None => {}
    }

    if let Ok(t) = Timestamp::parse_rfc3339(s) {
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Ok(t));
        json_round_trip(&t);
    }
});
