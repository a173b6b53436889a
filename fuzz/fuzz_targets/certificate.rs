//! Certificates from TLS peers (keysafe-proto `identity`): the fingerprint the server computes
//! for every client certificate (`ClientFingerprint::of_certificate`, also at registration) and
//! what `inspect_certificate` reads for operators (validity, names, issuer). Properties:
//! nothing panics; both agree on the fingerprint; a made certificate's common name and DNS
//! names are read back.
#![no_main]

use arbitrary::Arbitrary;
use keysafe_proto::ClientFingerprint;
use keysafe_proto::identity::inspect_certificate;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Der(Vec<u8>),
    Made { cn: String, dns: Vec<String> },
}

fuzz_target!(|data: &[u8]| {
    let input = match keysafe_fuzz::raw_or::<Input>(data) {
        Ok(rest) => Input::Der(rest.to_vec()),
        Err(None) => return,
        Err(Some(i)) => i,
    };
    let (der, made) = match input {
        Input::Der(d) => (d, None),
        Input::Made { cn, dns } => {
            let dns: Vec<String> = dns.into_iter().take(4).collect();
            let der = keysafe_fuzz::certificate(&cn, &dns);
            if der.is_empty() {
                return;
            }
            (der, Some((cn, dns)))
        }
    };
    let fp = ClientFingerprint::of_certificate(&der);
    let info = inspect_certificate(&der);
    if let Ok(i) = &info {
        assert_eq!(fp.as_ref().ok(), Some(&i.fingerprint));
        assert_eq!(
            ClientFingerprint::parse(i.fingerprint.as_str()).as_ref(),
            Ok(&i.fingerprint)
        );
    }
    if let Some((cn, dns)) = made {
        let i = info.expect("a made certificate is readable");
        assert!(i.self_signed);
        assert_eq!(i.common_name.as_deref(), Some(cn.as_str()));
        for d in dns
            .iter()
            .filter(|d| rcgen::string::Ia5String::try_from(d.as_str()).is_ok())
        {
            assert!(
                i.subject_alt_names.contains(d),
                "{d:?} in {:?}",
                i.subject_alt_names
            );
        }
    }
});
