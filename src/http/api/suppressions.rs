//! The suppression (do-not-contact) list. Adding is idempotent; removing needs a note
//! and is audited, because re-opting someone in must be explainable later.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::members::{PhoneQuery, parse_phone};
use crate::http::auth::Organiser;
use crate::http::error::{AppJson, AppQuery, ErrorBody};
use crate::http::{ApiError, ApiResult, AppState};
use crate::store::suppressions::{AuditEntry, Suppression};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_suppressions, add_suppression))
        .routes(routes!(lookup_suppression))
        .routes(routes!(remove_suppression))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSuppression {
    #[schema(example = "07700 900123")]
    pub phone: String,
    /// Why (e.g. "asked by email").
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveSuppression {
    pub phone: String,
    /// Required: the evidence for re-opting in (e.g. "member asked in writing, ref 123").
    pub note: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionStatus {
    pub suppressed: bool,
    pub suppression: Option<Suppression>,
    /// Every add and remove for this number, oldest first.
    pub audit: Vec<AuditEntry>,
    /// Whether this request changed anything.
    pub changed: bool,
}

async fn status(
    state: &AppState,
    phone: &crate::domain::PhoneNumber,
    changed: bool,
) -> ApiResult<AppJson<SuppressionStatus>> {
    let suppression = state.store.suppression(phone).await?;
    Ok(AppJson(SuppressionStatus {
        suppressed: suppression.is_some(),
        suppression,
        audit: state.store.suppression_audit(phone).await?,
        changed,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only entries from this source: `sms`, `call`, `organiser`, `carrier`.
    pub source: Option<String>,
    /// Entries added before this instant (unix ms; paging, newest first).
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// The suppression list, newest first.
#[utoipa::path(get, path = "/suppressions", tag = "suppressions", params(ListQuery),
    responses((status = 200, description = "Success", body = Vec<Suppression>), (status = 400, description = "Malformed query", body = ErrorBody), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn list_suppressions(
    _: Organiser,
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<AppJson<Vec<Suppression>>> {
    let limit = super::page_limit(q.limit)?;
    Ok(AppJson(
        state
            .store
            .list_suppressions(q.source.as_deref(), q.before, limit)
            .await?,
    ))
}

/// Suppress a number across every campaign, now.
#[utoipa::path(post, path = "/suppressions", tag = "suppressions", request_body = AddSuppression,
    responses((status = 200, description = "Success", body = SuppressionStatus), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn add_suppression(
    organiser: Organiser,
    State(state): State<AppState>,
    AppJson(req): AppJson<AddSuppression>,
) -> ApiResult<AppJson<SuppressionStatus>> {
    let phone = parse_phone(&state, &req.phone)?;
    let Some(reason) = super::note("reason", Some(&req.reason))? else {
        return Err(ApiError::invalid(
            "reason",
            "give a reason of 1-500 characters",
        ));
    };
    let changed = state
        .store
        .suppress(&phone, reason, "organiser", &organiser.token_name)
        .await?;
    tracing::info!(phone = %phone, changed, "suppression added by organiser");
    status(&state, &phone, changed).await
}

/// Is this number suppressed, and what is its history?
#[utoipa::path(post, path = "/suppressions/lookup", tag = "suppressions", request_body = PhoneQuery,
    responses((status = 200, description = "Success", body = SuppressionStatus), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn lookup_suppression(
    _: Organiser,
    State(state): State<AppState>,
    AppJson(req): AppJson<PhoneQuery>,
) -> ApiResult<AppJson<SuppressionStatus>> {
    let phone = parse_phone(&state, &req.phone)?;
    status(&state, &phone, false).await
}

/// Re-opt a number in (audited).
#[utoipa::path(post, path = "/suppressions/remove", tag = "suppressions", request_body = RemoveSuppression,
    responses((status = 200, description = "Success", body = SuppressionStatus), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn remove_suppression(
    organiser: Organiser,
    State(state): State<AppState>,
    AppJson(req): AppJson<RemoveSuppression>,
) -> ApiResult<AppJson<SuppressionStatus>> {
    let phone = parse_phone(&state, &req.phone)?;
    let Some(note) = super::note("note", Some(&req.note))? else {
        return Err(ApiError::invalid(
            "note",
            "say why the number may be contacted again (1-500 characters)",
        ));
    };
    let changed = state
        .store
        .unsuppress(&phone, "organiser", note, &organiser.token_name)
        .await?;
    tracing::info!(phone = %phone, changed, "suppression removed by organiser");
    status(&state, &phone, changed).await
}
