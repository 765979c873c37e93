//! The number's messaging webhook. Opt-out keywords come before anything else; then
//! START/UNSTOP, HELP, and a registered volunteer's `CALL` (ring me back). Survey
//! replies are matched by the SMS work that builds on this; until then any other text
//! is acknowledged with an empty response and logged (without the number).
//!
//! A keyword is the whole message, any case, with surrounding spaces and punctuation
//! ignored: `stop.` opts out, `We must stop this bill!` does not.

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{Params, TwimlResponse};
use crate::callback::{CallbackError, request_callback};
use crate::domain::{CampaignStatus, PhoneNumber};
use crate::http::AppState;
use crate::telephony::Twiml;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/webhooks/sms", post(incoming))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    Stop,
    Start,
    Help,
    Call,
}

/// The keyword a whole message amounts to, if any.
pub fn keyword(body: &str) -> Option<Keyword> {
    let word = body
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_uppercase();
    Some(match word.as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "REVOKE" | "OPTOUT" => {
            Keyword::Stop
        }
        "START" | "UNSTOP" => Keyword::Start,
        "HELP" | "INFO" => Keyword::Help,
        "CALL" => Keyword::Call,
        _ => return None,
    })
}

const HELP_TEXT: &str = "This number is used by a campaign phone bank. Reply STOP to \
                         never be contacted again, START to undo that.";

async fn incoming(State(state): State<AppState>, Extension(p): Extension<Params>) -> Response {
    let Some(sid) = p.non_empty("MessageSid").or(p.non_empty("SmsSid")) else {
        return (StatusCode::BAD_REQUEST, "missing MessageSid").into_response();
    };
    match handle(&state, &p, sid).await {
        Ok(t) => TwimlResponse(t).into_response(),
        Err(e) => {
            // 500 makes the provider retry; every step below is idempotent.
            tracing::error!(error = %e, "sms webhook failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response()
        }
    }
}

async fn handle(state: &AppState, p: &Params, sid: &str) -> anyhow::Result<Twiml> {
    if crate::limits::sms_flood(state, p) {
        return Ok(Twiml::new());
    }
    let store = &state.store;
    let now = state.clock.now().as_millisecond();
    let event = format!("sms:{sid}");
    if store.was_provider_event(&event).await? {
        // Redelivered: it was handled, and its reply (if any) already went out.
        return Ok(Twiml::new());
    }
    let from = p
        .non_empty("From")
        .and_then(|f| PhoneNumber::parse(f, state.settings.default_region).ok());
    let body = p.get("Body").unwrap_or_default();
    let reply = match (keyword(body), &from) {
        (_, None) => {
            tracing::info!(message_sid = sid, "text from an unreadable sender ignored");
            Twiml::new()
        }
        (Some(Keyword::Stop), Some(from)) => {
            store
                .suppress(from, "replied with an opt-out keyword", "sms", "member")
                .await?;
            metrics::counter!("phonebank_optouts_total", "source" => "sms").increment(1);
            // The provider confirms STOP itself; a reply of ours would not be delivered.
            Twiml::new()
        }
        (Some(Keyword::Start), Some(from)) => {
            if store
                .unsuppress(from, "sms", "replied START", "member")
                .await?
            {
                Twiml::new().message("You will hear from us again. Reply STOP to opt out.")
            } else {
                Twiml::new()
            }
        }
        (Some(Keyword::Help), Some(_)) => Twiml::new().message(HELP_TEXT),
        (Some(Keyword::Call), Some(from)) => call_me(state, p, from, sid).await?,
        (None, Some(_)) => {
            tracing::info!(
                message_sid = sid,
                "text that is not a keyword: left for review"
            );
            Twiml::new()
        }
    };
    store.first_provider_event(&event, now).await?;
    Ok(reply)
}

/// `CALL` from a registered volunteer: ring them back for the campaign on the number
/// they texted. The MessageSid is the idempotency key, so a redelivery never rings twice.
async fn call_me(
    state: &AppState,
    p: &Params,
    from: &PhoneNumber,
    sid: &str,
) -> anyhow::Result<Twiml> {
    let Some((volunteer, _)) = state.store.volunteer_by_phone(from).await? else {
        return Ok(Twiml::new().message(HELP_TEXT));
    };
    let to = p.non_empty("To").unwrap_or_default();
    let campaign = state
        .store
        .list_campaigns()
        .await?
        .into_iter()
        .find(|c| c.status == CampaignStatus::Active && c.caller_number.as_e164() == to)
        .map(|c| c.id);
    let said = match request_callback(state, volunteer.id, campaign, Some(&format!("sms:{sid}")))
        .await
    {
        Ok(r) if r.status == "placed" => "Calling you now.",
        Ok(_) => {
            "We are trying to call you. If your phone does not ring, text CALL again in a minute."
        }
        Err(CallbackError::InactiveVolunteer) => {
            "Your volunteer account is not active. Please contact your organiser."
        }
        Err(
            CallbackError::NoActiveCampaign
            | CallbackError::CampaignNotActive
            | CallbackError::UnknownCampaign,
        ) => "No campaign is taking calls right now. Thank you!",
        Err(CallbackError::CampaignAmbiguous) => {
            "Please text CALL to the number of the campaign you are calling for."
        }
        Err(CallbackError::Store(e)) => return Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, volunteer_id = volunteer.id, "call-back by text failed");
            "Sorry, we could not call you just now. Please try again in a few minutes."
        }
    };
    Ok(Twiml::new().message(said))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_message_keywords_only() {
        for stop in [
            "STOP",
            "stop.",
            " Unsubscribe ",
            "OPTOUT",
            "Quit!",
            "end",
            "revoke",
        ] {
            assert_eq!(keyword(stop), Some(Keyword::Stop), "{stop:?}");
        }
        for not in [
            "We must stop this bill!",
            "stop it",
            "don't stop",
            "",
            "1",
            "STOPP",
        ] {
            assert_eq!(keyword(not), None, "{not:?}");
        }
        assert_eq!(keyword("start"), Some(Keyword::Start));
        assert_eq!(keyword("Unstop"), Some(Keyword::Start));
        assert_eq!(keyword("help?"), Some(Keyword::Help));
        assert_eq!(keyword("call"), Some(Keyword::Call));
        assert_eq!(keyword("Call me"), None);
    }
}
