//! The route table. One module per operation; handlers take the caller's identity, parse the
//! request, call one service method and map the result.

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
use crate::middleware::request_context;
use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post, put};
use keysafe_proto::ErrorCode;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(fingerprint::get))
        .route("/v1/health", get(health::get))
        .route("/v1/audit/public-key", get(audit::public_key))
        .route("/v1/admin/audit/entries", get(audit::entries))
        .route("/v1/admin/audit/checkpoints", get(audit::checkpoints))
        .route("/v1/admin/audit/checkpoint", post(audit::checkpoint))
        .route("/v1/register", post(register::post))
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
        .route("/v1/groups", get(groups::list).post(groups::create))
        .route("/v1/groups/{name}", get(groups::show))
        .route("/v1/groups/{name}/keys", get(groups::keys))
        .route("/v1/groups/{name}/admit", post(groups::admit))
        .route(
            "/v1/admin/orgs",
            get(admin::orgs::list).post(admin::orgs::create),
        )
        .route("/v1/admin/orgs/{name}/auth", put(admin::orgs::set_auth))
        .route(
            "/v1/admin/orgs/{name}/tokens",
            post(admin::orgs::mint_token),
        )
        .route("/v1/admin/clients", get(admin::clients::list))
        .route(
            "/v1/admin/clients/disable-unactivated",
            post(admin::clients::disable_unactivated),
        )
        .route(
            "/v1/admin/groups",
            get(admin::groups::list).post(admin::groups::create),
        )
        .route("/v1/admin/groups/{org}/{name}", get(admin::groups::show))
        .route(
            "/v1/admin/groups/{org}/{name}/add-member",
            post(admin::groups::add_member),
        )
        .route(
            "/v1/admin/groups/{org}/{name}/remove-member",
            post(admin::groups::remove_member),
        )
        .route(
            "/v1/admin/clients/{fingerprint}/{action}",
            post(admin::clients::action),
        )
        // Seals, keyring rotation and backups (issue 5).
        .route("/v1/admin/unseal", post(sealing::unseal))
        .route("/v1/admin/keyring", get(sealing::status))
        .route("/v1/admin/keyring/rotate", post(sealing::rotate))
        .route("/v1/admin/keyring/retire", post(sealing::retire))
        .route("/v1/admin/backup", post(sealing::backup))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // The deposit routes enforce their own (configurable) limit while reading; JSON bodies
        // are small.
        .layer(axum::extract::DefaultBodyLimit::disable())
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
