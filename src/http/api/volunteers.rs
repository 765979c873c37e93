//! Volunteers. Creating one (or resetting a PIN) returns the PIN exactly once; only its
//! argon2 hash is kept.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::members::parse_phone;
use crate::callback::{CallbackError, request_callback};
use crate::domain::Pin;
use crate::domain::text::control_character;
use crate::http::auth::Organiser;
use crate::http::error::{AppJson, AppPath, ErrorBody};
use crate::http::{ApiError, ApiResult, AppState};
use crate::store::StoreError;
use crate::store::sessions::CallbackRequest;
use crate::store::volunteers::{Volunteer, VolunteerPatch};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_volunteers, create_volunteer))
        .routes(routes!(get_volunteer, update_volunteer, delete_volunteer))
        .routes(routes!(reset_pin))
        .routes(routes!(call_volunteer))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVolunteer {
    pub name: String,
    /// The volunteer's own phone, any common format.
    pub phone: String,
    pub team: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVolunteer {
    pub name: Option<String>,
    pub phone: Option<String>,
    /// An empty string clears the team.
    pub team: Option<String>,
    pub active: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VolunteerWithPin {
    pub volunteer: Volunteer,
    /// Shown once: give it to the volunteer now. It cannot be retrieved later.
    pub pin: String,
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound("volunteer"),
        e => e.into(),
    }
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("name", "name must be 1-200 characters"));
    }
    if let Some(reason) = control_character(name, false) {
        return Err(ApiError::invalid("name", format!("name {reason}")));
    }
    Ok(name.to_owned())
}

/// A team name, trimmed; empty means none.
fn check_team(team: &str) -> Result<Option<String>, ApiError> {
    let team = team.trim();
    if let Some(reason) = control_character(team, false) {
        return Err(ApiError::invalid("team", format!("team {reason}")));
    }
    Ok((!team.is_empty()).then(|| team.to_owned()))
}

/// Hash off the async threads: argon2 is deliberately slow.
async fn new_pin() -> ApiResult<(Pin, String)> {
    crate::domain::credentials::on_pin_thread(|| {
        let pin = Pin::generate();
        let hash = pin.hash();
        (pin, hash)
    })
    .await
    .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("hashing a PIN failed")))
}

#[utoipa::path(get, path = "/volunteers", tag = "volunteers",
    responses((status = 200, description = "Success", body = Vec<Volunteer>), (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody)))]
async fn list_volunteers(
    _: Organiser,
    State(state): State<AppState>,
) -> ApiResult<AppJson<Vec<Volunteer>>> {
    Ok(AppJson(state.store.list_volunteers().await?))
}

/// Register a volunteer. The response carries their PIN, once.
#[utoipa::path(post, path = "/volunteers", tag = "volunteers", request_body = NewVolunteer,
    responses((status = 201, description = "Created", body = VolunteerWithPin), (status = 409, description = "Conflicts with the current state", body = ErrorBody), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn create_volunteer(
    _: Organiser,
    State(state): State<AppState>,
    AppJson(req): AppJson<NewVolunteer>,
) -> ApiResult<(StatusCode, AppJson<VolunteerWithPin>)> {
    let name = check_name(&req.name)?;
    let phone = parse_phone(&state, &req.phone)?;
    let team = req.team.as_deref().map(check_team).transpose()?.flatten();
    let (pin, hash) = new_pin().await?;
    let volunteer = state
        .store
        .create_volunteer(&name, &phone, team.as_deref(), &hash)
        .await?;
    tracing::info!(volunteer_id = volunteer.id, "volunteer registered");
    Ok((
        StatusCode::CREATED,
        AppJson(VolunteerWithPin {
            volunteer,
            pin: pin.expose().to_owned(),
        }),
    ))
}

#[utoipa::path(get, path = "/volunteers/{id}", tag = "volunteers", params(("id" = i64, Path)),
    responses((status = 200, description = "Success", body = Volunteer), (status = 404, description = "No such resource", body = ErrorBody)))]
async fn get_volunteer(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<AppJson<Volunteer>> {
    state
        .store
        .get_volunteer(id)
        .await
        .map(AppJson)
        .map_err(not_found)
}

/// Change name, phone, team or active flag.
#[utoipa::path(patch, path = "/volunteers/{id}", tag = "volunteers", params(("id" = i64, Path)), request_body = UpdateVolunteer,
    responses((status = 200, description = "Success", body = Volunteer), (status = 404, description = "No such resource", body = ErrorBody), (status = 409, description = "Conflicts with the current state", body = ErrorBody), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn update_volunteer(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    AppJson(req): AppJson<UpdateVolunteer>,
) -> ApiResult<AppJson<Volunteer>> {
    let patch = VolunteerPatch {
        name: req.name.as_deref().map(check_name).transpose()?,
        phone: req
            .phone
            .as_deref()
            .map(|p| parse_phone(&state, p))
            .transpose()?,
        team: req.team.as_deref().map(check_team).transpose()?,
        active: req.active,
    };
    state
        .store
        .update_volunteer(id, &patch)
        .await
        .map(AppJson)
        .map_err(not_found)
}

/// Remove a volunteer who never rang in and was never rung (409 `volunteer_has_calls`
/// otherwise, even for a call that ended at the PIN prompt: deactivate them instead).
#[utoipa::path(delete, path = "/volunteers/{id}", tag = "volunteers", params(("id" = i64, Path)),
    responses((status = 204, description = "Done, no content"), (status = 404, description = "No such resource", body = ErrorBody), (status = 409, description = "Conflicts with the current state", body = ErrorBody)))]
async fn delete_volunteer(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<StatusCode> {
    state.store.delete_volunteer(id).await.map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issue a new PIN (the old one stops working). Returned once.
#[utoipa::path(post, path = "/volunteers/{id}/pin", tag = "volunteers", params(("id" = i64, Path)),
    responses((status = 200, description = "Success", body = VolunteerWithPin), (status = 404, description = "No such resource", body = ErrorBody)))]
async fn reset_pin(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<AppJson<VolunteerWithPin>> {
    let (pin, hash) = new_pin().await?;
    state
        .store
        .set_volunteer_pin(id, &hash)
        .await
        .map_err(not_found)?;
    let volunteer = state.store.get_volunteer(id).await.map_err(not_found)?;
    Ok(AppJson(VolunteerWithPin {
        volunteer,
        pin: pin.expose().to_owned(),
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The campaign to call for; without it, the only active campaign.
    pub campaign_id: Option<i64>,
}

impl From<CallbackError> for ApiError {
    fn from(e: CallbackError) -> Self {
        use axum::http::StatusCode as S;
        let upstream = |status, code, message: String| ApiError::Upstream {
            status,
            code,
            message,
        };
        match e {
            CallbackError::NotConfigured => upstream(
                S::SERVICE_UNAVAILABLE,
                "telephony_not_configured",
                e.to_string(),
            ),
            CallbackError::UnknownVolunteer => ApiError::NotFound("volunteer"),
            CallbackError::UnknownCampaign => ApiError::NotFound("campaign"),
            CallbackError::InactiveVolunteer => {
                ApiError::conflict("volunteer_inactive", e.to_string())
            }
            CallbackError::CampaignNotActive => {
                ApiError::conflict("campaign_not_active", e.to_string())
            }
            CallbackError::NoActiveCampaign => {
                ApiError::conflict("no_active_campaign", e.to_string())
            }
            CallbackError::CampaignAmbiguous => {
                ApiError::bad_request("campaign_required", e.to_string())
            }
            CallbackError::Provider(err, request) => upstream(
                S::BAD_GATEWAY,
                "provider_rejected",
                format!("call-back {} not placed: {err}", request.id),
            ),
            CallbackError::Busy { retry_after } => ApiError::RateLimited {
                retry_after,
                message: e.to_string(),
            },
            CallbackError::Store(e) => e.into(),
        }
    }
}

/// Ring the volunteer's registered phone now; when they answer, the volunteer loop runs
/// as if they had dialled in (PIN first). Send an `Idempotency-Key` header to make
/// retries safe: a repeated key returns the first request and places no second call.
/// 202 with status `placed` (or `uncertain`: the provider's answer was lost; the call
/// may still ring, and is never placed twice).
#[utoipa::path(post, path = "/volunteers/{id}/call", tag = "volunteers",
    params(("id" = i64, Path), CallbackQuery,
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe")),
    responses((status = 202, description = "Call placed (or its outcome unknown)", body = CallbackRequest), (status = 404, description = "No such resource", body = ErrorBody), (status = 409, description = "Conflicts with the current state", body = ErrorBody), (status = 429, description = "Too many calls being placed for the account: nothing was sent; retry after Retry-After", body = ErrorBody), (status = 502, description = "The provider refused the call", body = ErrorBody), (status = 503, description = "Telephony is not configured", body = ErrorBody)))]
async fn call_volunteer(
    o: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    crate::http::error::AppQuery(q): crate::http::error::AppQuery<CallbackQuery>,
    headers: axum::http::HeaderMap,
) -> ApiResult<(StatusCode, AppJson<CallbackRequest>)> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().map(str::trim).unwrap_or_default();
            if k.is_empty() || k.len() > 200 {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1-200 visible ASCII characters",
                ));
            }
            // Scoped to the token, so two organisers' keys cannot collide.
            Some(format!("api:{}:{k}", o.token_name))
        }
    };
    let request = request_callback(&state, id, q.campaign_id, key.as_deref()).await?;
    tracing::info!(volunteer_id = id, callback_id = request.id, status = %request.status, actor = %o.token_name, "call-back requested");
    Ok((StatusCode::ACCEPTED, AppJson(request)))
}
