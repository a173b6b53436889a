//! Kerberos principal names and Hadoop `auth_to_local` rules (keysafe-kms `kerberos::names`):
//! the rules come from the gateway's configuration, the principals from SPNEGO peers.
//! Properties: nothing panics or hangs; a parsed principal prints back to what parses to the
//! same parts; under the `hadoop` mechanism a mapped short name never holds `/` or `@` unless
//! the principal had neither a host nor a realm (then it is returned whole, as Hadoop does).
#![no_main]

use arbitrary::Arbitrary;
use keysafe_kms::kerberos::names::{KerberosName, Mechanism, NameRules};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    rules: String,
    mit: bool,
    realm: String,
    principals: Vec<String>,
}

/// Raw input: the rules on the first line, then one principal per line.
fn raw(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let rules = lines.next().unwrap_or("").to_owned();
    check(Input {
        rules,
        mit: false,
        realm: "EXAMPLE.COM".to_owned(),
        principals: lines.map(str::to_owned).collect(),
    });
}

fuzz_target!(|data: &[u8]| {
    let input = match keysafe_fuzz::raw_or::<Input>(data) {
        Ok(rest) => return raw(rest),
        Err(None) => return,
        Err(Some(i)) => i,
    };
    check(input);
});

fn check(input: Input) {
    for p in input.principals.iter().take(8) {
        if let Ok(n) = KerberosName::parse(p) {
            let again = KerberosName::parse(&n.to_string()).expect("a printed name parses");
            assert_eq!(again, n);
        }
    }
    let mechanism = if input.mit {
        Mechanism::Mit
    } else {
        Mechanism::Hadoop
    };
    let Ok(rules) = NameRules::parse(&input.rules, mechanism, &input.realm) else {
        return;
    };
    assert_eq!(rules.mechanism(), mechanism);
    for p in input.principals.iter().take(8) {
        if let Ok(short) = rules.short_name(p)
            && mechanism == Mechanism::Hadoop
            && short.contains(['/', '@'])
        {
            let n = KerberosName::parse(p).expect("mapped, so it parsed");
            assert!(
                n.host.is_none() && n.realm.is_none(),
                "{p:?} mapped to the non-simple name {short:?}"
            );
        }
    }
}
