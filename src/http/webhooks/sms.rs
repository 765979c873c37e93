//! The number's messaging webhook. Opt-out keywords come before anything else; then
//! START/UNSTOP, HELP, and a registered volunteer's `CALL` (ring me back). Anything
//! else is a reply to a survey text: matched to the member's most recent open survey
//! from that campaign number (within `PHONEBANK_SMS_REPLY_WINDOW_HOURS`) and stored as
//! an answer by option code, once per MessageSid; or, when it is unclear, from an unknown
//! number, or from a number two members share, kept for organiser review. Never guessed.
//! At most one confirmation text per inbound message, never one for a redelivery.
//!
//! A keyword is the whole message, any case, with surrounding spaces and punctuation
//! ignored: `stop.` opts out, `We must stop this bill!` does not.
//!
//! `/webhooks/sms/status?o=ID` takes the delivery status callbacks of survey texts.

use axum::Router;
use axum::extract::{Extension, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{Params, TwimlResponse};
use crate::callback::{CallbackError, request_callback};
use crate::domain::sms::{ReplyMatch, match_reply};
use crate::domain::{CampaignStatus, PhoneNumber};
use crate::http::AppState;
use crate::store::sms::{OpenSurvey, Reply, Stored};
use crate::telephony::Twiml;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks/sms", post(incoming))
        .route("/webhooks/sms/status", post(status))
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
        (None, Some(from)) => survey_reply(state, p, sid, from, body, now).await?,
    };
    store.first_provider_event(&event, now).await?;
    Ok(reply)
}

/// A reply that is not a keyword: an answer to the member's open survey, or an item for
/// organiser review.
async fn survey_reply(
    state: &AppState,
    p: &Params,
    sid: &str,
    from: &PhoneNumber,
    body: &str,
    now: i64,
) -> anyhow::Result<Twiml> {
    let store = &state.store;
    let to = p.non_empty("To").unwrap_or_default();
    let reply = Reply {
        message_sid: sid,
        from: from.as_e164(),
        to,
        body,
        now,
    };
    let members = store.members_on(from.as_e164()).await?;
    let review = |reason: &'static str, survey: Option<OpenSurvey>, answer: Option<String>| {
        let reply = &reply;
        async move {
            let campaign = store.campaign_by_number(to).await?;
            let stored = store
                .record_text_for_review(reply, reason, campaign, survey.as_ref())
                .await?;
            metrics::counter!("phonebank_sms_replies_total", "outcome" => reason).increment(1);
            tracing::info!(
                message_sid = sid,
                reason,
                "text reply kept for organiser review"
            );
            Ok::<_, anyhow::Error>(match (stored, answer) {
                (Stored::New, Some(text)) => Twiml::new().message(text),
                _ => Twiml::new(),
            })
        }
    };
    match members.len() {
        0 => return review("unknown_number", None, None).await,
        1 => {}
        _ => {
            return review(
                "shared_number",
                None,
                Some("Thanks for your reply. A member of our team will read it.".to_owned()),
            )
            .await;
        }
    }
    let window = i64::try_from(state.settings.sms_reply_window.as_millis()).unwrap_or(i64::MAX);
    let Some(survey) = store
        .open_survey(from.as_e164(), to, now.saturating_sub(window))
        .await?
    else {
        return review("no_open_survey", None, None).await;
    };
    let campaign = store.get_campaign(survey.campaign_id).await?;
    let Some(question) = campaign.script.question(&survey.question_code) else {
        return review("unrecognised", Some(survey), None).await;
    };
    match match_reply(body, question) {
        ReplyMatch::Option(code) => {
            let label = question
                .options
                .iter()
                .find(|o| o.code == code)
                .map(|o| o.label.trim().to_owned())
                .unwrap_or_else(|| code.clone());
            match store.record_text_answer(&reply, &survey, &code).await? {
                Stored::New => {
                    metrics::counter!("phonebank_sms_replies_total", "outcome" => "answered")
                        .increment(1);
                    tracing::info!(
                        message_sid = sid,
                        campaign_id = survey.campaign_id,
                        outbox_id = survey.outbox_id,
                        "answer received by text"
                    );
                    Ok(Twiml::new().message(format!(
                        "Thank you! We have recorded your answer: {label}. Reply STOP to opt out."
                    )))
                }
                Stored::Duplicate => Ok(Twiml::new()),
            }
        }
        ReplyMatch::Ambiguous => {
            let digits: Vec<String> = question
                .options
                .iter()
                .map(|o| o.digit.to_string())
                .collect();
            let ask = format!(
                "Sorry, we could not tell which answer you meant. Please reply with just one of {}.",
                digits.join(", ")
            );
            review("ambiguous", Some(survey), Some(ask)).await
        }
        ReplyMatch::Unrecognised => review("unrecognised", Some(survey), None).await,
    }
}

/// Delivery status of a survey text (`StatusCallback` of Create Message). Deduplicated
/// and order-independent: the stored status only moves up in rank, so a late `sent`
/// never overwrites `delivered`, and a repeat changes nothing.
async fn status(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    Extension(p): Extension<Params>,
) -> Response {
    let (Some(sid), Some(status)) = (
        p.non_empty("MessageSid").or(p.non_empty("SmsSid")),
        p.non_empty("MessageStatus").or(p.non_empty("SmsStatus")),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            "missing MessageSid or MessageStatus",
        )
            .into_response();
    };
    let outbox_id = query.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "o")
            .and_then(|(_, v)| v.parse::<i64>().ok())
    });
    let error_code = p.non_empty("ErrorCode").and_then(|c| c.parse::<i64>().ok());
    let now = state.clock.now().as_millisecond();
    let status = status.to_ascii_lowercase();
    let result = async {
        let changed = state
            .store
            .apply_text_status(outbox_id, sid, &status, error_code, now)
            .await?;
        // Carrier verdicts that the number cannot take texts at all.
        if changed
            && matches!(error_code, Some(30005 | 30006))
            && let Some(phone) = state.store.text_phone(sid).await?
        {
            state
                .store
                .mark_bad_number(
                    &phone,
                    error_code,
                    "carrier: unknown handset or landline",
                    now,
                )
                .await?;
        }
        Ok::<_, crate::store::StoreError>(changed)
    }
    .await;
    match result {
        Ok(changed) => {
            tracing::debug!(message_sid = sid, status = %status, changed, "text status");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "sms status callback failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response()
        }
    }
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
