//! `keysafe admin org add|list|set-auth|token|tokens|token-revoke|delete`.

use crate::cli::{OrgCommand, SetAuthMode};
use crate::cmd::read_secret_file;
use crate::exit::usage;
use crate::output;
use keysafe_client::KeysafeClient;
use keysafe_proto::OrgName;
use keysafe_proto::api::{AuthSecret, OrgCreateRequest, OrgSetAuthRequest};

fn org_name(s: &str) -> anyhow::Result<OrgName> {
    OrgName::parse(s).map_err(|e| usage(e.message().to_owned()))
}

pub async fn run(client: &KeysafeClient, cmd: OrgCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        OrgCommand::Add { name, contacts } => {
            let created = client
                .create_org(&OrgCreateRequest {
                    name: org_name(&name)?,
                    contacts,
                })
                .await?;
            if json {
                return output::json(&created);
            }
            println!("Organisation {} created.", created.name);
            println!("Auth secret (shown once; give it to the hosts that register):");
            println!("{}", created.auth_secret.expose());
            Ok(())
        }
        OrgCommand::Token { name, ttl } => {
            let t = client
                .mint_registration_token(&org_name(&name)?, Some(ttl.as_secs()))
                .await?;
            if json {
                return output::json(&t);
            }
            println!(
                "Registration token for {} (single use, expires {}; shown once):",
                t.org, t.expires_at
            );
            println!("{}", t.token.expose());
            Ok(())
        }
        OrgCommand::List => {
            let list = client.list_orgs().await?;
            if json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .orgs
                .iter()
                .map(|o| {
                    vec![
                        o.name.to_string(),
                        o.auth_mode.as_str().to_owned(),
                        o.created_at.to_string(),
                        o.contacts.join(","),
                    ]
                })
                .collect();
            output::table(&["NAME", "AUTH", "CREATED", "CONTACTS"], &rows);
            Ok(())
        }
        OrgCommand::Delete { name, yes } => {
            super::lifecycle::delete_org(client, &org_name(&name)?, yes, json).await
        }
        OrgCommand::Tokens { name } => {
            let list = client.registration_tokens(&org_name(&name)?).await?;
            if json {
                return output::json(&list);
            }
            super::lifecycle::print_tokens(&list);
            Ok(())
        }
        OrgCommand::TokenRevoke { name, id, all } => {
            let id = if all { None } else { id };
            let r = client
                .revoke_registration_tokens(&org_name(&name)?, id.as_deref())
                .await?;
            if json {
                return output::json(&r);
            }
            println!(
                "Revoked {} unused registration token(s) of {}.",
                r.revoked, r.org
            );
            Ok(())
        }
        OrgCommand::SetAuth { name, mode } => {
            let req = set_auth_request(mode)?;
            let r = client.set_org_auth(&org_name(&name)?, &req).await?;
            if json {
                return output::json(&r);
            }
            match &r.auth_secret {
                Some(s) => {
                    println!("Organisation {}: new auth secret (shown once):", r.name);
                    println!("{}", s.expose());
                }
                None => println!(
                    "Organisation {}: auth mode is now {}.",
                    r.name,
                    r.auth_mode.as_str()
                ),
            }
            Ok(())
        }
    }
}

fn set_auth_request(mode: SetAuthMode) -> anyhow::Result<OrgSetAuthRequest> {
    if mode.random {
        return Ok(OrgSetAuthRequest::Random);
    }
    if mode.approval {
        return Ok(OrgSetAuthRequest::Approval);
    }
    if let Some(s) = mode.secret {
        return Ok(OrgSetAuthRequest::Secret {
            secret: AuthSecret::new(s),
        });
    }
    if let Some(f) = mode.secret_file {
        let s = read_secret_file(&f)?;
        return Ok(OrgSetAuthRequest::Secret {
            secret: AuthSecret::new(s.as_str()),
        });
    }
    Err(usage(
        "choose one of --random, --secret, --secret-file, --approval",
    ))
}
