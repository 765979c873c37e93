//! Seats and their targeting settings.

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::Organiser;
use crate::http::error::{AppJson, AppPath, AppQuery, ErrorBody};
use crate::http::{ApiError, ApiResult, AppState};
use crate::store::seats::{Seat, SeatPatch};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_seats))
        .routes(routes!(get_seat, update_seat))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SeatFilter {
    /// Only target seats.
    #[serde(default)]
    target: bool,
}

/// List seats (alphabetical).
#[utoipa::path(get, path = "/seats", tag = "seats", params(SeatFilter),
    responses((status = 200, description = "Success", body = Vec<Seat>), (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody)))]
async fn list_seats(
    _: Organiser,
    State(state): State<AppState>,
    AppQuery(filter): AppQuery<SeatFilter>,
) -> ApiResult<AppJson<Vec<Seat>>> {
    Ok(AppJson(state.store.list_seats(filter.target).await?))
}

/// One seat by ONS code (e.g. `E14001234`).
#[utoipa::path(get, path = "/seats/{code}", tag = "seats", params(("code" = String, Path)),
    responses((status = 200, description = "Success", body = Seat), (status = 404, description = "No such resource", body = ErrorBody)))]
async fn get_seat(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(code): AppPath<String>,
) -> ApiResult<AppJson<Seat>> {
    state
        .store
        .get_seat(&code)
        .await
        .map(AppJson)
        .map_err(not_found)
}

/// Change a seat's targeting: target flag, weight, rate limit, burst, daily cap, zone.
/// Takes effect at the next claim.
#[utoipa::path(patch, path = "/seats/{code}", tag = "seats", params(("code" = String, Path)),
    request_body = SeatPatch,
    responses((status = 200, description = "Success", body = Seat), (status = 404, description = "No such resource", body = ErrorBody), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn update_seat(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(code): AppPath<String>,
    AppJson(patch): AppJson<SeatPatch>,
) -> ApiResult<AppJson<Seat>> {
    patch.validate().map_err(ApiError::Invalid)?;
    state
        .store
        .update_seat(&code, &patch)
        .await
        .map(AppJson)
        .map_err(not_found)
}

fn not_found(e: crate::store::StoreError) -> ApiError {
    match e {
        crate::store::StoreError::NotFound => ApiError::NotFound("seat"),
        e => e.into(),
    }
}
