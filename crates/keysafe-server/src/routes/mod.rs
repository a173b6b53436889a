//! The route table. One module per operation; handlers take the caller's identity, parse the
//! request, call one service method and map the result.
//!
//! Every body is bounded before it is read: JSON bodies by [`JSON_BODY_LIMIT`], registration
//! (the one JSON route open to callers without an identity) by [`REGISTER_BODY_LIMIT`], group
//! creation and key handover by [`GROUP_BODY_LIMIT`]; deposits and ACL changes with their
//! re-encrypted versions by their own limits derived from `limits.max_deposit_size`.

mod admin;
mod audit;
pub(crate) mod deposits;
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
use axum::routing::get;
use keysafe_proto::ErrorCode;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Registration: an organisation, a name, a secret and a recipient fit in far less.
pub const REGISTER_BODY_LIMIT: usize = 8 * 1024;
/// Every other JSON body unless a route says otherwise.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;
/// Group creation, admission and member removal carry one wrapped identity (about 650 bytes as
/// JSON) per member: about 1,500 members.
pub const GROUP_BODY_LIMIT: usize = 1024 * 1024;

/// The route table and the OpenAPI document it is described by: each handler is registered
/// through `routes!`, which takes the path from the handler's `#[utoipa::path]`, so a route
/// cannot be served without appearing in the document.
fn table() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let group_body = |r: Routes| limited(r, GROUP_BODY_LIMIT);
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(fingerprint::get))
        .routes(routes!(openapi_json))
        .routes(routes!(health::get))
        .routes(routes!(audit::public_key))
        .routes(routes!(audit::entries))
        .routes(routes!(audit::checkpoints))
        .routes(routes!(audit::checkpoint))
        .routes(routes!(audit::prune))
        .routes(limited(routes!(register::post), REGISTER_BODY_LIMIT))
        .routes(routes!(whoami::get))
        .routes(routes!(deposits::list::get))
        // One wildcard route for every deposit operation (a name may contain '/', an operation
        // is a ':' suffix); its operations are documented in `ApiDoc`.
        .route(
            "/v1/deposits/{*path}",
            get(deposits::dispatch_get)
                .put(deposits::put::put)
                .delete(deposits::delete)
                .post(deposits::dispatch_post),
        )
        .routes(routes!(sharing::shared))
        .routes(routes!(sharing::recipient))
        .routes(group_body(routes!(groups::list, groups::create)))
        .routes(routes!(groups::show))
        .routes(routes!(groups::keys))
        .routes(group_body(routes!(groups::admit)))
        .routes(routes!(admin::orgs::list, admin::orgs::create))
        .routes(routes!(admin::orgs::set_auth))
        .routes(routes!(admin::lifecycle::delete_org))
        .routes(routes!(
            admin::orgs::mint_token,
            admin::lifecycle::list_tokens,
            admin::lifecycle::revoke_all_tokens
        ))
        .routes(routes!(admin::lifecycle::revoke_token))
        .routes(routes!(admin::clients::list))
        .routes(routes!(admin::lifecycle::delete_client))
        .routes(routes!(admin::clients::disable_unactivated))
        .routes(group_body(routes!(
            admin::groups::list,
            admin::groups::create
        )))
        .routes(routes!(admin::groups::show, admin::lifecycle::delete_group))
        .routes(routes!(admin::groups::add_member))
        .routes(group_body(routes!(admin::groups::remove_member)))
        .routes(routes!(admin::clients::action))
        // Seals, keyring rotation and backups.
        .routes(routes!(sealing::unseal))
        .routes(routes!(sealing::status))
        .routes(routes!(sealing::rotate))
        .routes(routes!(sealing::retire))
        .routes(routes!(sealing::backup))
        .routes(routes!(sealing::integrity_verify))
        // The cluster: nodes' heartbeats, standbys, forgetting a node.
        .routes(routes!(admin::cluster::status))
        .routes(routes!(admin::cluster::remove_node))
        .split_for_parts()
}

type Routes = utoipa_axum::router::UtoipaMethodRouter<AppState>;

/// A route whose JSON body may be up to `limit` bytes.
fn limited((schemas, paths, methods): Routes, limit: usize) -> Routes {
    (schemas, paths, methods.layer(Extension(BodyLimit(limit))))
}

/// The OpenAPI document, as served.
pub fn openapi_document() -> serde_json::Value {
    crate::openapi::finish(table().1)
}

/// What the server serves: the route table, each route behind `request_context`, and axum's
/// own body limit around the whole table.
///
/// Only the middleware that needs the matched route is a layer of the router: axum applies a
/// router's layer to every route separately, boxed, and each request clones the matched
/// route's stack of boxes, so each such layer costs every request allocations. What needs no
/// route is outside: axum's body limit wraps the router once, the route's own `BodyLimit` is
/// read with `JSON_BODY_LIMIT` as its default, and the OpenAPI document is a static.
pub type RouterService = <DefaultBodyLimit as tower::Layer<Router>>::Service;

pub fn router(state: AppState) -> RouterService {
    let (routes, doc) = table();
    // Serialised once: every request gets the same bytes.
    OPENAPI_JSON.get_or_init(|| openapi_bytes(doc));
    let routes = routes
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state);
    // JSON bodies are read by `ApiJson` under the route's `BodyLimit`, deposits by
    // `read_limited` under theirs; axum's own limit stays as a backstop for any other
    // extractor.
    tower::Layer::layer(&DefaultBodyLimit::max(JSON_BODY_LIMIT), routes)
}

/// The finished document, serialised when the router is built.
static OPENAPI_JSON: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();

fn openapi_bytes(doc: utoipa::openapi::OpenApi) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(&crate::openapi::finish(doc)).unwrap_or_default())
}

/// The OpenAPI 3.1 document of this API (it holds no secret, so anybody may read it).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "public",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API, generated \
        from the code.", content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    let doc = OPENAPI_JSON
        .get_or_init(|| openapi_bytes(table().1))
        .clone();
    ([(http::header::CONTENT_TYPE, "application/json")], doc).into_response()
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

#[cfg(test)]
mod tests {
    /// `routes!` registers a handler under the path of its `#[utoipa::path]`, so the table
    /// and the document are one list; a plain axum route (or a nested or merged router) would
    /// bypass that. The one allowed
    /// is the deposit wildcard, whose operations are checked by `openapi::tests`.
    #[test]
    fn only_the_deposit_wildcard_bypasses_routes_macro() {
        let source = include_str!("mod.rs");
        let needle = concat!(".", "route(");
        let plain: Vec<&str> = source
            .match_indices(needle)
            .map(|(i, _)| source[i..].lines().nth(1).unwrap_or("").trim())
            .collect();
        assert_eq!(plain, vec!["\"/v1/deposits/{*path}\","], "{plain:?}");
        for other in ["nest(", "nest_service(", "merge(", "route_service("] {
            assert!(!source.contains(&format!(".{other}")), "{other}");
        }
    }
}
