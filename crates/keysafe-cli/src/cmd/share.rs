//! `keysafe share|unshare|acl|shared`: access-control lists. Granting and revoking re-encrypt
//! every version on this host for the new recipient set; the server never sees plaintext.

use crate::cli::{ClientArgs, NameArgs, ShareArgs, UnshareArgs};
use crate::cmd::{client_for, deposit_name, vault_for};
use crate::output;
use crate::progress::Progress;
use keysafe_proto::api::{Access, Acl, AclChange};

fn print_acl(acl: &Acl) {
    println!(
        "{} (owner {}, version {}, ACL serial {})",
        acl.name, acl.owner, acl.version, acl.acl_serial
    );
    if acl.grants.is_empty() {
        println!("  not shared");
    }
    let rows: Vec<Vec<String>> = acl
        .grants
        .iter()
        .map(|g| {
            vec![
                g.grantee.clone(),
                g.access.as_str().to_owned(),
                g.granted_by.short().to_owned(),
                g.granted_at.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        output::table(&["GRANTEE", "ACCESS", "BY", "SINCE"], &rows);
    }
    println!("encrypted to {} recipient(s):", acl.recipients.len());
    let rows: Vec<Vec<String>> = acl
        .recipients
        .iter()
        .map(|r| {
            let whose = acl
                .recipient_principals
                .iter()
                .find(|p| &p.recipient == r)
                .map(|p| {
                    if p.principal == acl.owner {
                        format!("{} (owner)", p.principal)
                    } else {
                        p.principal.clone()
                    }
                })
                .unwrap_or_else(|| "-".into());
            vec![whose, r.clone()]
        })
        .collect();
    output::table(&["PRINCIPAL", "AGE RECIPIENT"], &rows);
}

async fn change(
    client_args: &ClientArgs,
    name: &str,
    owner: Option<&str>,
    change: AclChange,
) -> anyhow::Result<Acl> {
    let name = deposit_name(name)?;
    let (home, client) = client_for(client_args)?;
    let vault = vault_for(&home, client)?;
    let bar = Progress::bar(0, "re-encrypting versions");
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let acl = vault.change_acl(owner, &name, change, &progress).await?;
    bar.finish("re-encrypted");
    Ok(acl)
}

pub async fn share(args: ShareArgs) -> anyhow::Result<()> {
    let access = if args.write {
        Access::Write
    } else {
        Access::Read
    };
    let acl = change(
        &args.client,
        &args.name,
        args.owner.as_deref(),
        AclChange::Grant {
            grantee: args.with.clone(),
            access,
        },
    )
    .await?;
    if args.client.json {
        return output::json(&acl);
    }
    println!(
        "Shared {} with {} ({}); every version is now encrypted to it too.",
        acl.name,
        args.with,
        access.as_str()
    );
    Ok(())
}

pub async fn unshare(args: UnshareArgs) -> anyhow::Result<()> {
    let acl = change(
        &args.client,
        &args.name,
        args.owner.as_deref(),
        AclChange::Revoke {
            grantee: args.with.clone(),
        },
    )
    .await?;
    if args.client.json {
        return output::json(&acl);
    }
    println!(
        "Revoked {} on {}; every version is re-encrypted without it.",
        args.with, acl.name
    );
    println!(
        "Note: a reader that already fetched {} still has what it fetched; if that matters, \
         rotate the key itself (put a new one).",
        acl.name
    );
    Ok(())
}

pub async fn acl(args: NameArgs) -> anyhow::Result<()> {
    let name = deposit_name(&args.name)?;
    let (_, client) = client_for(&args.client)?;
    let acl = client.acl(args.owner.as_deref(), &name).await?;
    if args.client.json {
        return output::json(&acl);
    }
    print_acl(&acl);
    Ok(())
}

pub async fn shared(args: ClientArgs) -> anyhow::Result<()> {
    let (_, client) = client_for(&args)?;
    let list = client.shared().await?;
    if args.json {
        return output::json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .deposits
        .iter()
        .map(|d| {
            vec![
                d.owner.clone(),
                d.name.to_string(),
                d.version.to_string(),
                d.access.as_str().to_owned(),
                d.via.clone(),
            ]
        })
        .collect();
    output::table(&["OWNER", "NAME", "VERSION", "ACCESS", "VIA"], &rows);
    Ok(())
}
