//! The organiser API, `/api/v1`. JSON in and out, bearer tokens, and an OpenAPI document
//! generated from these handlers (`utoipa`), so the document cannot drift from the code.
//! Modules are merged below in the order an organiser meets them.

mod campaigns;
mod members;
mod seats;
mod sms;
mod suppressions;
mod volunteers;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use super::{ApiRouter, timeout};
use crate::config::Settings;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "phonebank organiser API",
        description = "Campaigns, scripts, seats, members, volunteers, suppressions and reports. \
                       Every route needs `Authorization: Bearer <token>` (create one with \
                       `phonebank token create`). Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "seats", description = "Constituencies and their targeting settings"),
        (name = "campaigns", description = "Campaigns, scripts, status and progress"),
        (name = "members", description = "Member import and look-up"),
        (name = "volunteers", description = "Volunteers and their PINs"),
        (name = "suppressions", description = "The do-not-contact list"),
        (name = "sms", description = "Survey texts, their replies and the review queue"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// A list endpoint's `limit`: 100 when absent, 1 to 1000 when given.
/// An organiser's free-text note or reason, trimmed; `None` when empty. At most 500
/// characters; line breaks are fine, other control characters are refused (they would
/// reach CSV exports, logs and terminals as they are).
pub(super) fn note<'a>(
    field: &str,
    text: Option<&'a str>,
) -> Result<Option<&'a str>, crate::http::ApiError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > 500 {
        return Err(crate::http::ApiError::invalid(
            field,
            format!("{field} is at most 500 characters"),
        ));
    }
    if let Some(reason) = crate::domain::text::control_character(text, true) {
        return Err(crate::http::ApiError::invalid(
            field,
            format!("{field} {reason}"),
        ));
    }
    Ok(Some(text))
}

pub(super) fn page_limit(limit: Option<i64>) -> Result<i64, crate::http::ApiError> {
    let limit = limit.unwrap_or(100);
    if (1..=1000).contains(&limit) {
        Ok(limit)
    } else {
        Err(crate::http::ApiError::invalid(
            "limit",
            "must be between 1 and 1000",
        ))
    }
}

pub(super) fn router(settings: &Settings) -> ApiRouter {
    let json = OpenApiRouter::new()
        .merge(seats::router())
        .merge(campaigns::router())
        .merge(members::router())
        .merge(volunteers::router())
        .merge(suppressions::router())
        .merge(sms::router())
        .layer(timeout(settings.request_timeout));
    let uploads = members::upload_router(settings.max_upload_bytes)
        .layer(timeout(settings.request_timeout * 10));
    let mut router =
        OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", json.merge(uploads));
    document_rate_limit(router.get_openapi_mut());
    router
}

/// Every operation may answer 429 (the per-token limit, `crate::limits`): documented
/// once here rather than on each handler, so new routes get it too.
fn document_rate_limit(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{Object, Type};
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, header::Header};
    let response = ResponseBuilder::new()
        .description("Too many requests with this token (`rate_limited`)")
        .header("Retry-After", Header::new(Object::with_type(Type::Integer)))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for item in openapi.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            op.responses
                .responses
                .entry("429".into())
                .or_insert_with(|| response.clone().into());
        }
    }
}
