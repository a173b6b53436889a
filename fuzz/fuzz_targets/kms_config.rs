//! The gateway's TOML configuration (keysafe-kms `config`): `KmsConfig::parse` and what the
//! gateway derives from an accepted file before it serves: the Kerberos name rules, the
//! certificate mapper, the ACLs of `key_admins` and `delegation_token.acl`, and the cookie and
//! delegation-token lifetimes (a cookie and a token are issued and verified with them).
//! Properties: nothing panics, hangs or overflows for any file `parse` accepts; an accepted
//! file's cookie and token verify.
#![no_main]

use keysafe_kms::KmsConfig;
use keysafe_kms::acl::Acl;
use keysafe_kms::auth::CookieSigner;
use keysafe_kms::backend::MemoryBackend;
use keysafe_kms::certauth::CertMapper;
use keysafe_kms::delegation::DtManager;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = KmsConfig::parse(text) else {
        return;
    };
    let _ = cfg.name_rules();
    let _ = CertMapper::new(&cfg.auth.certificate_rules);
    let _ = cfg.check_listen(cfg.listen);
    let _ = Acl::parse(&cfg.key_admins);
    let cookies = CookieSigner::new(Zeroizing::new(vec![1; 32]), cfg.auth.token_validity);
    let c = cookies.issue("alice", None, "simple-dt");
    let _ = cookies.verify(&c, "simple-dt");
    keysafe_fuzz::runtime().block_on(async {
        let dt = DtManager::shared(
            Arc::new(MemoryBackend::default()),
            cfg.delegation_token.clone(),
        )
        .await
        .expect("a manager over an empty memory backend");
        let groups = ["g".to_owned()];
        if let Ok(url) = dt.issue("alice", &groups, "bob", None, "alice").await {
            let _ = dt.verify(&url).await;
            let _ = dt.renew(&url, "bob").await;
            let _ = dt.cancel(&url, None).await;
        }
    });
});
