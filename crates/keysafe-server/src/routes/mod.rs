//! The route table. One module per operation; handlers take the caller's identity, parse the
//! request, call one service method and map the result.
//!
//! Every body is bounded before it is read: JSON bodies by [`JSON_BODY_LIMIT`], registration
//! (the one JSON route open to callers without an identity) by [`REGISTER_BODY_LIMIT`], group
//! creation and key handover by [`GROUP_BODY_LIMIT`]; deposits and ACL changes with their
//! re-encrypted versions by their own limits derived from `limits.max_deposit_size`.

mod admin;
mod audit;
mod deposits;
mod fingerprint;
mod groups;
mod health;
mod register;
mod sealing;
mod sharing;
mod whoami;

use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::middleware::request_context;
use crate::state::AppState;
use axum::Extension;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use keysafe_proto::ErrorCode;

/// Registration: an organisation, a name, a secret and a recipient fit in far less.
pub const REGISTER_BODY_LIMIT: usize = 8 * 1024;
/// Every other JSON body unless a route says otherwise.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;
/// Group creation, admission and member removal carry one wrapped identity (about 650 bytes as
/// JSON) per member: about 1,500 members.
pub const GROUP_BODY_LIMIT: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let group_body = || Extension(BodyLimit(GROUP_BODY_LIMIT));
    Router::new()
        .route("/", get(fingerprint::get))
        .route("/v1/health", get(health::get))
        .route("/v1/audit/public-key", get(audit::public_key))
        .route("/v1/admin/audit/entries", get(audit::entries))
        .route("/v1/admin/audit/checkpoints", get(audit::checkpoints))
        .route("/v1/admin/audit/checkpoint", post(audit::checkpoint))
        .route(
            "/v1/register",
            post(register::post).layer(Extension(BodyLimit(REGISTER_BODY_LIMIT))),
        )
        .route("/v1/whoami", get(whoami::get))
        .route("/v1/deposits", get(deposits::list::get))
        .route(
            "/v1/deposits/{*path}",
            get(deposits::dispatch_get)
                .put(deposits::put::put)
                .delete(deposits::delete)
                .post(deposits::dispatch_post),
        )
        .route("/v1/shared", get(sharing::shared))
        .route("/v1/recipients", get(sharing::recipient))
        .route(
            "/v1/groups",
            get(groups::list).post(groups::create).layer(group_body()),
        )
        .route("/v1/groups/{name}", get(groups::show))
        .route("/v1/groups/{name}/keys", get(groups::keys))
        .route(
            "/v1/groups/{name}/admit",
            post(groups::admit).layer(group_body()),
        )
        .route(
            "/v1/admin/orgs",
            get(admin::orgs::list).post(admin::orgs::create),
        )
        .route("/v1/admin/orgs/{name}/auth", put(admin::orgs::set_auth))
        .route(
            "/v1/admin/orgs/{name}",
            delete(admin::lifecycle::delete_org),
        )
        .route(
            "/v1/admin/orgs/{name}/tokens",
            post(admin::orgs::mint_token)
                .get(admin::lifecycle::list_tokens)
                .delete(admin::lifecycle::revoke_all_tokens),
        )
        .route(
            "/v1/admin/orgs/{name}/tokens/{id}",
            delete(admin::lifecycle::revoke_token),
        )
        .route("/v1/admin/clients", get(admin::clients::list))
        .route(
            "/v1/admin/clients/{fingerprint}",
            delete(admin::lifecycle::delete_client),
        )
        .route(
            "/v1/admin/clients/disable-unactivated",
            post(admin::clients::disable_unactivated),
        )
        .route(
            "/v1/admin/groups",
            get(admin::groups::list)
                .post(admin::groups::create)
                .layer(group_body()),
        )
        .route(
            "/v1/admin/groups/{org}/{name}",
            get(admin::groups::show).delete(admin::lifecycle::delete_group),
        )
        .route(
            "/v1/admin/groups/{org}/{name}/add-member",
            post(admin::groups::add_member),
        )
        .route(
            "/v1/admin/groups/{org}/{name}/remove-member",
            post(admin::groups::remove_member).layer(group_body()),
        )
        .route(
            "/v1/admin/clients/{fingerprint}/{action}",
            post(admin::clients::action),
        )
        // Seals, keyring rotation and backups.
        .route("/v1/admin/unseal", post(sealing::unseal))
        .route("/v1/admin/keyring", get(sealing::status))
        .route("/v1/admin/keyring/rotate", post(sealing::rotate))
        .route("/v1/admin/keyring/retire", post(sealing::retire))
        .route("/v1/admin/backup", post(sealing::backup))
        // The cluster: nodes' heartbeats, standbys, forgetting a node.
        .route("/v1/admin/cluster", get(admin::cluster::status))
        .route(
            "/v1/admin/cluster/nodes/{id}",
            axum::routing::delete(admin::cluster::remove_node),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // JSON bodies are read by `ApiJson` under the route's `BodyLimit`, deposits by
        // `read_limited` under theirs; axum's own limit stays as a backstop for any other
        // extractor.
        .layer(Extension(BodyLimit(JSON_BODY_LIMIT)))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::new(ErrorCode::NoRoute, "no such route; see docs/api.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}
