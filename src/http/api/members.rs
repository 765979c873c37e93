//! Members: CSV upload (the same importer as the CLI) and look-ups for organisers.
//! Look-up by number is a POST with the number in the body: phone numbers stay out of
//! URLs, and so out of proxy and access logs.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::PhoneNumber;
use crate::http::auth::Organiser;
use crate::http::error::{AppJson, AppPath, ErrorBody};
use crate::http::{ApiError, ApiResult, AppState};
use crate::import::{ImportError, ImportReport, QueueNew, import_members};
use crate::store::StoreError;
use crate::store::members::Member;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_member))
        .routes(routes!(lookup_members))
}

pub(super) fn upload_router(max_upload: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_members))
        .layer(DefaultBodyLimit::max(max_upload))
}

/// Import members from CSV (`member_id,name,phone,constituency` plus extra columns kept
/// as attributes). Good rows are imported, bad ones reported by line; re-uploading the
/// same file changes nothing.
#[utoipa::path(post, path = "/members/import", tag = "members",
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, description = "Success", body = ImportReport), (status = 400, description = "Malformed request (bad JSON, path or file)", body = ErrorBody),
              (status = 413, description = "Body larger than the limit", body = ErrorBody), (status = 415, description = "Wrong Content-Type", body = ErrorBody)))]
async fn upload_members(
    organiser: Organiser,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<AppJson<ImportReport>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("text/csv") && !content_type.starts_with("application/csv") {
        return Err(ApiError::UnsupportedMediaType(
            "send the file as Content-Type: text/csv".into(),
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(
                "the file is larger than the upload limit; use `phonebank import members`".into(),
            )
        } else {
            ApiError::bad_request("bad_request", e.body_text())
        }
    })?;
    let report = import_members(
        &state.store,
        std::io::Cursor::new(body),
        state.settings.default_region,
        QueueNew::Background,
    )
    .await
    .map_err(|e| match e {
        ImportError::Store(e) => ApiError::from(e),
        e => ApiError::bad_request("invalid_file", e.to_string()),
    })?;
    tracing::info!(
        imported = report.imported, updated = report.updated, unchanged = report.unchanged,
        rejected = report.rejected.len(), actor = %organiser.token_name, "member import"
    );
    Ok(AppJson(report))
}

/// One member by their external member id.
#[utoipa::path(get, path = "/members/{member_id}", tag = "members", params(("member_id" = String, Path)),
    responses((status = 200, description = "Success", body = Member), (status = 404, description = "No such resource", body = ErrorBody)))]
async fn get_member(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(member_id): AppPath<String>,
) -> ApiResult<AppJson<Member>> {
    match state.store.get_member(&member_id).await {
        Ok(m) => Ok(AppJson(m)),
        Err(StoreError::NotFound) => Err(ApiError::NotFound("member")),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneQuery {
    /// Any common format; read with the server's default region.
    #[schema(example = "07700 900123")]
    pub phone: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberLookup {
    pub members: Vec<Member>,
}

/// Every member on a number (several when a household shares one).
#[utoipa::path(post, path = "/members/lookup", tag = "members", request_body = PhoneQuery,
    responses((status = 200, description = "Success", body = MemberLookup), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn lookup_members(
    _: Organiser,
    State(state): State<AppState>,
    AppJson(query): AppJson<PhoneQuery>,
) -> ApiResult<AppJson<MemberLookup>> {
    let phone = parse_phone(&state, &query.phone)?;
    Ok(AppJson(MemberLookup {
        members: state.store.members_by_phone(&phone).await?,
    }))
}

pub(super) fn parse_phone(state: &AppState, input: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(input, state.settings.default_region)
        .map_err(|e| ApiError::invalid("phone", e.to_string()))
}
