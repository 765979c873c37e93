//! Call-backs: ringing a volunteer's registered phone through the provider's REST API.
//! An organiser asks for one over the API, a volunteer by texting `CALL` to the campaign
//! number. When the volunteer answers, the provider fetches `/webhooks/voice?cb=ID` and
//! the same loop as a dial-in runs.
//!
//! One request places at most one call: the request row is written first (deduplicated
//! by an idempotency key), and the REST client never retries an answer that might mean
//! the call was created (see [`crate::telephony::rest`]).

use crate::domain::CampaignStatus;
use crate::http::AppState;
use crate::store::StoreError;
use crate::store::campaigns::Campaign;
use crate::store::sessions::CallbackRequest;
use crate::telephony::{NewCall, RestError};

/// Seconds the volunteer's phone rings before the provider gives up.
const RING_SECONDS: u32 = 30;

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("telephony credentials (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN) are not configured")]
    NotConfigured,
    #[error("no such volunteer")]
    UnknownVolunteer,
    #[error("the volunteer is not active")]
    InactiveVolunteer,
    #[error("no such campaign")]
    UnknownCampaign,
    #[error("the campaign is not active")]
    CampaignNotActive,
    #[error("no campaign is active")]
    NoActiveCampaign,
    #[error("more than one campaign is active: say which")]
    CampaignAmbiguous,
    /// Too many calls are being placed for the account right now: nothing was sent and
    /// nothing recorded, so the same request may be made again after `retry_after`.
    #[error("too many calls are being placed right now; try again shortly")]
    Busy { retry_after: std::time::Duration },
    /// The provider answered and did not place the call; the request is `failed`.
    #[error("{0}")]
    Provider(RestError, CallbackRequest),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Place (or, for a repeated idempotency key, return) a call-back. `Ok` carries the
/// request as recorded: `placed`, or `uncertain` when the provider's answer was lost and
/// a second call could ring the volunteer twice.
pub async fn request_callback(
    state: &AppState,
    volunteer_id: i64,
    campaign_id: Option<i64>,
    idempotency_key: Option<&str>,
) -> Result<CallbackRequest, CallbackError> {
    let rest = state.rest.as_ref().ok_or(CallbackError::NotConfigured)?;
    let store = &state.store;
    let volunteer = match store.get_volunteer(volunteer_id).await {
        Ok(v) => v,
        Err(StoreError::NotFound) => return Err(CallbackError::UnknownVolunteer),
        Err(e) => return Err(e.into()),
    };
    if !volunteer.active {
        return Err(CallbackError::InactiveVolunteer);
    }
    let campaign = campaign_for(state, campaign_id).await?;
    let now = state.clock.now().as_millisecond();
    let (request, created) = store
        .create_callback(volunteer.id, Some(campaign.id), idempotency_key, now)
        .await?;
    if !created {
        // The same request again: report the first one, never ring twice.
        return Ok(request);
    }
    let url = state.url(&format!("/webhooks/voice?cb={}", request.id));
    let status_callback = state.url(&format!("/webhooks/voice/status?cb={}", request.id));
    let placed = rest
        .create_call(&NewCall {
            to: volunteer.phone.as_e164(),
            from: campaign.caller_number.as_e164(),
            url: &url,
            status_callback: &status_callback,
            timeout_secs: RING_SECONDS,
        })
        .await;
    let now = state.clock.now().as_millisecond();
    match placed {
        Ok(call) => {
            store
                .update_callback(request.id, "placed", Some(&call.sid), None, None, now)
                .await?;
            metrics::counter!("phonebank_callbacks_total", "result" => "placed").increment(1);
            Ok(store.callback(request.id).await?)
        }
        Err(RestError::Paced { retry_after }) => {
            // Never sent: forget the request, so a retry with the same idempotency key
            // places the call instead of replaying a refusal.
            store.discard_pending_callback(request.id).await?;
            metrics::counter!("phonebank_callbacks_total", "result" => "paced").increment(1);
            Err(CallbackError::Busy { retry_after })
        }
        Err(RestError::Uncertain(message)) => {
            tracing::warn!(callback_id = request.id, %message, "call-back outcome unknown");
            store
                .update_callback(request.id, "uncertain", None, None, Some(&message), now)
                .await?;
            metrics::counter!("phonebank_callbacks_total", "result" => "uncertain").increment(1);
            Ok(store.callback(request.id).await?)
        }
        Err(e) => {
            tracing::warn!(callback_id = request.id, error = %e, "call-back not placed");
            store
                .update_callback(
                    request.id,
                    "failed",
                    None,
                    e.code(),
                    Some(&e.to_string()),
                    now,
                )
                .await?;
            metrics::counter!("phonebank_callbacks_total", "result" => "failed").increment(1);
            let request = store.callback(request.id).await?;
            Err(CallbackError::Provider(e, request))
        }
    }
}

/// The campaign named, or the only active one.
async fn campaign_for(state: &AppState, id: Option<i64>) -> Result<Campaign, CallbackError> {
    let store = &state.store;
    let campaign = match id {
        Some(id) => match store.get_campaign(id).await {
            Ok(c) => c,
            Err(StoreError::NotFound) => return Err(CallbackError::UnknownCampaign),
            Err(e) => return Err(e.into()),
        },
        None => {
            let mut active: Vec<Campaign> = store
                .list_campaigns()
                .await?
                .into_iter()
                .filter(|c| c.status == CampaignStatus::Active)
                .collect();
            match active.len() {
                0 => return Err(CallbackError::NoActiveCampaign),
                1 => active.remove(0),
                _ => return Err(CallbackError::CampaignAmbiguous),
            }
        }
    };
    if campaign.status != CampaignStatus::Active {
        return Err(CallbackError::CampaignNotActive);
    }
    Ok(campaign)
}
