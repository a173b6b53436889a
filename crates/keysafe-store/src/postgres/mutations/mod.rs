//! One function per `Mutation`, grouped by aggregate. Each runs inside the writer's transaction
//! and the job's savepoint, after the audit head lock (see `writer`); each keeps the contract
//! documented on its `Mutation` variant, the same as the SQLite store.

mod cluster;
mod deposits;
mod groups;
mod identities;
pub(crate) mod integrity;
mod keyring;
mod lifecycle;

pub(crate) use cluster::record_spool_batch;

use super::writer::{Tx, TxResult};
use keysafe_core::store::{Applied, Mutation, StoreError};
use tokio_postgres::types::ToSql;

pub(crate) async fn apply(tx: &Tx<'_>, m: &Mutation) -> TxResult<Applied> {
    match m {
        Mutation::InsertKek(k) => keyring::insert_kek(tx, k).await,
        Mutation::BackfillRowMacs { auth, at } => integrity::backfill(tx, &auth.0, *at).await,
        Mutation::CreateOrg(o) => identities::create_org(tx, o).await,
        Mutation::SetOrgAuth {
            name,
            mode,
            auth_hash,
            at,
        } => identities::set_org_auth(tx, name, *mode, auth_hash.as_deref(), *at).await,
        Mutation::InsertClient {
            client,
            consume_token,
        } => identities::insert_client(tx, client, consume_token.as_deref()).await,
        Mutation::InsertRegistrationToken(t) => identities::insert_registration_token(tx, t).await,
        Mutation::RotateToken {
            fingerprint,
            expected_counter,
            token,
            at,
        } => identities::rotate_token(tx, fingerprint, *expected_counter, token, *at).await,
        Mutation::MarkSuspectedClone {
            fingerprint,
            reason,
            at,
        } => identities::mark_suspected_clone(tx, fingerprint, reason, *at).await,
        Mutation::ResetToken { fingerprint, at } => {
            identities::reset_token(tx, fingerprint, *at).await
        }
        Mutation::DisableUnactivated {
            registered_before,
            at,
        } => identities::disable_unactivated(tx, *registered_before, *at).await,
        Mutation::SetClientState {
            fingerprint,
            state,
            at,
        } => identities::set_client_state(tx, fingerprint, *state, *at).await,
        Mutation::SetClientRole {
            fingerprint,
            role,
            at,
        } => identities::set_client_role(tx, fingerprint, *role, *at).await,
        Mutation::CreateGroup {
            org,
            name,
            recipient,
            keys,
            at,
        } => groups::create_group(tx, org, name, recipient, keys, *at).await,
        Mutation::AddGroupMember {
            org,
            name,
            member,
            at,
        } => groups::add_member(tx, org, name, member, *at).await,
        Mutation::AdmitGroupMember {
            org,
            name,
            keys,
            at,
        } => groups::admit_member(tx, org, name, keys, *at).await,
        Mutation::RemoveGroupMember {
            org,
            name,
            member,
            expected_epoch,
            recipient,
            keys,
            at,
        } => {
            groups::remove_member(tx, org, name, member, *expected_epoch, recipient, keys, *at)
                .await
        }
        Mutation::SetAcl {
            key,
            expected_current,
            expected_acl_serial,
            grants,
            replace,
            at,
        } => {
            deposits::set_acl(
                tx,
                key,
                *expected_current,
                *expected_acl_serial,
                grants,
                replace,
                *at,
            )
            .await
        }
        Mutation::PutVersion {
            org,
            key,
            expected_current,
            expected_acl_serial,
            version,
        } => {
            deposits::put_version(
                tx,
                org,
                key,
                *expected_current,
                *expected_acl_serial,
                version,
            )
            .await
        }
        Mutation::SetDeleted { key, deleted, at } => {
            deposits::set_deleted(tx, key, *deleted, *at).await
        }
        Mutation::Purge { key } => deposits::purge(tx, key).await,
        Mutation::InsertAuditKey(k) => {
            super::audit::insert_key(tx, k).await?;
            Ok(Applied::Done)
        }
        Mutation::InsertAuditCheckpoint(c) => {
            super::audit::insert_checkpoint(tx, c).await?;
            Ok(Applied::Done)
        }
        Mutation::PruneAudit { through } => {
            Ok(Applied::Pruned(super::audit::prune(tx, *through).await?))
        }
        Mutation::Rewrap {
            id,
            expected_kek,
            kek_version,
            wrapped,
        } => keyring::rewrap(tx, id, *expected_kek, *kek_version, wrapped).await,
        Mutation::RetireKek { version } => keyring::retire_kek(tx, *version).await,
        Mutation::KeepOnlySeal { keep } => keyring::keep_only_seal(tx, keep).await,
        Mutation::DeleteOrg { name } => lifecycle::delete_org(tx, name).await,
        Mutation::DeleteClient { fingerprint, at } => {
            lifecycle::delete_client(tx, fingerprint, *at).await
        }
        Mutation::DeleteGroup { org, name } => lifecycle::delete_group(tx, org, name).await,
        Mutation::RevokeRegistrationTokens { org, hashes } => {
            lifecycle::revoke_tokens(tx, org, hashes).await
        }
        Mutation::RecoverAdmin { fingerprint, at } => {
            lifecycle::recover_admin(tx, fingerprint, *at).await
        }
        Mutation::UpsertNode(n) => cluster::upsert_node(tx, n).await,
        Mutation::RemoveNode { id } => cluster::remove_node(tx, id).await,
        Mutation::InsertClusterIdentity(r) => cluster::insert_identity(tx, r).await,
        // Nothing but the change serial and its announcement, which the writer adds for every
        // change-bearing mutation.
        Mutation::Announce(_) => Ok(Applied::Done),
    }
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs one statement (prepared once per connection) and returns the rows it touched.
async fn exec(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> TxResult<u64> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&st, params).await?)
}

async fn query_opt(
    tx: &Tx<'_>,
    sql: &str,
    params: Params<'_>,
) -> TxResult<Option<tokio_postgres::Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&st, params).await?)
}

async fn query(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> TxResult<Vec<tokio_postgres::Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query(&st, params).await?)
}

fn not_found_if_none(rows: u64) -> TxResult<Applied> {
    if rows == 0 {
        Err(StoreError::NotFound.into())
    } else {
        Ok(Applied::Done)
    }
}

/// A data key must name a keyring version that exists (a retire may have raced a put that
/// started before a rotation). The row is share-locked until commit, so a concurrent retire
/// waits for this transaction. Answers `Unavailable` (retry), as the SQLite store does.
async fn kek_exists(tx: &Tx<'_>, version: u32) -> TxResult<()> {
    if kek_row_exists(tx, version).await? {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "keyring version {version} does not exist (retired meanwhile); retry"
        ))
        .into())
    }
}

async fn kek_row_exists(tx: &Tx<'_>, version: u32) -> TxResult<bool> {
    Ok(query_opt(
        tx,
        "SELECT 1 FROM keyring WHERE version = $1 LIMIT 1 FOR SHARE",
        &[&i64::from(version)],
    )
    .await?
    .is_some())
}
