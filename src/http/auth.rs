//! Organiser authentication: `Authorization: Bearer pbk_...`, checked against the stored
//! SHA-256 digests of tokens made with `phonebank token create`.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::domain::ApiToken;

/// An authenticated organiser; the token's name is recorded as the actor in audits.
#[derive(Debug, Clone)]
pub struct Organiser {
    pub token_name: String,
}

impl FromRequestParts<AppState> for Organiser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::Unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") || !token.trim().starts_with(ApiToken::PREFIX) {
            return Err(ApiError::Unauthorized);
        }
        let token = ApiToken::from_header(token.trim());
        match state.store.authenticate(&token).await? {
            Some(token_name) => {
                // Keyed on the digest of a token known to be live, so the limiter's keys
                // are bounded by the tokens issued.
                state.limits.check_api(&token.digest())?;
                Ok(Self { token_name })
            }
            None => {
                tracing::info!("rejected an unknown or revoked API token");
                Err(ApiError::Unauthorized)
            }
        }
    }
}
