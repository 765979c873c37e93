//! Survey texts: send a campaign question to a set of members, follow the send, and work
//! through the replies that need an organiser (unclear answers, unknown or shared
//! numbers). Texts go out through the background sender (`sms_worker`), paced and only
//! inside calling hours; a member is never texted twice for one question.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::sms::{Segments, segments, survey_text};
use crate::domain::{CampaignStatus, now_millis};
use crate::http::auth::Organiser;
use crate::http::error::{AppJson, AppPath, AppQuery, ErrorBody};
use crate::http::{ApiError, ApiResult, AppState};
use crate::store::StoreError;
use crate::store::sms::{Audience, NewSend, OutboxSummary, ReviewItem, SendReport};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_texts))
        .routes(routes!(text_summary))
        .routes(routes!(list_reviews))
        .routes(routes!(get_review))
        .routes(routes!(resolve_review))
        .routes(routes!(dismiss_review))
}

/// Who gets the text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AudienceInput {
    /// Every member who has not answered the question yet.
    All,
    /// Members of one seat, by ONS code.
    Seat { seat: String },
    /// Members tried by phone at least `min_attempts` times without an answer.
    Unreached { min_attempts: u32 },
    /// Named members (their `member_id`s), at most 10,000.
    Members { member_ids: Vec<String> },
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendInput {
    /// The question's code; default the script's first question.
    pub question: Option<String>,
    pub audience: AudienceInput,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SendResult {
    pub campaign_id: i64,
    pub question: String,
    /// The text each member receives.
    pub text: String,
    pub segments: Segments,
    #[serde(flatten)]
    pub report: SendReport,
}

fn campaign_not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound("campaign"),
        e => e.into(),
    }
}

/// Queue a campaign question as a text to an audience. Returns at once; the background
/// sender delivers at the configured pace, inside calling hours in each member's time
/// zone, skipping anyone who opts out meanwhile. Asking again never texts anyone twice.
#[utoipa::path(post, path = "/campaigns/{id}/sms/send", tag = "sms", params(("id" = i64, Path)), request_body = SendInput,
    responses((status = 202, description = "Queued", body = SendResult), (status = 404, description = "No such resource", body = ErrorBody), (status = 409, description = "The campaign is not active", body = ErrorBody), (status = 422, description = "Fields failed validation", body = ErrorBody), (status = 503, description = "Telephony is not configured", body = ErrorBody)))]
async fn send_texts(
    organiser: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    AppJson(input): AppJson<SendInput>,
) -> ApiResult<(StatusCode, AppJson<SendResult>)> {
    let campaign = state
        .store
        .get_campaign(id)
        .await
        .map_err(campaign_not_found)?;
    let question = match &input.question {
        Some(code) => campaign
            .script
            .question(code)
            .ok_or_else(|| ApiError::invalid("question", format!("no question {code:?}")))?,
        None => campaign
            .script
            .questions
            .first()
            .ok_or_else(|| ApiError::invalid("question", "the script has no questions"))?,
    };
    let audience = match input.audience {
        AudienceInput::All => Audience::All,
        AudienceInput::Seat { seat } => {
            let seat = seat.trim().to_owned();
            match state.store.get_seat(&seat).await {
                Ok(_) => Audience::Seat(seat),
                Err(StoreError::NotFound) => {
                    return Err(ApiError::invalid("audience.seat", "no seat with that code"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        AudienceInput::Unreached { min_attempts } => {
            if !(1..=20).contains(&min_attempts) {
                return Err(ApiError::invalid(
                    "audience.min_attempts",
                    "must be between 1 and 20",
                ));
            }
            Audience::Unreached {
                min_attempts: i64::from(min_attempts),
            }
        }
        AudienceInput::Members { member_ids } => {
            if member_ids.is_empty() || member_ids.len() > 10_000 {
                return Err(ApiError::invalid(
                    "audience.member_ids",
                    "give 1 to 10,000 member ids",
                ));
            }
            Audience::Members(member_ids)
        }
    };
    if campaign.status != CampaignStatus::Active {
        return Err(ApiError::conflict(
            "campaign_not_active",
            "start the campaign before texting its members",
        ));
    }
    if state.rest.is_none() {
        return Err(ApiError::Upstream {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "telephony_not_configured",
            message:
                "telephony credentials (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN) are not configured"
                    .into(),
        });
    }
    let text = survey_text(&campaign.name, question);
    let cost = segments(&text);
    let report = state
        .store
        .queue_texts(&NewSend {
            campaign_id: id,
            question_code: &question.code,
            body: &text,
            segments: cost.segments as i64,
            audience: &audience,
            now: now_millis(),
        })
        .await?;
    tracing::info!(
        campaign_id = id,
        question = %question.code,
        queued = report.queued,
        actor = %organiser.token_name,
        "survey texts queued"
    );
    Ok((
        StatusCode::ACCEPTED,
        AppJson(SendResult {
            campaign_id: id,
            question: question.code.clone(),
            text,
            segments: cost,
            report,
        }),
    ))
}

/// Where a campaign's texts stand: queued, sent, skipped and failed (with reasons),
/// uncertain, delivery statuses, answers received.
#[utoipa::path(get, path = "/campaigns/{id}/sms", tag = "sms", params(("id" = i64, Path)),
    responses((status = 200, description = "Success", body = OutboxSummary), (status = 404, description = "No such resource", body = ErrorBody)))]
async fn text_summary(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<AppJson<OutboxSummary>> {
    state
        .store
        .get_campaign(id)
        .await
        .map_err(campaign_not_found)?;
    Ok(AppJson(state.store.text_summary(id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// `open` (default), `resolved` or `dismissed`.
    pub state: Option<String>,
    pub campaign_id: Option<i64>,
    /// Items after this id (paging).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// The review queue: replies that were not stored as answers, oldest first.
#[utoipa::path(get, path = "/sms/reviews", tag = "sms", params(ReviewQuery),
    responses((status = 200, description = "Success", body = Vec<ReviewItem>), (status = 400, description = "Malformed query", body = ErrorBody), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn list_reviews(
    _: Organiser,
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ReviewQuery>,
) -> ApiResult<AppJson<Vec<ReviewItem>>> {
    let review_state = q.state.as_deref().unwrap_or("open");
    if !matches!(review_state, "open" | "resolved" | "dismissed") {
        return Err(ApiError::invalid(
            "state",
            "use open, resolved or dismissed",
        ));
    }
    let limit = super::page_limit(q.limit)?;
    Ok(AppJson(
        state
            .store
            .list_reviews(review_state, q.campaign_id, q.after.unwrap_or(0), limit)
            .await?,
    ))
}

fn review_not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound("review item"),
        StoreError::Conflict("review_closed") => ApiError::conflict(
            "review_closed",
            "this item was already resolved or dismissed",
        ),
        StoreError::Conflict("unknown_member") => {
            ApiError::invalid("member_id", "no member with that id")
        }
        e => e.into(),
    }
}

#[utoipa::path(get, path = "/sms/reviews/{id}", tag = "sms", params(("id" = i64, Path)),
    responses((status = 200, description = "Success", body = ReviewItem), (status = 404, description = "No such resource", body = ErrorBody)))]
async fn get_review(
    _: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
) -> ApiResult<AppJson<ReviewItem>> {
    Ok(AppJson(
        state.store.review(id).await.map_err(review_not_found)?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveInput {
    /// The member the reply is from.
    pub member_id: String,
    /// The option code the organiser reads in the reply.
    pub option: String,
    /// The question; default the item's own (from the text it answered).
    pub question: Option<String>,
    /// The campaign; default the item's own (from the number texted).
    pub campaign_id: Option<i64>,
    pub note: Option<String>,
}

/// Store the answer an organiser reads in a review item, for the member they choose.
#[utoipa::path(post, path = "/sms/reviews/{id}/resolve", tag = "sms", params(("id" = i64, Path)), request_body = ResolveInput,
    responses((status = 200, description = "Success", body = ReviewItem), (status = 404, description = "No such resource", body = ErrorBody), (status = 409, description = "Already resolved or dismissed", body = ErrorBody), (status = 422, description = "Fields failed validation", body = ErrorBody)))]
async fn resolve_review(
    organiser: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    AppJson(input): AppJson<ResolveInput>,
) -> ApiResult<AppJson<ReviewItem>> {
    let item = state.store.review(id).await.map_err(review_not_found)?;
    let campaign_id = input
        .campaign_id
        .or(item.campaign_id)
        .ok_or_else(|| ApiError::invalid("campaign_id", "say which campaign this answers"))?;
    let campaign = match state.store.get_campaign(campaign_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => {
            return Err(ApiError::invalid("campaign_id", "no such campaign"));
        }
        Err(e) => return Err(e.into()),
    };
    let question_code = input
        .question
        .clone()
        .or(item.question_code.clone())
        .or_else(|| campaign.script.questions.first().map(|q| q.code.clone()))
        .unwrap_or_default();
    let Some(question) = campaign.script.question(&question_code) else {
        return Err(ApiError::invalid(
            "question",
            "no such question in the campaign",
        ));
    };
    if !question.options.iter().any(|o| o.code == input.option) {
        return Err(ApiError::invalid(
            "option",
            format!("the question has no option {:?}", input.option),
        ));
    }
    let note = super::note("note", input.note.as_deref())?;
    state
        .store
        .resolve_review(
            id,
            campaign_id,
            input.member_id.trim(),
            &question.code,
            &input.option,
            &organiser.token_name,
            note,
            now_millis(),
        )
        .await
        .map_err(review_not_found)?;
    tracing::info!(review_id = id, campaign_id, actor = %organiser.token_name, "review item resolved");
    Ok(AppJson(
        state.store.review(id).await.map_err(review_not_found)?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DismissInput {
    pub note: Option<String>,
}

/// Close a review item without storing an answer (not an answer, or unreadable).
#[utoipa::path(post, path = "/sms/reviews/{id}/dismiss", tag = "sms", params(("id" = i64, Path)), request_body = DismissInput,
    responses((status = 200, description = "Success", body = ReviewItem), (status = 404, description = "No such resource", body = ErrorBody), (status = 409, description = "Already resolved or dismissed", body = ErrorBody)))]
async fn dismiss_review(
    organiser: Organiser,
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    AppJson(input): AppJson<DismissInput>,
) -> ApiResult<AppJson<ReviewItem>> {
    let note = super::note("note", input.note.as_deref())?;
    state
        .store
        .dismiss_review(id, &organiser.token_name, note, now_millis())
        .await
        .map_err(review_not_found)?;
    tracing::info!(review_id = id, actor = %organiser.token_name, "review item dismissed");
    Ok(AppJson(
        state.store.review(id).await.map_err(review_not_found)?,
    ))
}
