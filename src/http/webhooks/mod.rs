//! The provider's webhooks. Every request passes [`verify`] first: size and content
//! type, then the signature over the configured public URL, before any handler reads a
//! parameter or touches the database. A bad or missing signature is 403 and changes
//! nothing.

pub mod sms;
pub mod voice;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;

use super::AppState;
use crate::telephony::{Twiml, signature};

/// Webhook bodies are small form posts; anything bigger is not from the provider.
const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// The verified form parameters, as received (order and repeats kept).
#[derive(Debug, Clone)]
pub struct Params(Arc<Vec<(String, String)>>);

impl Params {
    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A present, non-empty value.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }
}

pub(super) fn router(state: AppState) -> Router<AppState> {
    voice::router()
        .merge(sms::router())
        .layer(middleware::from_fn_with_state(state, verify))
}

async fn verify(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = state.settings.auth_token.as_ref() else {
        tracing::warn!("webhook refused: TWILIO_AUTH_TOKEN is not configured");
        return plain(
            StatusCode::FORBIDDEN,
            "webhook signatures cannot be checked",
        );
    };
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/x-www-form-urlencoded",
        );
    }
    let signature = req
        .headers()
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (mut parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_WEBHOOK_BYTES).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "webhook body too large");
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
    // The URL the provider called: our public base plus the path and the raw query,
    // exactly as received (never re-encoded).
    let mut url = format!(
        "{}{}",
        state.settings.public_base().trim_end_matches('/'),
        parts.uri.path()
    );
    if let Some(q) = parts.uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let ok = signature
        .as_deref()
        .is_some_and(|sig| signature::verify(token.expose_secret(), &url, &params, sig));
    if !ok {
        metrics::counter!("phonebank_webhook_signature_failures_total").increment(1);
        tracing::warn!(
            path = parts.uri.path(),
            signature_present = signature.is_some(),
            "webhook refused: bad signature"
        );
        return plain(StatusCode::FORBIDDEN, "invalid webhook signature");
    }
    parts.extensions.insert(Params(Arc::new(params)));
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn plain(status: StatusCode, message: &'static str) -> Response {
    (status, message).into_response()
}

/// A TwiML document as an HTTP response.
pub struct TwimlResponse(pub Twiml);

impl IntoResponse for TwimlResponse {
    fn into_response(self) -> Response {
        let mut r = self.0.render().into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        r
    }
}
