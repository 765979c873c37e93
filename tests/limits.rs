//! In-process rate limits (`phonebank::limits`): API requests per token, PIN attempts
//! per caller number, texts per sender (never STOP), and call creation paced to the
//! account's calls per second. Every limiter runs on a manual clock, so the tests count
//! and never time. Both backends.

mod common;

use std::time::Duration;

use common::app::{TestApp, campaign_body};
use common::phone::{Call, tuesday_evening, voice_settings};
use common::{import_members_str, load_seats};
use phonebank::config::Settings;
use phonebank::domain::{ApiToken, Clock, PhoneNumber};
use phonebank::http::AppState;
use phonebank::limits::{LimitClock, LimitSettings, Limits};
use phonebank::store::Store;
use phonebank::telephony::RestClient;
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CALLS: &str = "/2010-04-01/Accounts/AC00000000000000000000000000000000/Calls.json";
const VOLUNTEER: &str = "+442079460500";
const OTHER_VOLUNTEER: &str = "+442079460501";
const MEMBER: &str = "+447700900123";

/// The provider creating a call: a new CallSid each time.
#[derive(Default)]
struct NewSid(std::sync::atomic::AtomicU64);

impl wiremock::Respond for NewSid {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ResponseTemplate::new(201)
            .set_body_json(json!({"sid": format!("CA{n:032x}"), "status": "queued"}))
    }
}

/// An app whose limiters run on `clock`, with `limits` as the budgets.
async fn app_with(
    store: Store,
    limits: LimitSettings,
    clock: &LimitClock,
    rest: Option<RestClient>,
) -> TestApp {
    let settings = Settings {
        limits,
        ..voice_settings()
    };
    let limiters = Limits::new(&settings.limits, clock.clone());
    let mut state = AppState::new(store, settings)
        .with_clock(Clock::manual(tuesday_evening()))
        .with_limits(limiters);
    if let Some(rest) = rest {
        state = state.with_rest(rest);
    }
    TestApp::with_state(state).await
}

/// Seats, one member, an active campaign and two volunteers; their PINs.
async fn phone_bank(app: &TestApp) -> (String, String) {
    load_seats(&app.store).await;
    import_members_str(
        &app.store,
        &format!("member_id,name,phone,constituency\nM1,Alex Example,{MEMBER},Hendon\n"),
    )
    .await;
    let c = app
        .json("POST", "/api/v1/campaigns", campaign_body("Hendon Calls"))
        .await;
    let id = c.body["id"].as_i64().unwrap();
    let started = app
        .json("POST", &format!("/api/v1/campaigns/{id}/start"), json!({}))
        .await;
    assert_eq!(started.status, 200, "{}", started.text);
    let mut pins = Vec::new();
    for phone in [VOLUNTEER, OTHER_VOLUNTEER] {
        let v = app
            .json(
                "POST",
                "/api/v1/volunteers",
                json!({"name": "Vic Volunteer", "phone": phone}),
            )
            .await;
        assert_eq!(v.status, 201, "{}", v.text);
        pins.push(v.body["pin"].as_str().unwrap().to_owned());
    }
    (pins.remove(0), pins.remove(0))
}

/// `POST /api/v1/volunteers/1/call` with an idempotency key.
async fn call_me(app: &TestApp, key: &str) -> common::app::Reply {
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/volunteers/1/call")
        .header("Authorization", format!("Bearer {}", app.token))
        .header("Idempotency-Key", key)
        .body(axum::body::Body::empty())
        .unwrap();
    app.send(req).await
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn text(app: &TestApp, n: u32, from: &str, body: &str) -> String {
    let sid = format!("SM{n:032x}");
    let r = app
        .webhook(
            "/webhooks/sms",
            &[
                ("AccountSid", "AC00000000000000000000000000000000"),
                ("MessageSid", &sid),
                ("From", from),
                ("To", "+442079460000"),
                ("Body", body),
            ],
        )
        .await;
    // Whatever happens, the provider gets a 200 and so never redelivers.
    assert_eq!(r.status, 200, "{}", r.text);
    r.text
}

both_backends! {
    async fn api_tokens_get_429_with_retry_after_after_their_burst(store) {
        let clock = LimitClock::manual();
        let app = app_with(
            store,
            LimitSettings { api_per_minute: 3, ..LimitSettings::default() },
            &clock,
            None,
        )
        .await;
        let other = ApiToken::generate();
        app.store.create_token("other organiser", &other).await.unwrap();
        let other_header = format!("Bearer {}", other.expose());

        for _ in 0..3 {
            assert_eq!(app.get("/api/v1/campaigns").await.status, 200);
        }
        let limited = app.get("/api/v1/campaigns").await;
        assert_eq!(limited.status, 429, "{}", limited.text);
        assert_eq!(limited.body["error"]["code"], "rate_limited");
        // 3 a minute: the next one is due in 20 seconds.
        assert_eq!(limited.headers["retry-after"], "20");

        // Another token has its own budget.
        let r = app.unauthenticated("GET", "/api/v1/campaigns", Some(&other_header)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        // An unknown token is still 401, not 429: nothing is spent before authentication.
        let r = app
            .unauthenticated("GET", "/api/v1/campaigns", Some("Bearer pbk_nonsense"))
            .await;
        assert_eq!(r.status, 401);

        clock.advance(Duration::from_secs(19));
        assert_eq!(app.get("/api/v1/campaigns").await.status, 429);
        clock.advance(Duration::from_secs(1));
        assert_eq!(app.get("/api/v1/campaigns").await.status, 200);
        assert_eq!(app.get("/api/v1/campaigns").await.status, 429);
    }

    async fn pin_attempts_per_number_are_limited_before_the_database_count(store) {
        let clock = LimitClock::manual();
        let app = app_with(
            store,
            LimitSettings { pin_per_hour: 60, pin_burst: 3, ..LimitSettings::default() },
            &clock,
            None,
        )
        .await;
        let (pin, other_pin) = phone_bank(&app).await;

        // Three tries come through (two wrong on the first call, one on the second) ...
        let mut first = Call::new(&app, 1, VOLUNTEER);
        let d = first.start().await;
        let d = first.press(&d, "000000").await;
        assert!(d.said().contains("not right"), "{}", d.raw);
        let d = first.press(&d, "000001").await;
        assert!(d.said().contains("not right"), "{}", d.raw);
        first.hang_up().await;
        let mut second = Call::new(&app, 2, VOLUNTEER);
        let d = second.start().await;
        let d = second.press(&d, "000002").await;
        assert!(d.said().contains("not right"), "{}", d.raw);
        // ... the fourth, even the right PIN, is turned away politely and not counted.
        let d = second.press(&d, &pin).await;
        assert!(d.hangs_up(), "{}", d.raw);
        assert!(d.said().contains("Too many PIN attempts"), "{}", d.raw);
        assert_eq!(
            count(&app.store, "select cast(sum(pin_failures) as bigint) from volunteer_sessions").await,
            3
        );
        assert_eq!(
            count(&app.store, "select count(*) from volunteer_sessions where state = 'ended'").await,
            2,
            "the first call hung up, the second was ended"
        );

        // Another volunteer's number is unaffected.
        let mut other = Call::new(&app, 3, OTHER_VOLUNTEER);
        let d = other.start().await;
        let d = other.press(&d, &other_pin).await;
        assert!(d.said().contains("Thanks"), "{}", d.raw);

        // One attempt a minute comes back.
        clock.advance(Duration::from_secs(60));
        let mut third = Call::new(&app, 4, VOLUNTEER);
        let d = third.start().await;
        let d = third.press(&d, &pin).await;
        assert!(d.said().contains("Thanks"), "{}", d.raw);
    }

    async fn a_flood_of_texts_is_dropped_but_stop_always_gets_through(store) {
        let clock = LimitClock::manual();
        let app = app_with(
            store,
            LimitSettings { sms_per_minute: 2, ..LimitSettings::default() },
            &clock,
            None,
        )
        .await;
        load_seats(&app.store).await;
        let flooder = "+447700900666";
        // Two texts are within the budget: HELP is answered.
        assert!(text(&app, 1, flooder, "hello").await.contains("<Response"));
        assert!(text(&app, 2, flooder, "HELP").await.contains("<Message>"));
        // The third is dropped: an empty 200, no reply.
        let dropped = text(&app, 3, flooder, "HELP").await;
        assert!(!dropped.contains("<Message>"), "{dropped}");
        // STOP is never limited.
        text(&app, 4, flooder, "Stop.").await;
        assert_eq!(
            count(&app.store, &format!("select count(*) from suppressions where phone = '{flooder}'")).await,
            1
        );
        // START is limited like any other text: still opted out.
        text(&app, 5, flooder, "START").await;
        assert_eq!(
            count(&app.store, &format!("select count(*) from suppressions where phone = '{flooder}'")).await,
            1
        );
        // Another sender is unaffected.
        assert!(text(&app, 6, "+447700900667", "HELP").await.contains("<Message>"));
        // After the interval, the sender is heard again.
        clock.advance(Duration::from_secs(30));
        text(&app, 7, flooder, "START").await;
        assert_eq!(
            count(&app.store, &format!("select count(*) from suppressions where phone = '{flooder}'")).await,
            0
        );
        assert!(app.store.suppression(&PhoneNumber::from_e164(flooder).unwrap()).await.unwrap().is_none());
    }

    async fn call_creation_is_paced_to_the_accounts_calls_per_second(store) {
        let provider = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(CALLS))
            .respond_with(NewSid::default())
            .mount(&provider)
            .await;
        let rest = || {
            RestClient::new(
                &provider.uri(),
                "AC00000000000000000000000000000000",
                SecretString::from("token"),
            )
        };
        let clock = LimitClock::manual();
        let app = app_with(
            store.clone(),
            LimitSettings {
                calls_per_second: 1,
                call_wait: Duration::from_secs(5),
                ..LimitSettings::default()
            },
            &clock,
            Some(rest()),
        )
        .await;
        phone_bank(&app).await;
        // Three call-backs at once: each waits for its slot on the limiter's clock.
        for key in ["a", "b", "c"] {
            let r = call_me(&app, key).await;
            assert_eq!(r.status, 202, "{}", r.text);
            assert_eq!(r.body["status"], "placed");
        }
        assert_eq!(provider.received_requests().await.unwrap().len(), 3);
        assert_eq!(clock.elapsed(), Duration::from_secs(2), "one call per second");

        // With no time to wait, the second call in the same second is refused unsent.
        let clock = LimitClock::manual();
        let app = app_with(
            store,
            LimitSettings {
                calls_per_second: 1,
                call_wait: Duration::ZERO,
                ..LimitSettings::default()
            },
            &clock,
            Some(rest()),
        )
        .await;
        assert_eq!(call_me(&app, "d").await.status, 202);
        let refused = call_me(&app, "e").await;
        assert_eq!(refused.status, 429, "{}", refused.text);
        assert_eq!(refused.body["error"]["code"], "rate_limited");
        assert_eq!(refused.headers["retry-after"], "1");
        assert_eq!(provider.received_requests().await.unwrap().len(), 4, "nothing sent");
        // Nothing recorded either: the same idempotency key places the call later.
        clock.advance(Duration::from_secs(1));
        let retried = call_me(&app, "e").await;
        assert_eq!(retried.status, 202, "{}", retried.text);
        assert_eq!(retried.body["status"], "placed");
        assert_eq!(provider.received_requests().await.unwrap().len(), 5);
        assert_eq!(count(&app.store, "select count(*) from callback_requests").await, 5);
    }
}
