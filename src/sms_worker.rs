//! The survey-text sender: a background task in every `phonebank serve` that works
//! through `sms_outbox`.
//!
//! Each pass leases due texts (only campaigns that are active, only members whose local
//! time is inside the campaign's calling hours), and for each one, right before sending:
//! checks the suppression list and the bad-number list again, takes a permit from the
//! pacer (a `governor` limiter at `PHONEBANK_SMS_PER_SECOND`), and calls Create Message.
//!
//! Per outcome:
//! * accepted: `sent`, with the MessageSid; status callbacks then track delivery.
//! * 21610 (the member unsubscribed at the carrier): the number is suppressed everywhere
//!   (calls too), the text `failed:unsubscribed`.
//! * 21211 / 21614 (invalid, or not a mobile): the number is marked bad for texts, the
//!   text `failed:invalid_number` / `failed:not_mobile`.
//! * 429 / 20429 / connection refused: the REST client retries with backoff; if the
//!   provider stays busy the text goes back to the queue with a growing `not_before`
//!   and the pass stops, so the sender slows down rather than hammering.
//! * a 5xx or a timeout after the request went out: the provider may have accepted the
//!   text. It becomes `uncertain` and is **never resent automatically**: a member texted
//!   twice is worse than one text an organiser has to look at. The status callback URL
//!   carries the outbox id, so if the provider did create it, its first status callback
//!   adopts the MessageSid and the text becomes `sent`.
//! * credentials or sender refused (401/403, 20003, 21212, 21606): nothing is wrong with
//!   the member; the text goes back to the queue and the sender waits a minute.
//!
//! A leased text that was neither sent nor settled (the process died mid-send) is
//! `uncertain` once its lease runs out, never handed out again. The lease (60 s) is four
//! times the REST timeout, so a live sender always settles its texts first.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::http::AppState;
use crate::store::sms::OutboxItem;
use crate::telephony::{NewMessage, RestError};

/// How long a leased text is held before it counts as lost.
const LEASE: Duration = Duration::from_secs(60);
/// Attempts for a text the provider keeps rate-limiting before it is given up.
const MAX_ATTEMPTS: i64 = 10;
/// How long to wait when the account or sender is refused.
const SENDER_PAUSE: Duration = Duration::from_secs(60);

type Limiter<C> =
    RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as governor::clock::Clock>::Instant>>;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub sent: u64,
    pub skipped: u64,
    pub failed: u64,
    pub uncertain: u64,
    pub retry_later: u64,
    /// Leases of a dead sender taken back (now `uncertain`).
    pub lost: u64,
    /// The pacer ran out of permits; `wait` says for how long.
    pub limited: bool,
    /// Wait this long before the next pass (pacer, provider busy, sender refused).
    pub wait: Option<Duration>,
}

/// The sender. Generic over the pacer's clock so tests can drive it with governor's
/// `FakeRelativeClock` and count, never time.
pub struct SmsSender<C: governor::clock::Clock = DefaultClock> {
    state: AppState,
    limiter: Limiter<C>,
    clock: C,
    batch: i64,
}

impl SmsSender<DefaultClock> {
    pub fn new(state: AppState, per_second: u32) -> Self {
        Self::with_clock(state, per_second, DefaultClock::default())
    }
}

impl<C: governor::clock::Clock + Clone> SmsSender<C> {
    /// A sender pacing `per_second` texts (burst: one second's worth) on `clock`.
    pub fn with_clock(state: AppState, per_second: u32, clock: C) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            state,
            limiter: RateLimiter::direct_with_clock(Quota::per_second(rate), clock.clone()),
            clock,
            batch: i64::from(rate.get()).clamp(1, 200),
        }
    }

    /// One pass over the outbox: send what is due and allowed now.
    pub async fn pass(&self) -> anyhow::Result<Pass> {
        let mut pass = Pass::default();
        let store = &self.state.store;
        let now = self.state.clock.now().as_millisecond();
        pass.lost = store.sweep_texts(now).await?;
        if pass.lost > 0 {
            tracing::warn!(
                texts = pass.lost,
                "texts left mid-send by a stopped sender are now uncertain (never resent)"
            );
        }
        let Some(rest) = self.state.rest.as_ref() else {
            return Ok(pass);
        };
        let mut by_campaign: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (campaign, zone) in store.due_text_zones(now).await? {
            by_campaign.entry(campaign).or_default().push(zone);
        }
        for (campaign_id, zones) in by_campaign {
            let campaign = store.get_campaign(campaign_id).await?;
            let at = self.state.clock.now();
            let open: Vec<String> = zones
                .into_iter()
                .filter(|z| campaign.calling_hours.allows_in(at, z))
                .collect();
            if open.is_empty() {
                continue;
            }
            loop {
                let now = self.state.clock.now().as_millisecond();
                let lease_until = now + LEASE.as_millis() as i64;
                let items = store
                    .claim_texts(campaign_id, &open, now, lease_until, self.batch)
                    .await?;
                if items.is_empty() {
                    break;
                }
                let before = pass.clone();
                for (i, item) in items.iter().enumerate() {
                    let stop = self.send_one(rest, &campaign, item, &mut pass).await?;
                    if stop {
                        let rest_ids: Vec<i64> = items[i + 1..].iter().map(|t| t.id).collect();
                        store
                            .release_texts(&rest_ids, self.state.clock.now().as_millisecond())
                            .await?;
                        return Ok(pass);
                    }
                }
                if pass == before {
                    // Everything went back (calling hours closed mid-pass): next pass.
                    break;
                }
            }
        }
        Ok(pass)
    }

    /// Send one leased text. Returns true when the pass must stop (the pacer is out of
    /// permits, or the provider asked us to slow down); the text has been put back.
    async fn send_one(
        &self,
        rest: &crate::telephony::RestClient,
        campaign: &crate::store::campaigns::Campaign,
        item: &OutboxItem,
        pass: &mut Pass,
    ) -> anyhow::Result<bool> {
        let store = &self.state.store;
        let now = self.state.clock.now();
        let ms = now.as_millisecond();
        // Right before the send: opt-outs and bad numbers may have arrived since queueing.
        if store.is_suppressed(&item.phone).await? {
            store
                .text_settled(item.id, "skipped", "suppressed", None, None, ms)
                .await?;
            pass.skipped += 1;
            return Ok(false);
        }
        if store.is_bad_number(&item.phone).await? {
            store
                .text_settled(item.id, "skipped", "bad_number", None, None, ms)
                .await?;
            pass.skipped += 1;
            return Ok(false);
        }
        if !campaign.calling_hours.allows_in(now, &item.time_zone) {
            store.release_texts(&[item.id], ms).await?;
            return Ok(false);
        }
        if let Err(not_until) = self.limiter.check() {
            store.release_texts(&[item.id], ms).await?;
            pass.limited = true;
            pass.wait = Some(not_until.wait_time_from(self.clock.now()));
            return Ok(true);
        }
        let callback = self
            .state
            .url(&format!("/webhooks/sms/status?o={}", item.id));
        let result = rest
            .create_message(&NewMessage {
                to: &item.phone,
                from: campaign.caller_number.as_e164(),
                body: &item.body,
                status_callback: &callback,
            })
            .await;
        let ms = self.state.clock.now().as_millisecond();
        let outcome = match result {
            Ok(message) => {
                store
                    .text_sent(item.id, &message.sid, message.status.as_deref(), ms)
                    .await?;
                pass.sent += 1;
                "sent"
            }
            Err(RestError::Uncertain(message)) => {
                tracing::warn!(outbox_id = item.id, %message, "text outcome unknown: not resent");
                store
                    .text_settled(
                        item.id,
                        "uncertain",
                        "provider_uncertain",
                        None,
                        Some(&message),
                        ms,
                    )
                    .await?;
                pass.uncertain += 1;
                "uncertain"
            }
            Err(e @ (RestError::Unavailable { .. } | RestError::Paced { .. })) => {
                let message = e.to_string();
                if item.attempts >= MAX_ATTEMPTS {
                    store
                        .text_settled(
                            item.id,
                            "failed",
                            "provider_unavailable",
                            None,
                            Some(&message),
                            ms,
                        )
                        .await?;
                    pass.failed += 1;
                } else {
                    let backoff = Duration::from_secs(5)
                        .saturating_mul(1 << (item.attempts.clamp(1, 8) - 1))
                        .min(Duration::from_secs(600));
                    store
                        .text_retry_later(item.id, ms + backoff.as_millis() as i64, &message, ms)
                        .await?;
                    pass.retry_later += 1;
                    pass.wait = Some(backoff);
                }
                tracing::warn!(outbox_id = item.id, error = %e, "provider busy: texts slowed down");
                metrics::counter!("phonebank_sms_sent_total", "result" => "retry_later")
                    .increment(1);
                return Ok(true);
            }
            Err(RestError::Rejected {
                status,
                code,
                message,
            }) => {
                if matches!(status, 401 | 403) || matches!(code, Some(20003 | 21212 | 21606)) {
                    // The account or the campaign number is the problem, not the member:
                    // keep the text and wait.
                    tracing::error!(
                        outbox_id = item.id,
                        status,
                        code,
                        %message,
                        "the provider refused the sender: texts paused"
                    );
                    store.release_texts(&[item.id], ms).await?;
                    pass.wait = Some(SENDER_PAUSE);
                    return Ok(true);
                }
                let reason = match code {
                    Some(21610) => {
                        if let Ok(phone) = crate::domain::PhoneNumber::from_e164(&item.phone) {
                            store
                                .suppress(
                                    &phone,
                                    "unsubscribed at the carrier (provider error 21610)",
                                    "carrier",
                                    "provider",
                                )
                                .await?;
                        }
                        metrics::counter!("phonebank_optouts_total", "source" => "carrier")
                            .increment(1);
                        "unsubscribed"
                    }
                    Some(21211) => {
                        store
                            .mark_bad_number(&item.phone, code, "invalid number (21211)", ms)
                            .await?;
                        "invalid_number"
                    }
                    Some(21614) => {
                        store
                            .mark_bad_number(&item.phone, code, "not a mobile number (21614)", ms)
                            .await?;
                        "not_mobile"
                    }
                    _ => "rejected",
                };
                tracing::info!(
                    outbox_id = item.id,
                    status,
                    code,
                    reason,
                    "text refused by the provider"
                );
                store
                    .text_settled(item.id, "failed", reason, code, Some(&message), ms)
                    .await?;
                pass.failed += 1;
                "failed"
            }
        };
        metrics::counter!("phonebank_sms_sent_total", "result" => outcome).increment(1);
        Ok(false)
    }
}

/// Run the sender until the task is aborted: a pass, then wait as it says (or poll the
/// outbox every `idle` when there was nothing to do).
pub fn spawn(state: AppState, per_second: u32, idle: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let sender = SmsSender::new(state, per_second);
        loop {
            let wait = match sender.pass().await {
                Ok(p) => p.wait.unwrap_or(if p.sent + p.skipped + p.failed > 0 {
                    Duration::ZERO
                } else {
                    idle
                }),
                Err(e) => {
                    // A database blip: try again shortly.
                    tracing::warn!(error = %e, "sms sender pass failed");
                    idle
                }
            };
            if wait > Duration::ZERO {
                tokio::time::sleep(wait).await;
            }
        }
    })
}
