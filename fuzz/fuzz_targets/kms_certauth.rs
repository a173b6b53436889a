//! Client-certificate mapping (keysafe-kms `certauth`): rules from the configuration (a field,
//! a regular expression that must match it whole, a user template) applied to certificates
//! from TLS peers. Certificates are either raw DER from the fuzzer or made for the names it
//! chose. Properties: nothing panics or hangs; without rules, a certificate whose common name
//! is a single line maps to exactly that name; a mapped user is never empty.
#![no_main]

use arbitrary::Arbitrary;
use keysafe_kms::certauth::{CertField, CertMapper};
use keysafe_kms::config::CertificateRule;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Rule {
    field: u8,
    pattern: String,
    user: String,
}

#[derive(Arbitrary, Debug)]
enum Cert {
    Der(Vec<u8>),
    Made { cn: String, dns: Vec<String> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    rules: Vec<Rule>,
    cert: Cert,
}

const FIELDS: [CertField; 5] = [
    CertField::SubjectCn,
    CertField::Subject,
    CertField::SanDns,
    CertField::SanEmail,
    CertField::SanUri,
];

/// Raw input: a DER certificate, mapped with the default rule and one rule per field.
fn raw(data: &[u8]) {
    check(Input {
        rules: (0..5)
            .map(|field| Rule {
                field,
                pattern: "(.*)".to_owned(),
                user: "u-$1".to_owned(),
            })
            .collect(),
        cert: Cert::Der(data.to_vec()),
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
    let (der, cn) = match input.cert {
        Cert::Der(d) => (d, None),
        Cert::Made { cn, dns } => {
            let dns: Vec<String> = dns.into_iter().take(4).collect();
            let der = keysafe_fuzz::certificate(&cn, &dns);
            if der.is_empty() {
                return;
            }
            (der, Some(cn))
        }
    };
    if let Ok(default) = CertMapper::new(&[]) {
        let user = default.map(&der);
        if let Some(cn) = cn
            && !cn.is_empty()
            && !cn.contains('\n')
        {
            assert_eq!(user.as_deref(), Some(cn.as_str()));
        }
    }
    let rules: Vec<CertificateRule> = input
        .rules
        .into_iter()
        .take(4)
        .map(|r| CertificateRule {
            field: FIELDS[usize::from(r.field) % FIELDS.len()],
            pattern: r.pattern,
            user: r.user,
        })
        .collect();
    if let Ok(m) = CertMapper::new(&rules)
        && let Some(user) = m.map(&der)
    {
        assert!(!user.is_empty());
    }
}
