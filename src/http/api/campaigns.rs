//! Campaigns: definition (script, calling hours, retry policy), status, and progress.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::targeting::Targeting;
use crate::domain::text::control_character;
use crate::domain::{CallingHours, CampaignStatus, FieldError, PhoneNumber, RetryPolicy, Script};
use crate::http::auth::Organiser;
use crate::http::error::{AppJson, AppPath, AppQuery, ErrorBody};
use crate::http::{ApiError, ApiResult, AppState};
use crate::store::StoreError;
use crate::store::campaigns::{Campaign, CampaignSpec};
use crate::store::report::{CampaignReport, LiveFigures, ReportOptions};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(get_campaign, replace_campaign, delete_campaign))
        .routes(routes!(start_campaign))
        .routes(routes!(pause_campaign))
        .routes(routes!(finish_campaign))
        .routes(routes!(campaign_report))
        .routes(routes!(campaign_live))
        .routes(routes!(get_targeting, put_targeting))
}

/// A campaign definition as submitted. Calling hours and retry policy default to
/// conservative values when left out.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    pub name: String,
    /// The campaign's number in any common format; stored as E.164.
    #[schema(example = "020 7946 0000")]
    pub caller_number: String,
    pub script: Script,
    pub calling_hours: Option<CallingHours>,
    pub retry_policy: Option<RetryPolicy>,
}

impl CampaignInput {
    fn validate(self, state: &AppState) -> Result<CampaignSpec, ApiError> {
        let mut errors: Vec<FieldError> = Vec::new();
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            errors.push(FieldError {
                field: "name".into(),
                message: "name must be 1-200 characters".into(),
            });
        }
        // Spoken to every volunteer and written into every survey text.
        if let Some(reason) = control_character(&name, false) {
            errors.push(FieldError {
                field: "name".into(),
                message: format!("name {reason}"),
            });
        }
        let caller_number = PhoneNumber::parse(&self.caller_number, state.settings.default_region)
            .map_err(|e| {
                errors.push(FieldError {
                    field: "caller_number".into(),
                    message: e.to_string(),
                })
            })
            .ok();
        let calling_hours = self.calling_hours.unwrap_or_default();
        let retry_policy = self.retry_policy.unwrap_or_default();
        for result in [
            self.script.validate(),
            calling_hours.validate(),
            retry_policy.validate(),
        ] {
            if let Err(mut e) = result {
                errors.append(&mut e);
            }
        }
        match caller_number {
            Some(caller_number) if errors.is_empty() => Ok(CampaignSpec {
                name,
                caller_number,
                script: self.script,
                calling_hours,
                retry_policy,
            }),
            _ => Err(ApiError::Invalid(errors)),
        }
    }
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound("campaign"),
        e => e.into(),
    }
}

/// All campaigns, oldest first.
#[utoipa::path(get, path = "/campaigns", tag = "campaigns",
    responses((status = 200, description = "Success", body = Vec<Campaign>), (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody)))]
async fn list_campaigns(
    _: Organiser,
    State(state): State<AppState>,
) -> ApiResult<AppJson<Vec<Campaign>>> {
    Ok(AppJson(state.store.list_campaigns().await?))
}

/// Create a campaign in `draft`.
#[utoipa::path(post, path = "/campaigns", tag = "campaigns", request_body = CampaignInput,
    responses((status = 201, description = "Created", body = Campaign), (status = 400, description = "Malformed request (bad JSON, path or file)", body = ErrorBody), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn create_campaign(
    _: Organiser,
    State(state): State<AppState>,
    AppJson(input): AppJson<CampaignInput>,
) -> ApiResult<(StatusCode, AppJson<Campaign>)> {
    let spec = input.validate(&state)?;
    let campaign = state.store.create_campaign(&spec).await?;
    tracing::info!(campaign_id = campaign.id, "campaign created");
    Ok((StatusCode::CREATED, AppJson(campaign)))
}

#[utoipa::path(get, path = "/campaigns/{id}", tag = "campaigns", params(("id" = i64, Path)),
    responses((status = 200, description = "Success", body = Campaign), (status = 404, description = "No such resource", body = ErrorBody)))]
async fn get_campaign(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<AppJson<Campaign>> {
    state
        .store
        .get_campaign(id)
        .await
        .map(AppJson)
        .map_err(not_found)
}

/// Replace a campaign's definition. The script can change only while the campaign is
/// draft or paused (409 `campaign_active` otherwise).
#[utoipa::path(put, path = "/campaigns/{id}", tag = "campaigns", params(("id" = i64, Path)), request_body = CampaignInput,
    responses((status = 200, description = "Success", body = Campaign), (status = 404, description = "No such resource", body = ErrorBody), (status = 409, description = "Conflicts with the current state", body = ErrorBody), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn replace_campaign(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    AppJson(input): AppJson<CampaignInput>,
) -> ApiResult<AppJson<Campaign>> {
    let spec = input.validate(&state)?;
    state
        .store
        .update_campaign(id, &spec)
        .await
        .map(AppJson)
        .map_err(not_found)
}

/// Delete a campaign that never contacted anyone, with its queue and any texts still
/// queued. 409 `campaign_active` while it runs (pause it first), `campaign_has_attempts`
/// once a call was made, `campaign_has_texts` once a survey text went out: finish it
/// instead.
#[utoipa::path(delete, path = "/campaigns/{id}", tag = "campaigns", params(("id" = i64, Path)),
    responses((status = 204, description = "Done, no content"), (status = 404, description = "No such resource", body = ErrorBody), (status = 409, description = "Conflicts with the current state", body = ErrorBody)))]
async fn delete_campaign(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<StatusCode> {
    state.store.delete_campaign(id).await.map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_status(
    state: &AppState,
    organiser: &Organiser,
    id: i64,
    to: CampaignStatus,
) -> ApiResult<AppJson<Campaign>> {
    let campaign = state
        .store
        .set_campaign_status(id, to)
        .await
        .map_err(not_found)?;
    tracing::info!(campaign_id = id, status = to.as_str(), actor = %organiser.token_name, "campaign status changed");
    Ok(AppJson(campaign))
}

/// Start (or resume) calling.
#[utoipa::path(post, path = "/campaigns/{id}/start", tag = "campaigns", params(("id" = i64, Path)),
    responses((status = 200, description = "Success", body = Campaign), (status = 404, description = "No such resource", body = ErrorBody), (status = 409, description = "Conflicts with the current state", body = ErrorBody)))]
async fn start_campaign(
    o: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<AppJson<Campaign>> {
    set_status(&state, &o, id, CampaignStatus::Active).await
}

/// Pause: volunteers are told, nothing is dialled or sent.
#[utoipa::path(post, path = "/campaigns/{id}/pause", tag = "campaigns", params(("id" = i64, Path)),
    responses((status = 200, description = "Success", body = Campaign), (status = 404, description = "No such resource", body = ErrorBody), (status = 409, description = "Conflicts with the current state", body = ErrorBody)))]
async fn pause_campaign(
    o: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<AppJson<Campaign>> {
    set_status(&state, &o, id, CampaignStatus::Paused).await
}

/// Close the campaign for good.
#[utoipa::path(post, path = "/campaigns/{id}/finish", tag = "campaigns", params(("id" = i64, Path)),
    responses((status = 200, description = "Success", body = Campaign), (status = 404, description = "No such resource", body = ErrorBody)))]
async fn finish_campaign(
    o: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<AppJson<Campaign>> {
    set_status(&state, &o, id, CampaignStatus::Finished).await
}

/// Per-seat progress: members, opt-outs, attempts, contacts, completions, answers by
/// option, members remaining and attempts in the last hour; live figures for the evening;
/// with `weekly=true`, the same per ISO week (Monday 00:00 Europe/London).
#[utoipa::path(get, path = "/campaigns/{id}/report", tag = "campaigns", params(("id" = i64, Path), ReportQuery),
    responses((status = 200, description = "Success", body = CampaignReport), (status = 400, description = "Malformed request (bad path or query)", body = ErrorBody), (status = 404, description = "No such resource", body = ErrorBody)))]
async fn campaign_report(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    AppQuery(q): AppQuery<ReportQuery>,
) -> ApiResult<AppJson<CampaignReport>> {
    let opts = ReportOptions {
        now: state.clock.now(),
        weekly: q.weekly,
    };
    state
        .store
        .campaign_report_with(id, opts)
        .await
        .map(AppJson)
        .map_err(not_found)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// Add per-week figures (`weeks`).
    #[serde(default)]
    weekly: bool,
}

/// Live figures only (cheap enough to poll through the evening): volunteers waiting, on
/// a call or keying answers, their average wait between members, calls per minute.
#[utoipa::path(get, path = "/campaigns/{id}/report/live", tag = "campaigns", params(("id" = i64, Path)),
    responses((status = 200, description = "Success", body = LiveFigures), (status = 404, description = "No such resource", body = ErrorBody)))]
async fn campaign_live(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<AppJson<LiveFigures>> {
    state.store.get_campaign(id).await.map_err(not_found)?;
    Ok(AppJson(
        state.store.live_figures(id, state.clock.now()).await?,
    ))
}

/// How the campaign serves non-target seats and orders members within a seat. Seats'
/// own targeting (target flag, weight, per-seat limits) is set on `/seats/{code}`.
#[utoipa::path(get, path = "/campaigns/{id}/targeting", tag = "campaigns", params(("id" = i64, Path)),
    responses((status = 200, description = "Success", body = Targeting), (status = 404, description = "No such resource", body = ErrorBody)))]
async fn get_targeting(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<AppJson<Targeting>> {
    state
        .store
        .targeting(id)
        .await
        .map(AppJson)
        .map_err(not_found)
}

/// Replace the targeting settings; the next claim follows them (no restart).
#[utoipa::path(put, path = "/campaigns/{id}/targeting", tag = "campaigns", params(("id" = i64, Path)), request_body = Targeting,
    responses((status = 200, description = "Success", body = Targeting), (status = 404, description = "No such resource", body = ErrorBody), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn put_targeting(
    o: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    AppJson(t): AppJson<Targeting>,
) -> ApiResult<AppJson<Targeting>> {
    t.validate().map_err(ApiError::Invalid)?;
    let saved = state.store.set_targeting(id, &t).await.map_err(not_found)?;
    tracing::info!(campaign_id = id, non_targets = t.non_targets.as_str(), actor = %o.token_name, "targeting changed");
    Ok(AppJson(saved))
}
