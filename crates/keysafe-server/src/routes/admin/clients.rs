//! `GET /v1/admin/clients?org=&state=&limit=&after=` (one page),
//! `POST /v1/admin/clients/{fp}/{approve|disable|enable|promote|demote|reset-token}`,
//! `POST /v1/admin/clients/disable-unactivated` (`dry_run`: only the list).

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::identity::Admin;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_core::service::ClientAction;
use keysafe_proto::api::{ClientInfo, ClientList, ClientListQuery, ClientState};
use keysafe_proto::{ClientFingerprint, ErrorCode, OrgName};

#[utoipa::path(
    get, path = "/v1/admin/clients", tag = "admin", params(ClientListQuery),
    responses((status = 200, description = "One page of clients.", body = ClientList)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiQuery(f): ApiQuery<ClientListQuery>,
) -> Result<Json<ClientList>, ApiError> {
    let org = f
        .org
        .as_deref()
        .map(OrgName::parse)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::InvalidName, e.message()))?;
    let st = f
        .state
        .as_deref()
        .map(|s| {
            ClientState::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "state must be one of pending, active, disabled, suspected-clone",
                )
            })
        })
        .transpose()?;
    Ok(Json(
        state
            .service
            .list_clients_page(&admin, org.as_ref(), st, f.limit, f.after.as_deref())
            .await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/admin/clients/{fingerprint}/{action}", tag = "admin",
    params(("fingerprint" = String, Path, description = "The client's fingerprint."),
        ("action" = String, Path, description = "`approve`, `disable`, `enable`, `promote`, `demote` or `reset-token`.")),
    responses(
        (status = 200, description = "The client after the change.", body = ClientInfo),
        (status = 404, description = "No such client, or an unknown action."),
        (status = 409, description = "The client's state does not allow this action."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn action(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath((fp, action)): ApiPath<(String, String)>,
) -> Result<Json<ClientInfo>, ApiError> {
    let fp = ClientFingerprint::parse(&fp).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let action = match action.as_str() {
        "approve" => ClientAction::Approve,
        "disable" => ClientAction::Disable,
        "enable" => ClientAction::Enable,
        "promote" => ClientAction::Promote,
        "demote" => ClientAction::Demote,
        "reset-token" => ClientAction::ResetToken,
        _ => {
            return Err(ApiError::new(
                ErrorCode::NoRoute,
                "unknown client action; expected approve, disable, enable, promote, demote or \
                 reset-token",
            ));
        }
    };
    let info = state.service.client_action(&admin, &fp, action).await?;
    tracing::info!(
        client = %info.fingerprint,
        state = %info.state,
        role = info.role.as_str(),
        by = %admin.fingerprint,
        "client changed by an administrator"
    );
    Ok(Json(info))
}

#[utoipa::path(
    post, path = "/v1/admin/clients/disable-unactivated", tag = "admin",
    request_body = keysafe_proto::api::DisableUnactivatedRequest,
    responses((status = 200, description = "The clients disabled (or, with dry_run, those that would be).", body = ClientList)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn disable_unactivated(
    State(state): State<AppState>,
    Admin(admin): Admin,
    crate::extract::ApiJson(req): crate::extract::ApiJson<
        keysafe_proto::api::DisableUnactivatedRequest,
    >,
) -> Result<Json<ClientList>, ApiError> {
    let older_than = std::time::Duration::from_secs(req.older_than_seconds);
    if req.dry_run {
        let clients = state
            .service
            .preview_unactivated(&admin, older_than)
            .await?;
        return Ok(Json(ClientList {
            clients,
            next_after: None,
        }));
    }
    let clients = state
        .service
        .disable_unactivated(&admin, older_than)
        .await?;
    tracing::info!(count = clients.len(), by = %admin.fingerprint, "unactivated clients disabled");
    Ok(Json(ClientList {
        clients,
        next_after: None,
    }))
}
