//! The route table. One module per operation; handlers take the caller's identity, parse the
//! request, call one service method and map the result.

mod admin;
mod deposits;
mod fingerprint;
mod health;
mod register;
mod sealing;
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
        .route("/v1/register", post(register::post))
        .route("/v1/whoami", get(whoami::get))
        .route("/v1/deposits", get(deposits::list::get))
        .route(
            "/v1/deposits/{*path}",
            get(deposits::dispatch_get)
                .put(deposits::put::put)
                .delete(deposits::delete::delete)
                .post(deposits::dispatch_post),
        )
        .route(
            "/v1/admin/orgs",
            get(admin::orgs::list).post(admin::orgs::create),
        )
        .route("/v1/admin/orgs/{name}/auth", put(admin::orgs::set_auth))
        .route("/v1/admin/clients", get(admin::clients::list))
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
        .layer(axum::middleware::from_fn(request_context))
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
