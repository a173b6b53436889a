//! Deletions and registration tokens for `keysafe admin org|client|group`: each deletion asks
//! the server first what it would remove (a dry run, refused with `in_use` and what depends,
//! exit 5), prints it, and deletes only with `--yes` (without it: exit 2, nothing deleted).

use crate::exit::usage;
use crate::output;
use keysafe_client::KeysafeClient;
use keysafe_proto::api::{ClientDeletion, GroupDeletion, OrgDeletion, RegistrationTokenList};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName};

/// What a deletion without `--yes` ends with: the plan was printed, nothing was deleted.
fn confirm(what: &str) -> anyhow::Error {
    usage(format!(
        "nothing was deleted: run again with --yes to delete {what}"
    ))
}

fn verb(dry_run: bool) -> &'static str {
    if dry_run { "Would delete" } else { "Deleted" }
}

fn print_org(d: &OrgDeletion) {
    println!(
        "{} organisation {}, with {} unused registration token(s).",
        verb(d.dry_run),
        d.name,
        d.unused_tokens
    );
}

fn print_client(d: &ClientDeletion) {
    println!(
        "{} client {} of organisation {}.",
        verb(d.dry_run),
        d.fingerprint,
        d.org
    );
    if d.memberships.is_empty() {
        println!("  group memberships: none");
    } else {
        println!(
            "  group memberships (and the group keys wrapped for it): {}",
            d.memberships.join(", ")
        );
    }
    if d.grants == 0 {
        println!("  grants to it: none");
    } else {
        let more = d.grants.saturating_sub(d.grants_sample.len() as u64);
        let mut shown = d.grants_sample.join(", ");
        if more > 0 {
            shown.push_str(&format!(", and {more} more"));
        }
        println!("  grants to it on {} deposit(s): {shown}", d.grants);
    }
}

fn print_group(d: &GroupDeletion) {
    println!(
        "{} group {}/{}, with its keys and {} membership(s) (the member clients stay).",
        verb(d.dry_run),
        d.org,
        d.name,
        d.members
    );
}

pub async fn delete_org(
    client: &KeysafeClient,
    org: &OrgName,
    yes: bool,
    json: bool,
) -> anyhow::Result<()> {
    let d = client.delete_org(org, !yes).await?;
    if json {
        output::json(&d)?;
    } else {
        print_org(&d);
    }
    if yes {
        Ok(())
    } else {
        Err(confirm(&format!("organisation {org}")))
    }
}

pub async fn delete_client(
    client: &KeysafeClient,
    fp: &ClientFingerprint,
    yes: bool,
    json: bool,
) -> anyhow::Result<()> {
    let d = client.delete_client(fp, !yes).await?;
    if json {
        output::json(&d)?;
    } else {
        print_client(&d);
    }
    if yes {
        Ok(())
    } else {
        Err(confirm(&format!("client {fp}")))
    }
}

pub async fn delete_group(
    client: &KeysafeClient,
    org: &OrgName,
    name: &GroupName,
    yes: bool,
    json: bool,
) -> anyhow::Result<()> {
    let d = client.delete_group(org, name, !yes).await?;
    if json {
        output::json(&d)?;
    } else {
        print_group(&d);
    }
    if yes {
        Ok(())
    } else {
        Err(confirm(&format!("group {org}/{name}")))
    }
}

pub fn print_tokens(list: &RegistrationTokenList) {
    if list.tokens.is_empty() {
        println!(
            "Organisation {} has no unused registration tokens.",
            list.org
        );
        return;
    }
    let rows: Vec<Vec<String>> = list
        .tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.created_at.to_string(),
                t.expires_at.to_string(),
                if t.expired { "expired" } else { "valid" }.to_owned(),
                t.created_by.to_string(),
            ]
        })
        .collect();
    output::table(&["ID", "CREATED", "EXPIRES", "STATE", "CREATED BY"], &rows);
}
