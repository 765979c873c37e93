//! The organiser API's one error type. Every error leaves as
//! `{"error": {"code": "...", "message": "..."}}` with a stable machine code; 5xx details
//! are logged, never returned.

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::FieldError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The telephony provider is not configured, refused, or did not answer.
    #[error("{message}")]
    Upstream {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// Over a rate limit: 429 with `Retry-After` (whole seconds).
    #[error("{message}")]
    RateLimited {
        retry_after: std::time::Duration,
        message: String,
    },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// The wire shape, for the OpenAPI document.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `not_found`, `malformed_json`,
    /// `invalid_body`, `invalid_fields`, `invalid_phone`, `conflict` codes,
    /// `rate_limited` (429, with a `Retry-After` header), ...
    pub code: String,
    pub message: String,
    /// Per-field problems, for `invalid_fields`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldError>>,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Upstream { status, .. } => *status,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::BadRequest { code, .. }
            | Self::Conflict { code, .. }
            | Self::Upstream { code, .. } => code,
            Self::Invalid(_) => "invalid_fields",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(e) = &self {
            // Inside the request span, so the request id and path are on the line.
            tracing::error!(error.cause_chain = ?e, error.message = %e, "request failed");
        }
        let status = self.status();
        let retry_after = match &self {
            Self::RateLimited { retry_after, .. } => Some(
                crate::limits::Limited {
                    retry_after: *retry_after,
                }
                .retry_after_secs(),
            ),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                fields: match self {
                    Self::Invalid(fields) => Some(fields),
                    _ => None,
                },
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<crate::limits::Limited> for ApiError {
    fn from(l: crate::limits::Limited) -> Self {
        Self::RateLimited {
            retry_after: l.retry_after,
            message: format!("too many requests: try again in {} s", l.retry_after_secs()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("resource"),
            StoreError::Conflict(code) => Self::conflict(code, conflict_message(code)),
            StoreError::Other(e) => Self::Internal(e),
        }
    }
}

fn conflict_message(code: &str) -> &'static str {
    match code {
        "volunteer_phone_taken" => "another volunteer is registered on this number",
        "campaign_active" => {
            "the campaign is running: pause it before changing its script or deleting it"
        }
        "campaign_finished" => "a finished campaign cannot be changed",
        "campaign_has_attempts" => {
            "calls have been made for this campaign; finish it instead of deleting it"
        }
        "campaign_has_texts" => {
            "survey texts have been sent for this campaign; finish it instead of deleting it"
        }
        "volunteer_has_calls" => "this volunteer has rung in or been rung; deactivate them instead",
        "status_transition" => "the campaign cannot move to that state from its current one",
        _ => "the request conflicts with the current state",
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonSyntaxError(e) => Self::bad_request("malformed_json", e.body_text()),
            JsonRejection::JsonDataError(e) => Self::bad_request("invalid_body", e.body_text()),
            JsonRejection::MissingJsonContentType(_) => {
                Self::UnsupportedMediaType("expected Content-Type: application/json".into())
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge("request body is too large".into())
            }
            other => Self::bad_request("bad_request", other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request("invalid_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request("invalid_query", r.body_text())
    }
}

/// `Json` whose rejections use our error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `Path` whose rejections use our error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

/// `Query` whose rejections use our error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

pub type ApiResult<T> = Result<T, ApiError>;
