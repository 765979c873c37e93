//! In-process rate limits (governor GCRA), held in [`crate::http::AppState`]; no globals.
//!
//! These complement the per-seat limits, which live in the database because every
//! instance must share them (`store::calls`). The limits here protect one process and
//! one provider account, where an approximate per-instance budget is good enough:
//!
//! * [`Limits::api`]: organiser API requests per bearer token. Over the limit the API
//!   answers 429 `rate_limited` with `Retry-After`. Checked after authentication, so its
//!   keys are live tokens only.
//! * [`Limits::pin`]: PIN attempts per caller number, in front of the database's count of
//!   wrong PINs (which holds across instances). It stops a flood before it costs an
//!   argon2 hash and a database round trip; the caller hears a polite goodbye.
//! * [`Limits::sms`]: texts per sender number. Excess texts are dropped with an empty
//!   200 (a 429 or 5xx would only make the provider redeliver them). Opt-out keywords are
//!   never limited: STOP is handled before this limiter is consulted.
//! * [`Limits::calls`]: outbound calls created through the provider's REST API, per
//!   account (the provider's default is 1 call per second). The REST client waits for a
//!   slot, up to a bound, then gives up without sending (see [`Pacer`]).
//!
//! Memory is bounded: the API and PIN limiters are keyed by registered tokens and
//! volunteer numbers only; every keyed limiter is pruned by [`spawn_housekeeping`]
//! (`retain_recent` drops keys whose state equals a fresh one, then `shrink_to_fit`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// The clock the limiters run on: monotonic time in production; a manual clock in tests
/// (and the simulator), which a [`Pacer`] advances instead of sleeping, so pacing is
/// checked by counting, never by timing.
#[derive(Debug, Clone)]
pub enum LimitClock {
    System(std::time::Instant),
    Manual(FakeRelativeClock),
}

impl LimitClock {
    pub fn system() -> Self {
        Self::System(std::time::Instant::now())
    }

    pub fn manual() -> Self {
        Self::Manual(FakeRelativeClock::default())
    }

    /// Move a manual clock forward; the system clock ignores this.
    pub fn advance(&self, by: Duration) {
        if let Self::Manual(c) = self {
            c.advance(by);
        }
    }

    /// Time since the clock started.
    pub fn elapsed(&self) -> Duration {
        self.now().into()
    }

    async fn sleep(&self, d: Duration) {
        match self {
            Self::System(_) => tokio::time::sleep(d).await,
            Self::Manual(c) => {
                c.advance(d);
                tokio::task::yield_now().await;
            }
        }
    }
}

impl Clock for LimitClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            Self::System(start) => Nanos::from(start.elapsed()),
            Self::Manual(c) => c.now(),
        }
    }
}

pub type KeyedLimiter<K> = RateLimiter<K, DashMapStateStore<K>, LimitClock, NoOpMiddleware<Nanos>>;
pub type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, LimitClock, NoOpMiddleware<Nanos>>;

/// Budgets, from flags and environment (`config::LimitArgs`). Zero turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Organiser API requests per token per minute (also the burst).
    pub api_per_minute: u32,
    /// PIN attempts per caller number per hour, and how many may come at once.
    pub pin_per_hour: u32,
    pub pin_burst: u32,
    /// Texts per sender number per minute (also the burst).
    pub sms_per_minute: u32,
    /// Calls created through the REST API per second, per account (also the burst).
    pub calls_per_second: u32,
    /// How long the REST client may wait for a call slot before giving up unsent.
    pub call_wait: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            api_per_minute: 600,
            pin_per_hour: 120,
            pin_burst: 20,
            sms_per_minute: 5,
            calls_per_second: 1,
            call_wait: Duration::from_secs(5),
        }
    }
}

/// Every in-process limiter of one application. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Limits {
    pub api: Option<Arc<KeyedLimiter<String>>>,
    pub pin: Option<Arc<KeyedLimiter<String>>>,
    pub sms: Option<Arc<KeyedLimiter<String>>>,
    pub calls: Pacer,
    pub clock: LimitClock,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("api_keys", &self.api.as_ref().map(|l| l.len()))
            .field("pin_keys", &self.pin.as_ref().map(|l| l.len()))
            .field("sms_keys", &self.sms.as_ref().map(|l| l.len()))
            .finish_non_exhaustive()
    }
}

/// Why a request was refused, and when trying again can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for a `Retry-After` header: rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

fn keyed(quota: Option<Quota>, clock: &LimitClock) -> Option<Arc<KeyedLimiter<String>>> {
    quota.map(|q| Arc::new(RateLimiter::dashmap_with_clock(q, clock.clone())))
}

fn nz(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

impl Limits {
    pub fn new(settings: &LimitSettings, clock: LimitClock) -> Self {
        let pin = nz(settings.pin_per_hour).and_then(|rate| {
            Quota::with_period(Duration::from_secs(3600) / rate.get())
                .map(|q| q.allow_burst(nz(settings.pin_burst).unwrap_or(rate)))
        });
        Self {
            api: keyed(nz(settings.api_per_minute).map(Quota::per_minute), &clock),
            pin: keyed(pin, &clock),
            sms: keyed(nz(settings.sms_per_minute).map(Quota::per_minute), &clock),
            calls: Pacer::new(
                nz(settings.calls_per_second).map(Quota::per_second),
                settings.call_wait,
                clock.clone(),
            ),
            clock,
        }
    }

    /// One API request with this token (its stored digest, so no secret is kept).
    pub fn check_api(&self, token_digest: &str) -> Result<(), Limited> {
        check(self.api.as_deref(), "api", token_digest, &self.clock)
    }

    /// One PIN attempt from this number (E.164).
    pub fn check_pin(&self, number: &str) -> Result<(), Limited> {
        check(self.pin.as_deref(), "pin", number, &self.clock)
    }

    /// One text from this sender (E.164). Callers must not ask for opt-outs.
    pub fn check_sms(&self, sender: &str) -> Result<(), Limited> {
        check(self.sms.as_deref(), "sms", sender, &self.clock)
    }

    /// Forget keys whose state is indistinguishable from a fresh one, and give the
    /// memory back. Returns the keys left.
    pub fn housekeeping(&self) -> usize {
        [&self.api, &self.pin, &self.sms]
            .into_iter()
            .flatten()
            .map(|l| {
                l.retain_recent();
                l.shrink_to_fit();
                l.len()
            })
            .sum()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(&LimitSettings::default(), LimitClock::system())
    }
}

fn check(
    limiter: Option<&KeyedLimiter<String>>,
    name: &'static str,
    key: &str,
    clock: &LimitClock,
) -> Result<(), Limited> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check_key(&key.to_owned()).map_err(|not| {
        metrics::counter!("phonebank_rate_limited_total", "limit" => name).increment(1);
        Limited {
            retry_after: not.wait_time_from(clock.now()),
        }
    })
}

/// Paces outbound requests to the provider's rate: each request waits for its slot, up
/// to `max_wait`; beyond that it is refused *before* anything is sent, so the caller can
/// report "busy, try again" knowing nothing was created.
#[derive(Clone)]
pub struct Pacer {
    limiter: Option<Arc<DirectLimiter>>,
    max_wait: Duration,
    clock: LimitClock,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("enabled", &self.limiter.is_some())
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl Pacer {
    pub fn new(quota: Option<Quota>, max_wait: Duration, clock: LimitClock) -> Self {
        Self {
            limiter: quota.map(|q| Arc::new(RateLimiter::direct_with_clock(q, clock.clone()))),
            max_wait,
            clock,
        }
    }

    /// No pacing at all.
    pub fn unlimited() -> Self {
        Self::new(None, Duration::ZERO, LimitClock::system())
    }

    /// Wait for a slot. Several waiters race for each slot (governor has no
    /// reservations); one that cannot get a slot within `max_wait` gives up.
    pub async fn acquire(&self) -> Result<(), Limited> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let deadline = self.clock.now() + Nanos::from(self.max_wait);
        loop {
            match limiter.check() {
                Ok(()) => return Ok(()),
                Err(not) => {
                    let now = self.clock.now();
                    let wait = not.wait_time_from(now);
                    if now + Nanos::from(wait) > deadline {
                        metrics::counter!("phonebank_rate_limited_total", "limit" => "calls")
                            .increment(1);
                        return Err(Limited { retry_after: wait });
                    }
                    self.clock.sleep(wait).await;
                }
            }
        }
    }
}

impl Default for Pacer {
    fn default() -> Self {
        Self::unlimited()
    }
}

/// The SMS webhook's flood guard: true when this text should be dropped (answered with
/// an empty 200, so the provider does not redeliver it). Opt-out keywords always pass:
/// STOP is absolute and never waits on a budget. A sender we cannot read passes too (the
/// webhook ignores it anyway).
pub fn sms_flood(state: &crate::http::AppState, params: &crate::http::webhooks::Params) -> bool {
    use crate::http::webhooks::sms::{Keyword, keyword};
    if keyword(params.get("Body").unwrap_or_default()) == Some(Keyword::Stop) {
        return false;
    }
    let Some(from) = params
        .non_empty("From")
        .and_then(|f| crate::domain::PhoneNumber::parse(f, state.settings.default_region).ok())
    else {
        return false;
    };
    match state.limits.check_sms(from.as_e164()) {
        Ok(()) => false,
        Err(_) => {
            tracing::info!(
                message_sid = params.non_empty("MessageSid").unwrap_or("-"),
                "text dropped: too many from this sender"
            );
            true
        }
    }
}

/// Prune the keyed limiters every `every` until the task is dropped or aborted.
pub fn spawn_housekeeping(limits: Limits, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let keys = limits.housekeeping();
            tracing::debug!(keys, "rate limiter housekeeping");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(s: LimitSettings) -> Limits {
        Limits::new(&s, LimitClock::manual())
    }

    #[test]
    fn a_token_gets_its_burst_then_waits_one_interval() {
        let l = limits(LimitSettings {
            api_per_minute: 3,
            ..LimitSettings::default()
        });
        for _ in 0..3 {
            assert!(l.check_api("a").is_ok());
        }
        let refused = l.check_api("a").unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(20));
        assert_eq!(refused.retry_after_secs(), 20);
        assert!(l.check_api("b").is_ok(), "other keys are unaffected");
        l.clock.advance(Duration::from_secs(20));
        assert!(l.check_api("a").is_ok());
        assert!(l.check_api("a").is_err());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let l = limits(LimitSettings {
            sms_per_minute: 0,
            ..LimitSettings::default()
        });
        for _ in 0..1000 {
            assert!(l.check_sms("+447700900001").is_ok());
        }
    }

    #[test]
    fn housekeeping_forgets_idle_keys() {
        let l = limits(LimitSettings::default());
        for i in 0..100 {
            l.check_sms(&format!("+447700900{i:03}")).unwrap();
        }
        assert_eq!(l.housekeeping(), 100, "still within their interval");
        l.clock.advance(Duration::from_secs(3600));
        assert_eq!(l.housekeeping(), 0);
    }

    #[test]
    fn retry_after_rounds_up() {
        let l = Limited {
            retry_after: Duration::from_millis(1),
        };
        assert_eq!(l.retry_after_secs(), 1);
        let l = Limited {
            retry_after: Duration::from_millis(2500),
        };
        assert_eq!(l.retry_after_secs(), 3);
    }

    #[tokio::test]
    async fn the_pacer_spaces_requests_on_its_clock() {
        let clock = LimitClock::manual();
        let pacer = Pacer::new(
            Some(Quota::per_second(NonZeroU32::new(1).unwrap())),
            Duration::from_secs(5),
            clock.clone(),
        );
        for _ in 0..4 {
            pacer.acquire().await.unwrap();
        }
        // The first went at once; each of the next three waited one second.
        assert_eq!(clock.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn the_pacer_gives_up_beyond_its_wait() {
        let clock = LimitClock::manual();
        let pacer = Pacer::new(
            Some(Quota::per_second(NonZeroU32::new(1).unwrap())),
            Duration::ZERO,
            clock.clone(),
        );
        pacer.acquire().await.unwrap();
        let refused = pacer.acquire().await.unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert_eq!(clock.elapsed(), Duration::ZERO, "nothing waited");
    }
}
