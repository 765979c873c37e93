//! Call-backs: the server rings a volunteer through the provider's REST API (wiremock
//! serving the fixtures in `wiremock-fixtures/`), and the volunteer loop runs when they
//! answer. Both backends.

mod common;

use std::time::Duration;

use common::app::{TestApp, campaign_body};
use common::phone::{CAMPAIGN_NUMBER, Call, tuesday_evening, voice_settings};
use common::{import_members_str, load_seats};
use phonebank::domain::Clock;
use phonebank::http::AppState;
use phonebank::store::Store;
use phonebank::telephony::RestClient;
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SID: &str = "AC00000000000000000000000000000000";
const VOLUNTEER: &str = "+442079460500";
const CALLS: &str = "/2010-04-01/Accounts/AC00000000000000000000000000000000/Calls.json";

fn fixture(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(format!("wiremock-fixtures/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn respond(status: u16, name: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(fixture(name))
}

struct Setup {
    app: TestApp,
    provider: MockServer,
    volunteer_id: i64,
    pin: String,
}

async fn setup(store: Store) -> Setup {
    let provider = MockServer::start().await;
    load_seats(&store).await;
    import_members_str(
        &store,
        "member_id,name,phone,constituency\nM1,Alex Example,07700 900123,Hendon\n",
    )
    .await;
    let rest = RestClient::new(&provider.uri(), SID, SecretString::from("token"))
        .with_backoff(Duration::from_millis(5), 3);
    let state = AppState::new(store, voice_settings())
        .with_clock(Clock::manual(tuesday_evening()))
        .with_rest(rest);
    let app = TestApp::with_state(state).await;
    let c = app
        .json("POST", "/api/v1/campaigns", campaign_body("Hendon Calls"))
        .await;
    let id = c.body["id"].as_i64().unwrap();
    app.json("POST", &format!("/api/v1/campaigns/{id}/start"), json!({}))
        .await;
    let v = app
        .json(
            "POST",
            "/api/v1/volunteers",
            json!({"name": "Vic Volunteer", "phone": VOLUNTEER}),
        )
        .await;
    Setup {
        app,
        provider,
        volunteer_id: v.body["volunteer"]["id"].as_i64().unwrap(),
        pin: v.body["pin"].as_str().unwrap().to_owned(),
    }
}

impl Setup {
    async fn call_me(&self, key: Option<&str>) -> common::app::Reply {
        let mut req = axum::http::Request::builder()
            .method("POST")
            .uri(format!("/api/v1/volunteers/{}/call", self.volunteer_id))
            .header("Authorization", format!("Bearer {}", self.app.token));
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        self.app
            .send(req.body(axum::body::Body::empty()).unwrap())
            .await
    }

    async fn requests(&self) -> Vec<Request> {
        self.provider.received_requests().await.unwrap_or_default()
    }
}

fn form(req: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

fn param<'a>(f: &'a [(String, String)], k: &str) -> Option<&'a str> {
    f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

both_backends! {
    async fn a_call_back_rings_the_volunteer_and_runs_the_loop_when_answered(store) {
        let s = setup(store).await;
        Mock::given(method("POST"))
            .and(path(CALLS))
            .respond_with(respond(201, "create-call-201.json"))
            .expect(1)
            .mount(&s.provider)
            .await;
        let r = s.call_me(Some("evening-1")).await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.body["status"], "placed");
        assert_eq!(r.body["call_sid"], "CA00000000000000000000000000000001");
        // The same request again: the first answer, no second call.
        let again = s.call_me(Some("evening-1")).await;
        assert_eq!(again.status, 202);
        assert_eq!(again.body["id"], r.body["id"]);

        let reqs = s.requests().await;
        assert_eq!(reqs.len(), 1);
        let f = form(&reqs[0]);
        assert_eq!(param(&f, "To"), Some(VOLUNTEER));
        assert_eq!(param(&f, "From"), Some(CAMPAIGN_NUMBER));
        let url = param(&f, "Url").unwrap().to_owned();
        assert!(url.starts_with("https://pb.example.org/webhooks/voice?cb="), "{url}");
        assert!(param(&f, "StatusCallback").unwrap().contains("/webhooks/voice/status?cb="));
        let auth = reqs[0].headers.get("authorization").unwrap().to_str().unwrap();
        assert!(auth.starts_with("Basic "), "HTTP basic auth");

        // The volunteer answers: the provider fetches Url for TwiML; the loop runs.
        let mut call = Call::new(&s.app, 1, CAMPAIGN_NUMBER);
        call.to = VOLUNTEER.into();
        call.sid = "CA00000000000000000000000000000001".into();
        let first = call.post(&url, &[("Direction", "outbound-api")]).await;
        let first = call.settle(first).await;
        assert!(first.said().contains("PIN"), "{}", first.raw);
        let next = call.press(&first, &s.pin).await;
        assert!(next.said().contains("Next: Alex Example from Hendon"), "{}", next.raw);
        let dialling = call.press(&next, "1").await;
        assert_eq!(dialling.dial().unwrap().attr("callerId"), Some(CAMPAIGN_NUMBER));
    }

    async fn a_refused_call_back_is_reported_with_the_providers_code_and_not_retried(store) {
        let s = setup(store).await;
        Mock::given(method("POST"))
            .and(path(CALLS))
            .respond_with(respond(400, "error-21211-400.json"))
            .expect(1)
            .mount(&s.provider)
            .await;
        let r = s.call_me(None).await;
        assert_eq!(r.status, 502, "{}", r.text);
        assert_eq!(r.body["error"]["code"], "provider_rejected");
        assert!(r.body["error"]["message"].as_str().unwrap().contains("21211"), "{}", r.text);
        let status: String = sqlx::query_scalar("select status from callback_requests")
            .fetch_one(s.app.store.pool()).await.unwrap();
        assert_eq!(status, "failed");
        let code: Option<i64> = sqlx::query_scalar("select error_code from callback_requests")
            .fetch_one(s.app.store.pool()).await.unwrap();
        assert_eq!(code, Some(21211));
    }

    async fn bad_credentials_are_a_clear_upstream_error(store) {
        let s = setup(store).await;
        Mock::given(method("POST"))
            .and(path(CALLS))
            .respond_with(respond(401, "error-20003-401.json"))
            .expect(1)
            .mount(&s.provider)
            .await;
        let r = s.call_me(None).await;
        assert_eq!(r.status, 502, "{}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("20003"));
    }

    async fn too_many_requests_is_retried_with_backoff_until_placed(store) {
        let s = setup(store).await;
        Mock::given(method("POST"))
            .and(path(CALLS))
            .respond_with(respond(429, "error-20429-429.json"))
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&s.provider)
            .await;
        Mock::given(method("POST"))
            .and(path(CALLS))
            .respond_with(respond(201, "create-call-201.json"))
            .with_priority(2)
            .mount(&s.provider)
            .await;
        let r = s.call_me(None).await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.body["status"], "placed");
        assert_eq!(s.requests().await.len(), 3);
    }

    async fn a_server_error_is_uncertain_and_never_retried(store) {
        let s = setup(store).await;
        Mock::given(method("POST"))
            .and(path(CALLS))
            .respond_with(respond(500, "error-500.json"))
            .expect(1)
            .mount(&s.provider)
            .await;
        let r = s.call_me(Some("k")).await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.body["status"], "uncertain");
        // Asking again with the same key does not risk a second call either.
        let again = s.call_me(Some("k")).await;
        assert_eq!(again.body["status"], "uncertain");
        assert_eq!(s.requests().await.len(), 1);
    }

    async fn a_volunteer_texting_call_is_rung_back_once(store) {
        let s = setup(store).await;
        Mock::given(method("POST"))
            .and(path(CALLS))
            .and(body_string_contains("To=%2B442079460500"))
            .respond_with(respond(201, "create-call-201.json"))
            .expect(1)
            .mount(&s.provider)
            .await;
        let text = [
            ("MessageSid", "SM00000000000000000000000000000001"),
            ("AccountSid", SID),
            ("From", VOLUNTEER),
            ("To", CAMPAIGN_NUMBER),
            ("Body", " Call! "),
            ("NumMedia", "0"),
        ];
        let r = s.app.webhook("/webhooks/sms", &text).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.text.contains("<Message>Calling you now.</Message>"), "{}", r.text);
        // The provider redelivers the same message: no second call, no second reply.
        let r = s.app.webhook("/webhooks/sms", &text).await;
        assert_eq!(r.status, 200);
        assert!(!r.text.contains("<Message>"), "{}", r.text);
        assert_eq!(s.requests().await.len(), 1);
    }

    async fn call_backs_without_credentials_say_so(store) {
        load_seats(&store).await;
        let app = TestApp::with_state(AppState::new(store, phonebank::config::Settings::default())).await;
        let v = app
            .json("POST", "/api/v1/volunteers", json!({"name": "Vic", "phone": VOLUNTEER}))
            .await;
        let id = v.body["volunteer"]["id"].as_i64().unwrap();
        let r = app.json("POST", &format!("/api/v1/volunteers/{id}/call"), json!(null)).await;
        assert_eq!(r.status, 503, "{}", r.text);
        assert_eq!(r.body["error"]["code"], "telephony_not_configured");
        let r = app.json("POST", "/api/v1/volunteers/999/call", json!(null)).await;
        assert_eq!(r.status, 503, "configuration is checked first: {}", r.text);
    }
}

#[tokio::test]
async fn a_slow_provider_times_out_as_uncertain() {
    let provider = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS))
        .respond_with(respond(201, "create-call-201.json").set_delay(Duration::from_secs(3)))
        .mount(&provider)
        .await;
    let rest = RestClient::new(&provider.uri(), SID, SecretString::from("token"))
        .with_timeout(Duration::from_millis(300));
    let got = rest
        .create_call(&phonebank::telephony::NewCall {
            to: VOLUNTEER,
            from: CAMPAIGN_NUMBER,
            url: "https://pb.example.org/webhooks/voice?cb=1",
            status_callback: "https://pb.example.org/webhooks/voice/status?cb=1",
            timeout_secs: 30,
        })
        .await;
    assert!(
        matches!(got, Err(phonebank::telephony::RestError::Uncertain(_))),
        "{got:?}"
    );
    assert_eq!(provider.received_requests().await.unwrap().len(), 1);
}
