//! The volunteer loop, one webhook per step, and the member who calls the number back.
//!
//! The loop: PIN -> campaign -> [claim -> announce -> key to dial -> `<Dial>` -> outcome
//! keys] -> next member. Each step's URL carries the attempt id and, for answers, how
//! many answers were keyed when the prompt was made; the store fences every change on
//! the state it expects, so a redelivered or stale webhook re-renders the current prompt
//! instead of applying twice. Every step answers valid TwiML, even for an unknown or
//! finished call. A member's number appears only inside `<Number>`.

use axum::Router;
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use super::{Params, TwimlResponse};
use crate::domain::{CampaignStatus, Disposition, PhoneNumber, Pin, Question, Script, now_millis};
use crate::http::AppState;
use crate::store::StoreError;
use crate::store::calls::{
    Attempt, AttemptState, ClaimOutcome, ClaimRequest, DialDecision, Finish, RateClock,
    dial_disposition, is_final_status,
};
use crate::store::campaigns::Campaign;
use crate::store::sessions::{Session, SessionState};
use crate::telephony::{Dial, Gather, Twiml};

/// Wrong PINs allowed on one call before hanging up.
const PIN_TRIES_PER_CALL: i64 = 3;
/// Wrong PINs allowed from one number in [`PIN_WINDOW_MILLIS`], across calls.
const PIN_TRIES_PER_NUMBER: i64 = 10;
const PIN_WINDOW_MILLIS: i64 = 15 * 60 * 1000;
/// An idle lease is taken back after this long (the sweeper does it).
const LEASE_MILLIS: i64 = 15 * 60 * 1000;
/// Seconds the member's phone rings.
const RING_SECONDS: u32 = 25;
/// Longest member call.
const CALL_LIMIT_SECONDS: u32 = 3600;
/// A bridged call shorter than this was dropped or hit voicemail: outcomes come first.
const SHORT_CALL_SECONDS: i64 = 8;
/// Prompts repeated on silence before the session ends.
const MAX_SILENT_PROMPTS: u32 = 3;
/// The keys that have a fixed meaning on the outcome menu.
const OPT_OUT_KEY: char = '0';
const BACK_KEY: char = '9';

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks/voice", post(incoming))
        .route("/webhooks/voice/pin", post(pin))
        .route("/webhooks/voice/campaign", post(choose_campaign))
        .route("/webhooks/voice/next", post(next))
        .route("/webhooks/voice/ready", post(ready))
        .route("/webhooks/voice/dialed", post(dialed))
        .route("/webhooks/voice/question", post(question))
        .route("/webhooks/voice/answer", post(answer))
        .route("/webhooks/voice/outcome", post(outcome))
        .route("/webhooks/voice/disposition", post(disposition))
        .route("/webhooks/voice/status", post(status))
        .route("/webhooks/voice/member-status", post(member_status))
        .route("/webhooks/voice/member-optout", post(member_optout))
}

/// Query parameters the server put into its own URLs. Parsed leniently: garbage is
/// treated as absent, and the step answers with a prompt rather than an error.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Step {
    #[serde(default, deserialize_with = "lenient")]
    a: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    n: Option<usize>,
    #[serde(default, deserialize_with = "lenient")]
    r: Option<u32>,
    #[serde(default, deserialize_with = "lenient")]
    cb: Option<i64>,
}

fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
{
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.and_then(|s| s.parse().ok()))
}

type StepQuery = Query<Step>;

/// Errors inside a step: logged, and the caller hears an apology instead of the
/// provider's "application error".
struct Fail(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Fail {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "voice webhook failed");
        TwimlResponse(
            Twiml::new()
                .say("Sorry, something went wrong on our side. Please call again in a moment.")
                .hangup(),
        )
        .into_response()
    }
}

type StepResult = Result<TwimlResponse, Fail>;

fn reply(t: Twiml) -> StepResult {
    Ok(TwimlResponse(t))
}

fn goodbye(text: &str) -> StepResult {
    reply(Twiml::new().say(text).hangup())
}

impl AppState {
    /// An absolute URL on our public base, for TwiML and REST calls.
    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!(
            "{}{}",
            self.settings.public_base().trim_end_matches('/'),
            path_and_query
        )
    }
}

/// A call reference is the attempt id, read out digit by digit.
fn spoken_reference(attempt_id: i64) -> String {
    attempt_id
        .to_string()
        .chars()
        .map(String::from)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------
// Entry: a volunteer calling in (or answering a call-back), or a member calling back.

async fn incoming(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
    Query(q): StepQuery,
) -> Response {
    let Some(call_sid) = p.non_empty("CallSid") else {
        return (axum::http::StatusCode::BAD_REQUEST, "missing CallSid").into_response();
    };
    match incoming_inner(&state, &p, call_sid, q.cb).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn incoming_inner(
    state: &AppState,
    p: &Params,
    call_sid: &str,
    cb: Option<i64>,
) -> StepResult {
    let now = now_millis();
    let store = &state.store;
    // A call we placed to a volunteer: the request id is in our own URL.
    if let Some(cb) = cb {
        let Ok(request) = store.callback(cb).await else {
            return goodbye("Sorry, this call is not recognised. Goodbye.");
        };
        let volunteer = store.get_volunteer(request.volunteer_id).await?;
        let session = store
            .open_session(
                call_sid,
                volunteer.phone.as_e164(),
                volunteer.id,
                Some(cb),
                now,
            )
            .await?;
        return pin_prompt(state, &session, "Hello from phonebank. ");
    }
    let region = state.settings.default_region;
    let from = p
        .non_empty("From")
        .and_then(|f| PhoneNumber::parse(f, region).ok());
    if let Some(from) = &from
        && let Some((volunteer, _)) = store.volunteer_by_phone(from).await?
    {
        if !volunteer.active {
            return goodbye(
                "Your volunteer account is not active. Please contact your organiser. Goodbye.",
            );
        }
        let session = store
            .open_session(call_sid, from.as_e164(), volunteer.id, None, now)
            .await?;
        return pin_prompt(state, &session, "Welcome to phonebank. ");
    }
    member_calls_back(state, p).await
}

fn pin_prompt(state: &AppState, session: &Session, greeting: &str) -> StepResult {
    if session.state != SessionState::Pin {
        // A redelivered first webhook after the PIN was accepted.
        return reply(Twiml::new().redirect(state.url("/webhooks/voice/next")));
    }
    reply(
        Twiml::new()
            .gather(
                Gather {
                    num_digits: None,
                    ..Gather::keys(state.url("/webhooks/voice/pin"), 8)
                }
                .timeout(10)
                .say(format!("{greeting}Please enter your PIN, then press hash.")),
            )
            // No key at all: counted as a wrong try, so silence cannot loop forever.
            .redirect(state.url("/webhooks/voice/pin")),
    )
}

/// Someone who is not a registered volunteer rang the campaign number: most likely a
/// member returning a missed call. Never routed to a volunteer.
async fn member_calls_back(state: &AppState, p: &Params) -> StepResult {
    let to = p.non_empty("To").unwrap_or_default();
    let campaigns = state.store.list_campaigns().await?;
    let campaign = campaigns
        .iter()
        .filter(|c| c.caller_number.as_e164() == to && c.status != CampaignStatus::Draft)
        .max_by_key(|c| c.id);
    let intro = match campaign {
        Some(c) => match c.status {
            CampaignStatus::Active => format!(
                "Thank you for calling back. This is {}. One of our volunteers tried to reach you \
                 and may call again.",
                c.name
            ),
            CampaignStatus::Paused => format!(
                "Thank you for calling back. This is {}. Our calls are paused at the moment.",
                c.name
            ),
            _ => format!(
                "Thank you for calling back. This is {}. That campaign has now finished.",
                c.name
            ),
        },
        None => "Thank you for calling. This number is used for campaign phone calls.".into(),
    };
    reply(
        Twiml::new()
            .gather(
                Gather::keys(state.url("/webhooks/voice/member-optout"), 1)
                    .timeout(6)
                    .say(intro)
                    .say("If you would rather we never called or texted you again, press 1 now. Otherwise you can hang up."),
            )
            .say("Thank you. Goodbye.")
            .hangup(),
    )
}

async fn member_optout(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
) -> StepResult {
    if p.get("Digits") != Some("1") {
        return goodbye("Thank you. Goodbye.");
    }
    let from = p
        .non_empty("From")
        .and_then(|f| PhoneNumber::parse(f, state.settings.default_region).ok());
    let Some(from) = from else {
        return goodbye(
            "Sorry, we cannot see your number, so we cannot record that. Please text STOP instead. Goodbye.",
        );
    };
    state
        .store
        .suppress(
            &from,
            "pressed the opt-out key when calling back",
            "keypad",
            "member",
        )
        .await?;
    tracing::info!(number = %from, "opt-out keyed by a caller");
    goodbye("Done. We will not contact this number again. Goodbye.")
}

// ---------------------------------------------------------------------------------
// PIN and campaign choice.

/// The session behind this webhook, or a polite hang-up for an unknown call.
async fn session_of(state: &AppState, p: &Params) -> Result<Option<Session>, Fail> {
    let Some(sid) = p.non_empty("CallSid") else {
        return Ok(None);
    };
    Ok(state.store.session_by_call_sid(sid).await?)
}

const UNKNOWN_CALL: &str = "Sorry, this call is not recognised. Please call again. Goodbye.";

async fn pin(State(state): State<AppState>, Extension(p): Extension<Params>) -> StepResult {
    let Some(session) = session_of(&state, &p).await? else {
        return goodbye(UNKNOWN_CALL);
    };
    match session.state {
        SessionState::Pin => {}
        SessionState::Ended => return goodbye("This call has ended. Goodbye."),
        // Already past the PIN (a redelivered request).
        _ => return reply(Twiml::new().redirect(state.url("/webhooks/voice/next"))),
    }
    let store = &state.store;
    let now = now_millis();
    let Some(volunteer_id) = session.volunteer_id else {
        return goodbye(UNKNOWN_CALL);
    };
    let from = store.get_volunteer(volunteer_id).await?.phone;
    // In-process flood guard first (crate::limits): a refused try costs no argon2 hash
    // and is not counted in the database. Hanging up is the polite answer: an error
    // status would make the provider retry, with the volunteer still on the line.
    if state.limits.check_pin(from.as_e164()).is_err() {
        tracing::info!(
            session_id = session.id,
            "PIN attempt refused: too many from this number"
        );
        store
            .advance_session(session.id, SessionState::Ended, None, now)
            .await?;
        return goodbye(
            "Too many PIN attempts from this phone. Please wait a few minutes and call again. Goodbye.",
        );
    }
    if store
        .pin_failures_since(from.as_e164(), now - PIN_WINDOW_MILLIS)
        .await?
        >= PIN_TRIES_PER_NUMBER
    {
        store
            .advance_session(session.id, SessionState::Ended, None, now)
            .await?;
        return goodbye("Too many wrong PINs from this phone. Please try again later. Goodbye.");
    }
    let digits = p.get("Digits").unwrap_or_default().to_owned();
    let hash = store.volunteer_pin_hash(volunteer_id).await?;
    // Argon2 is deliberately slow: keep it off the async workers.
    let ok = crate::domain::credentials::on_pin_thread(move || {
        Pin::parse(digits.trim()).is_some_and(|pin| pin.verify(&hash))
    })
    .await
    .unwrap_or(false);
    if !ok {
        let failures = store.record_pin_failure(session.id, now).await?;
        metrics::counter!("phonebank_pin_failures_total").increment(1);
        if failures >= PIN_TRIES_PER_CALL {
            store
                .advance_session(session.id, SessionState::Ended, None, now)
                .await?;
            return goodbye("Sorry, that PIN is not right. Goodbye.");
        }
        return pin_prompt(&state, &session, "Sorry, that PIN is not right. ");
    }
    store
        .advance_session(session.id, SessionState::Choosing, None, now)
        .await?;
    let volunteer = store.get_volunteer(volunteer_id).await?;
    offer_campaigns(
        &state,
        &session,
        &p,
        &format!("Thanks, {}. ", volunteer.name),
    )
    .await
}

/// Active campaigns in a stable order: the menu digit is the position.
async fn active_campaigns(state: &AppState) -> Result<Vec<Campaign>, Fail> {
    Ok(state
        .store
        .list_campaigns()
        .await?
        .into_iter()
        .filter(|c| c.status == CampaignStatus::Active)
        .take(8)
        .collect())
}

async fn offer_campaigns(
    state: &AppState,
    session: &Session,
    p: &Params,
    lead: &str,
) -> StepResult {
    let active = active_campaigns(state).await?;
    // The number they dialled names the campaign when it is one of ours.
    let dialled = p.non_empty("To").unwrap_or_default();
    let by_number: Vec<&Campaign> = active
        .iter()
        .filter(|c| c.caller_number.as_e164() == dialled)
        .collect();
    // A call-back was asked for one campaign: that one, while it runs.
    let requested = match session.callback_id {
        Some(cb) => state.store.callback(cb).await?.campaign_id,
        None => None,
    };
    let preferred =
        active
            .iter()
            .find(|c| Some(c.id) == requested)
            .or(match by_number.as_slice() {
                [one] => Some(*one),
                _ => None,
            });
    let chosen = match (active.len(), preferred) {
        (0, _) => {
            state
                .store
                .advance_session(session.id, SessionState::Ended, None, now_millis())
                .await?;
            return goodbye(&format!(
                "{lead}There is no active campaign right now. Thank you. Goodbye."
            ));
        }
        (1, _) => &active[0],
        (_, Some(one)) => one,
        _ => {
            let mut menu = format!("{lead}Choose a campaign.");
            for (i, c) in active.iter().enumerate() {
                menu.push_str(&format!(" For {}, press {}.", c.name, i + 1));
            }
            return reply(
                Twiml::new()
                    .gather(Gather::keys(state.url("/webhooks/voice/campaign"), 1).say(menu))
                    .redirect(state.url("/webhooks/voice/campaign")),
            );
        }
    };
    state
        .store
        .advance_session(
            session.id,
            SessionState::Active,
            Some(chosen.id),
            now_millis(),
        )
        .await?;
    reply(
        Twiml::new()
            .say(format!("{lead}You are calling for {}.", chosen.name))
            .redirect(state.url("/webhooks/voice/next")),
    )
}

async fn choose_campaign(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
) -> StepResult {
    let Some(session) = session_of(&state, &p).await? else {
        return goodbye(UNKNOWN_CALL);
    };
    match session.state {
        SessionState::Choosing => {}
        SessionState::Active => {
            return reply(Twiml::new().redirect(state.url("/webhooks/voice/next")));
        }
        _ => return goodbye(UNKNOWN_CALL),
    }
    let active = active_campaigns(&state).await?;
    let pick = p
        .get("Digits")
        .and_then(|d| d.trim().parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| active.get(i));
    let Some(campaign) = pick else {
        return offer_campaigns(&state, &session, &p, "Sorry, that is not on the menu. ").await;
    };
    state
        .store
        .advance_session(
            session.id,
            SessionState::Active,
            Some(campaign.id),
            now_millis(),
        )
        .await?;
    reply(
        Twiml::new()
            .say(format!("You are calling for {}.", campaign.name))
            .redirect(state.url("/webhooks/voice/next")),
    )
}

// ---------------------------------------------------------------------------------
// The loop.

/// The session and its campaign for a loop step; `Err` holds the TwiML to answer with
/// when the call is unknown, ended, or its campaign has stopped.
async fn loop_context(
    state: &AppState,
    p: &Params,
) -> Result<Result<(Session, Campaign), TwimlResponse>, Fail> {
    let Some(session) = session_of(state, p).await? else {
        return Ok(Err(TwimlResponse(Twiml::new().say(UNKNOWN_CALL).hangup())));
    };
    let Some(campaign_id) = session
        .campaign_id
        .filter(|_| session.state == SessionState::Active)
    else {
        return Ok(Err(TwimlResponse(match session.state {
            SessionState::Pin => Twiml::new().redirect(state.url("/webhooks/voice/pin")),
            SessionState::Choosing => Twiml::new().redirect(state.url("/webhooks/voice/campaign")),
            _ => Twiml::new().say("This call has ended. Goodbye.").hangup(),
        })));
    };
    let campaign = state.store.get_campaign(campaign_id).await?;
    Ok(Ok((session, campaign)))
}

/// The attempt named in the URL, if it belongs to this call's session.
async fn attempt_of(
    state: &AppState,
    session: &Session,
    a: Option<i64>,
) -> Result<Option<Attempt>, Fail> {
    let Some(a) = a else { return Ok(None) };
    match state.store.attempt(a).await {
        Ok(at) if at.session_id == Some(session.id) => Ok(Some(at)),
        Ok(_) | Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A key press delivered after the hang-up that ended its call was handled (the
/// provider sends both at once and they can arrive in either order): the ended session
/// and its finished attempt, so the key can still be honoured.
async fn late_key_context(
    state: &AppState,
    p: &Params,
    a: Option<i64>,
) -> Result<Option<(Campaign, Attempt)>, Fail> {
    let Some(session) = session_of(state, p).await? else {
        return Ok(None);
    };
    if session.state != SessionState::Ended {
        return Ok(None);
    }
    let Some(attempt) = attempt_of(state, &session, a).await? else {
        return Ok(None);
    };
    if attempt.state != AttemptState::Completed {
        return Ok(None);
    }
    let campaign = state.store.get_campaign(attempt.campaign_id).await?;
    Ok(Some((campaign, attempt)))
}

fn to_next(state: &AppState) -> Twiml {
    Twiml::new().redirect(state.url("/webhooks/voice/next"))
}

async fn next(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
    Query(q): StepQuery,
) -> StepResult {
    let (session, campaign) = match loop_context(&state, &p).await? {
        Ok(ctx) => ctx,
        Err(t) => return Ok(t),
    };
    let now = state.clock.now();
    if campaign.status != CampaignStatus::Active {
        end_session(&state, &session).await?;
        return goodbye(&format!(
            "{} is not taking calls right now. Thank you for your time. Goodbye.",
            campaign.name
        ));
    }
    let Some(volunteer_id) = session.volunteer_id else {
        return goodbye(UNKNOWN_CALL);
    };
    let claim = state
        .store
        .claim(&ClaimRequest {
            campaign_id: campaign.id,
            volunteer_id,
            session_id: session.id,
            hours: &campaign.calling_hours,
            now,
            lease_millis: LEASE_MILLIS,
            rate_clock: if state.clock.is_system() {
                RateClock::Database
            } else {
                RateClock::Request
            },
        })
        .await?;
    let attempt = match claim {
        ClaimOutcome::OutsideHours => {
            end_session(&state, &session).await?;
            return goodbye(
                "It is outside calling hours for everyone on the list right now. Thank you for your time. Goodbye.",
            );
        }
        ClaimOutcome::Empty => {
            return reply(
                Twiml::new()
                    .gather(
                        Gather::keys(state.url("/webhooks/voice/next"), 1)
                            .timeout(15)
                            .say("There is nobody to call right now. Press 1 to check again, or hang up."),
                    )
                    .say("Thank you for your time. Goodbye.")
                    .hangup(),
            );
        }
        ClaimOutcome::Claimed(a) => *a,
    };
    metrics::counter!("phonebank_claims_total").increment(1);
    match attempt.state {
        AttemptState::Leased => {}
        // The volunteer already has someone in progress on this or another call.
        AttemptState::Dialling | AttemptState::Answered
            if attempt.session_id == Some(session.id) =>
        {
            return reply(
                Twiml::new()
                    .redirect(state.url(&format!("/webhooks/voice/question?a={}", attempt.id))),
            );
        }
        AttemptState::Dialling | AttemptState::Answered => {
            // Held by an earlier call of this volunteer whose hang-up never reached us
            // (or has not yet): one person is on one call, so that call is over. Settle
            // it as a hang-up (answers kept, a live member leg reconciled) and go on.
            let Some(old) = attempt.session_id else {
                return goodbye("You already have a call in progress on another line. Goodbye.");
            };
            {
                let policy = campaign.retry_policy.clone();
                let now_ms = now.as_millisecond();
                state
                    .store
                    .settle_volunteer_hangup(old, |_| Some(policy.clone()), now_ms)
                    .await?;
                state
                    .store
                    .advance_session(old, SessionState::Ended, None, now_ms)
                    .await?;
            }
            return reply(to_next(&state));
        }
        _ => {
            return goodbye("You already have a call in progress on another line. Goodbye.");
        }
    }
    if attempt.session_id != Some(session.id) {
        // Held from an earlier call that ended without telling us: hand it over.
        state
            .store
            .release_attempt(attempt.id, now.as_millisecond())
            .await?;
        return reply(to_next(&state));
    }
    // The announcement again: silence (no key) is counted, so a call left open (a
    // voicemail that answered a call-back) ends; each repeat renews the lease.
    let silent = q.r.unwrap_or(0);
    if silent >= MAX_SILENT_PROMPTS {
        state
            .store
            .release_attempt(attempt.id, now.as_millisecond())
            .await?;
        end_session(&state, &session).await?;
        return goodbye(
            "We have not heard a key for a while, so we are ending this call. Goodbye.",
        );
    }
    // A repeat renews the lease. The first time, the claim has just set it (or this is
    // a duplicate of that request, seconds later): one write fewer per member called.
    if q.r.is_some() {
        state
            .store
            .touch_attempt(attempt.id, now.as_millisecond() + LEASE_MILLIS)
            .await?;
    }
    announce(&state, &campaign, &attempt, silent)
}

fn announce(state: &AppState, campaign: &Campaign, attempt: &Attempt, silent: u32) -> StepResult {
    let first = campaign
        .script
        .questions
        .first()
        .map(|q| format!(" Your first question: {}", q.text))
        .unwrap_or_default();
    reply(
        Twiml::new()
            .gather(
                Gather::keys(
                    state.url(&format!("/webhooks/voice/ready?a={}", attempt.id)),
                    1,
                )
                .timeout(15)
                .say(format!(
                    "Call reference {}. Next: {} from {}.{first}",
                    spoken_reference(attempt.id),
                    attempt.member_name,
                    attempt.seat_name
                ))
                .say("Press 1 to call them now, or 0 to end your session."),
            )
            .redirect(state.url(&format!("/webhooks/voice/next?r={}", silent + 1))),
    )
}

async fn ready(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
    Query(q): StepQuery,
) -> StepResult {
    let (session, campaign) = match loop_context(&state, &p).await? {
        Ok(ctx) => ctx,
        Err(t) => return Ok(t),
    };
    let Some(attempt) = attempt_of(&state, &session, q.a).await? else {
        return reply(to_next(&state));
    };
    let now = state.clock.now();
    match p.get("Digits").map(str::trim) {
        Some("1") => {}
        Some("0") => {
            state
                .store
                .release_attempt(attempt.id, now.as_millisecond())
                .await?;
            end_session(&state, &session).await?;
            return goodbye("Thank you for calling. Goodbye.");
        }
        // Another key: the announcement again, renewing the lease (`r` is set).
        _ => {
            return reply(Twiml::new().redirect(state.url("/webhooks/voice/next?r=0")));
        }
    }
    if campaign.status != CampaignStatus::Active {
        // Paused or finished since the announcement: nothing is dialled.
        state
            .store
            .release_attempt(attempt.id, now.as_millisecond())
            .await?;
        end_session(&state, &session).await?;
        return goodbye(&format!(
            "{} is not taking calls right now. Thank you for your time. Goodbye.",
            campaign.name
        ));
    }
    let decision = state
        .store
        .start_dial(
            attempt.id,
            &campaign.calling_hours,
            now,
            i64::from(CALL_LIMIT_SECONDS) * 1000 + LEASE_MILLIS,
        )
        .await?;
    match decision {
        DialDecision::Dial(number) => {
            metrics::counter!("phonebank_dials_total").increment(1);
            reply(
                Twiml::new()
                    .say("Connecting. Press star to end the call.")
                    .dial(Dial {
                        number: number.as_e164().to_owned(),
                        caller_id: campaign.caller_number.as_e164().to_owned(),
                        action: state.url(&format!("/webhooks/voice/dialed?a={}", attempt.id)),
                        timeout: RING_SECONDS,
                        time_limit: CALL_LIMIT_SECONDS,
                        hangup_on_star: true,
                        status_callback: state
                            .url(&format!("/webhooks/voice/member-status?a={}", attempt.id)),
                    }),
            )
        }
        // Dialling already began for this attempt (a repeated request): never dial
        // twice. If the first dial never happened, the volunteer records it.
        DialDecision::AlreadyStarted => {
            state
                .store
                .record_dial_result(attempt.id, "unknown", None, None)
                .await?;
            reply(
                Twiml::new()
                    .redirect(state.url(&format!("/webhooks/voice/question?a={}", attempt.id))),
            )
        }
        DialDecision::OptedOut => reply(
            Twiml::new()
                .say("That member has asked not to be contacted, so we will skip them.")
                .redirect(state.url("/webhooks/voice/next")),
        ),
        DialDecision::NumberBusy => reply(
            Twiml::new()
                .say("That member's line is on another call right now, so we will try them later.")
                .redirect(state.url("/webhooks/voice/next")),
        ),
        DialDecision::OutsideHours => reply(
            Twiml::new()
                .say("It is now outside calling hours for that member, so we will skip them.")
                .redirect(state.url("/webhooks/voice/next")),
        ),
    }
}

async fn dialed(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
    Query(q): StepQuery,
) -> StepResult {
    let Some(session) = session_of(&state, &p).await? else {
        return goodbye(UNKNOWN_CALL);
    };
    let Some(attempt) = attempt_of(&state, &session, q.a).await? else {
        return reply(to_next(&state));
    };
    let dial_status = p.non_empty("DialCallStatus").unwrap_or("failed").to_owned();
    let seconds = p
        .get("DialCallDuration")
        .and_then(|s| s.trim().parse::<i64>().ok());
    let fresh = state
        .store
        .record_dial_result(
            attempt.id,
            &dial_status,
            p.non_empty("DialCallSid"),
            seconds,
        )
        .await?;
    // The volunteer hung up: the provider still calls the action, but nobody listens.
    if p.get("CallStatus") == Some("completed") {
        settle_hangup(&state, &session).await?;
        return reply(Twiml::new());
    }
    if !fresh {
        return reply(
            Twiml::new().redirect(state.url(&format!("/webhooks/voice/question?a={}", attempt.id))),
        );
    }
    let campaign = state.store.get_campaign(attempt.campaign_id).await?;
    match dial_status.as_str() {
        "completed" | "answered" => {
            let path = if seconds.unwrap_or(0) < SHORT_CALL_SECONDS {
                // Dropped or voicemail: what happened comes before any survey question.
                format!("/webhooks/voice/outcome?a={}", attempt.id)
            } else {
                format!("/webhooks/voice/question?a={}", attempt.id)
            };
            reply(Twiml::new().redirect(state.url(&path)))
        }
        other => {
            let d = dial_disposition(Some(other)).unwrap_or(Disposition::TechnicalProblem);
            state
                .store
                .finish_attempt(
                    attempt.id,
                    Finish {
                        disposition: Some(d),
                        opt_out: false,
                    },
                    &campaign.retry_policy,
                    state.clock.now().as_millisecond(),
                )
                .await?;
            let said = match d {
                Disposition::NoAnswer => "No answer.",
                Disposition::Busy => "The line was busy.",
                _ => "The call did not go through.",
            };
            reply(
                Twiml::new()
                    .say(format!("{said} We will try them again later. Moving on."))
                    .redirect(state.url("/webhooks/voice/next")),
            )
        }
    }
}

/// Where the keyed answers have got to: the question to ask next, or `None` when an
/// answer ended the script.
fn current_question<'s>(script: &'s Script, keyed: &[(String, String)]) -> Option<&'s Question> {
    let mut q = script.questions.first()?;
    for (qc, oc) in keyed {
        if qc != &q.code {
            break;
        }
        let opt = q.options.iter().find(|o| &o.code == oc)?;
        q = script.question(opt.next.as_deref()?)?;
    }
    Some(q)
}

/// The state an outcome step needs: the attempt must be waiting for keys.
async fn keying_context(
    state: &AppState,
    p: &Params,
    a: Option<i64>,
) -> Result<Result<(Session, Campaign, Attempt), TwimlResponse>, Fail> {
    let (session, campaign) = match loop_context(state, p).await? {
        Ok(ctx) => ctx,
        Err(t) => return Ok(Err(t)),
    };
    let Some(attempt) = attempt_of(state, &session, a).await? else {
        return Ok(Err(TwimlResponse(to_next(state))));
    };
    if attempt.state != AttemptState::Answered {
        return Ok(Err(TwimlResponse(to_next(state))));
    }
    state
        .store
        .touch_attempt(
            attempt.id,
            state.clock.now().as_millisecond() + LEASE_MILLIS,
        )
        .await?;
    Ok(Ok((session, campaign, attempt)))
}

async fn question(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
    Query(q): StepQuery,
) -> StepResult {
    let (session, campaign, attempt) = match keying_context(&state, &p, q.a).await? {
        Ok(ctx) => ctx,
        Err(t) => return Ok(t),
    };
    let retries = q.r.unwrap_or(0);
    if retries >= MAX_SILENT_PROMPTS {
        settle_hangup(&state, &session).await?;
        return goodbye(
            "We have not heard a key for a while, so we are ending this call. Answers you keyed are saved. Goodbye.",
        );
    }
    let Some(question) = current_question(&campaign.script, &attempt.keyed) else {
        return finish(
            &state,
            &campaign,
            &attempt,
            Finish {
                disposition: None,
                opt_out: false,
            },
            "Saved.",
        )
        .await;
    };
    let mut menu = question.text.clone();
    for o in &question.options {
        menu.push_str(&format!(" For {}, press {}.", o.label, o.digit));
    }
    if !attempt.keyed.is_empty() {
        menu.push_str(" To change your last answer, press 9.");
    }
    menu.push_str(" For other outcomes, press 0.");
    reply(
        Twiml::new()
            .gather(
                Gather::keys(
                    state.url(&format!(
                        "/webhooks/voice/answer?a={}&n={}",
                        attempt.id,
                        attempt.keyed.len()
                    )),
                    1,
                )
                .timeout(10)
                .say(menu),
            )
            .say("We did not get a key.")
            .redirect(state.url(&format!(
                "/webhooks/voice/question?a={}&r={}",
                attempt.id,
                retries + 1
            ))),
    )
}

async fn answer(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
    Query(q): StepQuery,
) -> StepResult {
    if let Some((campaign, attempt)) = late_key_context(&state, &p, q.a).await? {
        // Nobody is listening any more; the answer is still the member's.
        let digits = p.get("Digits").unwrap_or_default().trim();
        if let (Some(n), Some(question)) = (q.n, current_question(&campaign.script, &attempt.keyed))
            && let Some(option) = question
                .options
                .iter()
                .find(|o| o.digit.to_string() == digits)
        {
            state
                .store
                .late_answer(
                    attempt.id,
                    n,
                    &question.code,
                    &option.code,
                    state.clock.now().as_millisecond(),
                )
                .await?;
        }
        return reply(Twiml::new());
    }
    let (_session, campaign, attempt) = match keying_context(&state, &p, q.a).await? {
        Ok(ctx) => ctx,
        Err(t) => return Ok(t),
    };
    let again = |lead: &str| {
        reply(
            Twiml::new()
                .say(lead)
                .redirect(state.url(&format!("/webhooks/voice/question?a={}", attempt.id))),
        )
    };
    // A prompt made for a different number of answers: a duplicate or stale request.
    if q.n != Some(attempt.keyed.len()) {
        return reply(
            Twiml::new().redirect(state.url(&format!("/webhooks/voice/question?a={}", attempt.id))),
        );
    }
    let digits = p.get("Digits").unwrap_or_default().trim();
    let mut chars = digits.chars();
    let (Some(key), None) = (chars.next(), chars.next()) else {
        return again("Please press a single key.");
    };
    if key == crate::domain::campaign::UNDO_KEY && !attempt.keyed.is_empty() {
        let mut keyed = attempt.keyed.clone();
        keyed.pop();
        state
            .store
            .set_keyed(attempt.id, &attempt.keyed, &keyed)
            .await?;
        return again("Last answer removed.");
    }
    if key == crate::domain::campaign::OTHER_OUTCOMES_KEY {
        return reply(
            Twiml::new().redirect(state.url(&format!("/webhooks/voice/outcome?a={}", attempt.id))),
        );
    }
    let Some(question) = current_question(&campaign.script, &attempt.keyed) else {
        return again("");
    };
    let Some(option) = question.options.iter().find(|o| o.digit == key) else {
        return again(&format!("Sorry, {key} is not an option."));
    };
    let mut keyed = attempt.keyed.clone();
    keyed.push((question.code.clone(), option.code.clone()));
    if !state
        .store
        .set_keyed(attempt.id, &attempt.keyed, &keyed)
        .await?
    {
        return again("");
    }
    let ends = option
        .next
        .as_deref()
        .is_none_or(|n| campaign.script.question(n).is_none());
    if ends {
        let attempt = Attempt { keyed, ..attempt };
        return finish(
            &state,
            &campaign,
            &attempt,
            Finish {
                disposition: None,
                opt_out: false,
            },
            &format!("{}. Saved, thank you.", option.label),
        )
        .await;
    }
    again(&format!("{}.", option.label))
}

fn outcome_menu() -> String {
    let mut menu = String::from("Other outcomes.");
    for (i, d) in Disposition::ALL.iter().enumerate() {
        menu.push_str(&format!(" For {}, press {}.", d.spoken(), i + 1));
    }
    menu.push_str(&format!(
        " If they asked never to be contacted again, press {OPT_OUT_KEY}. To go back to the questions, press {BACK_KEY}."
    ));
    menu
}

async fn outcome(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
    Query(q): StepQuery,
) -> StepResult {
    let (session, _campaign, attempt) = match keying_context(&state, &p, q.a).await? {
        Ok(ctx) => ctx,
        Err(t) => return Ok(t),
    };
    let retries = q.r.unwrap_or(0);
    if retries >= MAX_SILENT_PROMPTS {
        settle_hangup(&state, &session).await?;
        return goodbye(
            "We have not heard a key for a while, so we are ending this call. Goodbye.",
        );
    }
    reply(
        Twiml::new()
            .gather(
                Gather::keys(
                    state.url(&format!("/webhooks/voice/disposition?a={}", attempt.id)),
                    1,
                )
                .timeout(10)
                .say(outcome_menu()),
            )
            .say("We did not get a key.")
            .redirect(state.url(&format!(
                "/webhooks/voice/outcome?a={}&r={}",
                attempt.id,
                retries + 1
            ))),
    )
}

async fn disposition(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
    Query(q): StepQuery,
) -> StepResult {
    if let Some((_, attempt)) = late_key_context(&state, &p, q.a).await? {
        // An opt-out is absolute, whenever it arrives; other late outcomes changed
        // nothing the hang-up did not already settle.
        if p.get("Digits").map(str::trim) == Some(&OPT_OUT_KEY.to_string()) {
            state
                .store
                .late_opt_out(attempt.id, state.clock.now().as_millisecond())
                .await?;
        }
        return reply(Twiml::new());
    }
    let (_session, campaign, attempt) = match keying_context(&state, &p, q.a).await? {
        Ok(ctx) => ctx,
        Err(t) => return Ok(t),
    };
    let digits = p.get("Digits").unwrap_or_default().trim();
    let key = if digits.chars().count() == 1 {
        digits.chars().next()
    } else {
        None
    };
    match key {
        Some(OPT_OUT_KEY) => {
            finish(
                &state,
                &campaign,
                &attempt,
                Finish {
                    disposition: Some(Disposition::Refused),
                    opt_out: true,
                },
                "Done. They will not be contacted again.",
            )
            .await
        }
        Some(BACK_KEY) => reply(
            Twiml::new().redirect(state.url(&format!("/webhooks/voice/question?a={}", attempt.id))),
        ),
        Some(k) => {
            let d = k
                .to_digit(10)
                .and_then(|n| (n as usize).checked_sub(1))
                .and_then(|i| Disposition::ALL.get(i).copied());
            match d {
                Some(d) => {
                    finish(
                        &state,
                        &campaign,
                        &attempt,
                        Finish {
                            disposition: Some(d),
                            opt_out: false,
                        },
                        &format!("Saved: {}.", d.spoken()),
                    )
                    .await
                }
                None => reply(
                    Twiml::new()
                        .say(format!("Sorry, {k} is not an option."))
                        .redirect(state.url(&format!("/webhooks/voice/outcome?a={}", attempt.id))),
                ),
            }
        }
        None => reply(
            Twiml::new()
                .say("Please press a single key.")
                .redirect(state.url(&format!("/webhooks/voice/outcome?a={}", attempt.id))),
        ),
    }
}

async fn finish(
    state: &AppState,
    campaign: &Campaign,
    attempt: &Attempt,
    how: Finish,
    said: &str,
) -> StepResult {
    state
        .store
        .finish_attempt(
            attempt.id,
            how,
            &campaign.retry_policy,
            state.clock.now().as_millisecond(),
        )
        .await?;
    metrics::counter!("phonebank_outcomes_total").increment(1);
    reply(
        Twiml::new()
            .say(format!(
                "{said} Call reference {}.",
                spoken_reference(attempt.id)
            ))
            .redirect(state.url("/webhooks/voice/next")),
    )
}

// ---------------------------------------------------------------------------------
// Ending, and status callbacks.

async fn end_session(state: &AppState, session: &Session) -> Result<(), Fail> {
    settle_hangup(state, session).await
}

/// Settle what the session holds and close it. Safe to repeat.
async fn settle_hangup(state: &AppState, session: &Session) -> Result<(), Fail> {
    let now = state.clock.now().as_millisecond();
    let policy = match session.campaign_id {
        Some(id) => Some(state.store.get_campaign(id).await?.retry_policy),
        None => None,
    };
    state
        .store
        .settle_volunteer_hangup(session.id, |_| policy.clone(), now)
        .await?;
    state
        .store
        .advance_session(session.id, SessionState::Ended, None, now)
        .await?;
    Ok(())
}

/// Status callbacks for the volunteer's own leg (set on the number, and on call-backs).
async fn status(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
    Query(q): StepQuery,
) -> StepResult {
    let (Some(sid), Some(call_status)) = (p.non_empty("CallSid"), p.non_empty("CallStatus")) else {
        return reply(Twiml::new());
    };
    let now = state.clock.now().as_millisecond();
    let key = format!(
        "volunteer:{sid}:{call_status}:{}",
        p.get("SequenceNumber").unwrap_or("-")
    );
    // Seen already: done. The event is recorded only after it was acted on (below), so
    // a failure here is retried by the provider instead of being lost; every step is
    // idempotent.
    if state.store.was_provider_event(&key).await? {
        return reply(Twiml::new());
    }
    if let Some(cb) = q.cb
        && is_final_status(call_status)
        && call_status != "completed"
    {
        // The volunteer never picked up the call-back.
        state
            .store
            .update_callback(
                cb,
                "failed",
                Some(sid),
                None,
                Some(&format!("call {call_status}")),
                now,
            )
            .await?;
    }
    if is_final_status(call_status)
        && let Some(session) = state.store.session_by_call_sid(sid).await?
    {
        settle_hangup(&state, &session).await?;
    }
    state.store.first_provider_event(&key, now).await?;
    reply(Twiml::new())
}

/// Status callbacks for the member's leg (`<Number statusCallback>`).
async fn member_status(
    State(state): State<AppState>,
    Extension(p): Extension<Params>,
    Query(q): StepQuery,
) -> StepResult {
    let (Some(a), Some(sid), Some(call_status)) =
        (q.a, p.non_empty("CallSid"), p.non_empty("CallStatus"))
    else {
        return reply(Twiml::new());
    };
    let seq = p
        .get("SequenceNumber")
        .and_then(|s| s.trim().parse::<i64>().ok());
    let now = state.clock.now().as_millisecond();
    match state
        .store
        .record_member_status(a, sid, call_status, seq, now)
        .await
    {
        Ok(changed) => {
            if changed && is_final_status(call_status) {
                // A volunteer who vanished mid-call left this attempt to reconcile.
                let attempt = state.store.attempt(a).await?;
                if attempt.state == AttemptState::Reconcile {
                    let policy = state
                        .store
                        .get_campaign(attempt.campaign_id)
                        .await?
                        .retry_policy;
                    state
                        .store
                        .sweep_attempts(|_| Some(policy.clone()), now)
                        .await?;
                }
            }
        }
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    reply(Twiml::new())
}
