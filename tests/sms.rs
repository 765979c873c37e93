//! Survey texts end to end, on SQLite and PostgreSQL: the organiser queues a question,
//! the sender works through the outbox against the provider's REST API (wiremock serving
//! `wiremock-fixtures/`), members reply through the signed SMS webhook, status callbacks
//! arrive in any order. Pacing is asserted by counting requests against governor's fake
//! clock, never by timing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::app::{Reply, TestApp, campaign_body};
use common::phone::{CAMPAIGN_NUMBER, Call, tuesday_evening, voice_settings};
use common::{import_members_str, load_seats};
use governor::clock::FakeRelativeClock;
use phonebank::domain::Clock;
use phonebank::http::AppState;
use phonebank::sms_worker::{Pass, SmsSender};
use phonebank::store::Store;
use phonebank::telephony::RestClient;
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SID: &str = "AC00000000000000000000000000000000";
const MESSAGES: &str = "/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json";
const HENDON: &str = "E14001279";
const BARNET: &str = "E14001169";

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("wiremock-fixtures/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn respond(status: u16, name: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(fixture(name))
}

fn form(req: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

fn param(req: &Request, k: &str) -> Option<String> {
    form(req).into_iter().find(|(n, _)| n == k).map(|(_, v)| v)
}

/// `To=` as it appears in a form body, for matching one recipient.
fn to_matcher(phone: &str) -> wiremock::matchers::BodyContainsMatcher {
    body_string_contains(format!("To=%2B{}&", &phone[1..]))
}

/// A phone bank with texting configured: members, an active campaign, a provider.
struct Texts {
    app: TestApp,
    state: AppState,
    provider: MockServer,
    clock: Clock,
    campaign_id: i64,
}

/// Members as (id, name, phone, seat name).
async fn texts(store: Store, members: &[(String, String, String, &str)]) -> Texts {
    let provider = MockServer::start().await;
    load_seats(&store).await;
    let mut csv = String::from("member_id,name,phone,constituency\n");
    for (id, name, phone, seat) in members {
        csv.push_str(&format!("{id},{name},{phone},{seat}\n"));
    }
    let report = import_members_str(&store, &csv).await;
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let clock = Clock::manual(tuesday_evening());
    let rest = RestClient::new(&provider.uri(), SID, SecretString::from("token"))
        .with_backoff(Duration::from_millis(2), 3);
    let state = AppState::new(store, voice_settings())
        .with_clock(clock.clone())
        .with_rest(rest);
    let app = TestApp::with_state(state.clone()).await;
    let c = app
        .json("POST", "/api/v1/campaigns", campaign_body("Hendon Calls"))
        .await;
    assert_eq!(c.status, 201, "{}", c.text);
    let campaign_id = c.body["id"].as_i64().unwrap();
    let s = app
        .json(
            "POST",
            &format!("/api/v1/campaigns/{campaign_id}/start"),
            json!({}),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.text);
    // Accept every text not matched by a more specific mock, each with its own sid.
    let counter = Arc::new(AtomicU64::new(0));
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(move |req: &Request| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let mut body = fixture("create-message-201.json");
            body["sid"] = json!(format!("SM{n:032x}"));
            body["to"] = json!(param(req, "To"));
            ResponseTemplate::new(201).set_body_json(body)
        })
        .with_priority(10)
        .mount(&provider)
        .await;
    Texts {
        app,
        state,
        provider,
        clock,
        campaign_id,
    }
}

/// `n` members on 07700 900xxx, spread over three Barnet seats.
fn few(n: usize) -> Vec<(String, String, String, &'static str)> {
    let seats = ["Hendon", "Finchley and Golders Green", "Chipping Barnet"];
    (0..n)
        .map(|i| {
            (
                format!("M{i}"),
                format!("Member {i}"),
                format!("+447700900{i:03}"),
                seats[i % 3],
            )
        })
        .collect()
}

impl Texts {
    fn sender(&self, per_second: u32) -> (SmsSender<FakeRelativeClock>, FakeRelativeClock) {
        let fake = FakeRelativeClock::default();
        (
            SmsSender::with_clock(self.state.clone(), per_second, fake.clone()),
            fake,
        )
    }

    async fn send(&self, body: Value) -> Reply {
        self.app
            .json(
                "POST",
                &format!("/api/v1/campaigns/{}/sms/send", self.campaign_id),
                body,
            )
            .await
    }

    async fn send_all(&self) -> Reply {
        let r = self.send(json!({"audience": {"kind": "all"}})).await;
        assert_eq!(r.status, 202, "{}", r.text);
        r
    }

    async fn summary(&self) -> Value {
        let r = self
            .app
            .get(&format!("/api/v1/campaigns/{}/sms", self.campaign_id))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }

    /// Every recipient of a Create Message request, in order.
    async fn texted(&self) -> Vec<String> {
        self.provider
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == MESSAGES)
            .map(|r| param(r, "To").unwrap())
            .collect()
    }

    /// A member texts the campaign number.
    async fn text_in(&self, sid: &str, from: &str, body: &str) -> Reply {
        let r = self
            .app
            .webhook(
                "/webhooks/sms",
                &[
                    ("AccountSid", SID),
                    ("ApiVersion", "2010-04-01"),
                    ("MessageSid", sid),
                    ("SmsMessageSid", sid),
                    ("SmsSid", sid),
                    ("From", from),
                    ("To", CAMPAIGN_NUMBER),
                    ("Body", body),
                    ("NumMedia", "0"),
                    ("NumSegments", "1"),
                    ("SmsStatus", "received"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r
    }

    async fn answers(&self) -> Vec<(String, String, String, String)> {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "select m.external_id, a.question_code, a.option_code, a.source from answers a \
             join members m on m.id = a.member_id order by m.external_id, a.id",
        )
        .fetch_all(self.app.store.pool())
        .await
        .unwrap();
        rows
    }
}

fn messages(reply: &Reply) -> Vec<String> {
    let doc = common::phone::Doc::parse(&reply.text);
    doc.verbs
        .iter()
        .filter(|v| v.name == "Message")
        .map(|v| v.text.clone())
        .collect()
}

fn sms_sid(n: u64) -> String {
    format!("SM{n:032x}")
}

/// Pass after pass, advancing the pacer's clock a second whenever it runs dry, until a
/// pass ends without being limited.
async fn drain(sender: &SmsSender<FakeRelativeClock>, fake: &FakeRelativeClock) -> Vec<Pass> {
    let mut passes = Vec::new();
    for _ in 0..10_000 {
        let p = sender.pass().await.unwrap();
        let limited = p.limited;
        passes.push(p);
        if !limited {
            return passes;
        }
        fake.advance(Duration::from_secs(1));
    }
    panic!("the sender never finished");
}

both_backends! {
    async fn opt_out_keywords_suppress_everywhere_and_start_reverses_with_an_audit_record(store) {
        let t = texts(store, &few(6)).await;
        for (i, body) in ["STOP", "stop.", " Unsubscribe ", "OPTOUT"].iter().enumerate() {
            let r = t.text_in(&sms_sid(100 + i as u64), &format!("+447700900{i:03}"), body).await;
            assert!(messages(&r).is_empty(), "no reply to STOP: {}", r.text);
        }
        t.text_in(&sms_sid(104), "+447700900004", "We must stop this bill!").await;
        for i in 0..6 {
            let r = t.app.json("POST", "/api/v1/suppressions/lookup",
                json!({"phone": format!("+447700900{i:03}")})).await;
            assert_eq!(r.body["suppressed"], i < 4, "member {i}: {}", r.text);
        }
        let listed = t.app.get("/api/v1/suppressions?source=sms").await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        assert_eq!(listed.body.as_array().unwrap().len(), 4);

        // START re-opts in, with an audit record of both changes.
        let r = t.text_in(&sms_sid(105), "+447700900003", "START").await;
        assert_eq!(messages(&r).len(), 1, "{}", r.text);
        let r = t.app.json("POST", "/api/v1/suppressions/lookup",
            json!({"phone": "07700 900003"})).await;
        assert_eq!(r.body["suppressed"], false);
        let actions: Vec<&str> = r.body["audit"].as_array().unwrap().iter()
            .map(|a| a["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["add", "remove"]);
        assert_eq!(r.body["audit"][1]["source"], "sms");

        // A suppressed number gets no text...
        let sent = t.send_all().await;
        assert_eq!(sent.body["skipped_suppressed"], 3, "{}", sent.text);
        assert_eq!(sent.body["queued"], 3, "{}", sent.text);
        let (sender, fake) = t.sender(10);
        drain(&sender, &fake).await;
        let mut texted = t.texted().await;
        texted.sort();
        assert_eq!(texted, ["+447700900003", "+447700900004", "+447700900005"]);

        // ... and no call: a volunteer's first member is the first one not opted out.
        let v = t.app.json("POST", "/api/v1/volunteers",
            json!({"name": "Vic", "phone": "020 7946 0500"})).await;
        let mut call = Call::new(&t.app, 1, "+442079460500");
        let doc = call.start().await;
        let doc = call.press(&doc, v.body["pin"].as_str().unwrap()).await;
        let said = doc.said();
        assert!(["Next: Member 3 ", "Next: Member 4 ", "Next: Member 5 "].iter().any(|m| said.contains(m)),
            "{}", doc.raw);
    }

    async fn replies_are_stored_once_as_answers_and_unclear_ones_go_to_review(store) {
        let mut members = few(7);
        // M7 and M8 share a household line; +447700900999 is nobody's.
        members.push(("M7".into(), "Pat Shared".into(), "+447700900500".into(), "Hendon"));
        members.push(("M8".into(), "Sam Shared".into(), "+447700900500".into(), "Hendon"));
        let t = texts(store, &members).await;
        let sent = t.send_all().await;
        assert_eq!(sent.body["queued"], 8, "{}", sent.text);
        assert_eq!(sent.body["skipped_shared_number"], 1, "one text per number: {}", sent.text);
        assert_eq!(sent.body["question"], "support");
        let (sender, fake) = t.sender(100);
        let passes = drain(&sender, &fake).await;
        assert_eq!(passes.iter().map(|p| p.sent).sum::<u64>(), 8);

        let n = |i: u64| format!("+447700900{i:03}");
        let r = t.text_in(&sms_sid(1), &n(0), "Y").await;
        assert_eq!(messages(&r), ["Thank you! We have recorded your answer: Yes. Reply STOP to opt out."]);
        t.text_in(&sms_sid(2), &n(1), "yes 👍").await;
        t.text_in(&sms_sid(3), &n(2), "2.").await;
        let r = t.text_in(&sms_sid(4), &n(3), "1 or 2").await;
        assert_eq!(messages(&r).len(), 1, "asked to answer again: {}", r.text);
        t.text_in(&sms_sid(5), &n(4), "12").await;
        t.text_in(&sms_sid(6), &n(5), "n").await;
        // The same MessageSid delivered twice: one answer, and no second confirmation.
        let again = t.text_in(&sms_sid(6), &n(5), "n").await;
        assert!(messages(&again).is_empty(), "{}", again.text);
        t.text_in(&sms_sid(7), "+447700900500", "1").await;
        t.text_in(&sms_sid(8), "+447700900999", "1").await;
        // M6 changes their mind after answering: not guessed over the first answer.
        t.text_in(&sms_sid(9), &n(6), "3").await;
        t.text_in(&sms_sid(10), &n(6), "1").await;

        let answers = t.answers().await;
        let s = |a: &str, b: &str, c: &str, d: &str| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned());
        assert_eq!(answers, vec![
            s("M0", "support", "yes", "sms"),
            s("M1", "support", "yes", "sms"),
            s("M2", "support", "no", "sms"),
            s("M5", "support", "no", "sms"),
            s("M6", "support", "unsure", "sms"),
        ]);

        let r = t.app.get("/api/v1/sms/reviews").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let items = r.body.as_array().unwrap().clone();
        let reasons: Vec<(&str, &str)> = items.iter()
            .map(|i| (i["body"].as_str().unwrap(), i["reason"].as_str().unwrap())).collect();
        assert_eq!(reasons, [
            ("1 or 2", "ambiguous"),
            ("12", "ambiguous"),
            ("1", "shared_number"),
            ("1", "unknown_number"),
            ("1", "no_open_survey"),
        ]);
        assert_eq!(items[2]["candidates"].as_array().unwrap().len(), 2);
        assert_eq!(items[0]["member_id"], "M3");
        assert_eq!(items[0]["campaign_id"], t.campaign_id);

        // M4 clears up their "12": the answer is stored and their review item closes.
        t.text_in(&sms_sid(11), &n(4), "2").await;
        let open = t.app.get("/api/v1/sms/reviews?state=open").await;
        assert_eq!(open.body.as_array().unwrap().len(), 4, "{}", open.text);

        // An organiser resolves the shared-number reply onto Sam, and dismisses another.
        let shared = items[2]["id"].as_i64().unwrap();
        let r = t.app.json("POST", &format!("/api/v1/sms/reviews/{shared}/resolve"),
            json!({"member_id": "M8", "option": "yes", "note": "Sam phoned to confirm"})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["state"], "resolved");
        assert_eq!(r.body["member_id"], "M8");
        let r = t.app.json("POST", &format!("/api/v1/sms/reviews/{shared}/resolve"),
            json!({"member_id": "M8", "option": "yes"})).await;
        assert_eq!(r.status, 409, "{}", r.text);
        assert_eq!(r.body["error"]["code"], "review_closed");
        let unknown = items[3]["id"].as_i64().unwrap();
        let r = t.app.json("POST", &format!("/api/v1/sms/reviews/{unknown}/dismiss"),
            json!({"note": "not one of ours"})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["state"], "dismissed");
        let ambiguous = items[0]["id"].as_i64().unwrap();
        let r = t.app.json("POST", &format!("/api/v1/sms/reviews/{ambiguous}/resolve"),
            json!({"member_id": "M3", "option": "maybe"})).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.body["error"]["fields"][0]["field"], "option");

        let answers = t.answers().await;
        assert!(answers.contains(&s("M4", "support", "no", "sms")), "{answers:?}");
        assert!(answers.contains(&s("M8", "support", "yes", "organiser")), "{answers:?}");
        assert_eq!(answers.len(), 7);
        let summary = t.summary().await;
        assert_eq!(summary["answered"], 6, "{summary}");

        // M3's survey is still open, but a reply after the window is not matched to it.
        t.clock.set(tuesday_evening() + jiff::SignedDuration::from_hours(73));
        let r = t.text_in(&sms_sid(12), &n(3), "1").await;
        assert!(messages(&r).is_empty(), "{}", r.text);
        assert_eq!(t.answers().await.len(), 7);
        let open = t.app.get("/api/v1/sms/reviews").await;
        let last = open.body.as_array().unwrap().last().unwrap().clone();
        assert_eq!((last["body"].as_str(), last["reason"].as_str()), (Some("1"), Some("no_open_survey")));
    }

    async fn status_callbacks_never_regress_and_adopt_a_text_whose_answer_was_lost(store) {
        let t = texts(store, &few(2)).await;
        // The provider answers 500 for member 1: maybe created, maybe not.
        Mock::given(method("POST")).and(path(MESSAGES)).and(to_matcher("+447700900001"))
            .respond_with(respond(500, "error-500.json")).with_priority(1)
            .mount(&t.provider).await;
        t.send_all().await;
        let (sender, fake) = t.sender(10);
        let passes = drain(&sender, &fake).await;
        assert_eq!(passes.iter().map(|p| (p.sent, p.uncertain)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)), (1, 1));
        // Never resent, however many passes run.
        t.clock.set(tuesday_evening() + jiff::SignedDuration::from_mins(30));
        drain(&sender, &fake).await;
        assert_eq!(t.texted().await.len(), 2, "one request per member");

        let status = |url: String, sid: String, status: &'static str| {
            let app = &t.app;
            async move {
                app.webhook(&url, &[("AccountSid", SID), ("MessageSid", &sid), ("SmsSid", &sid),
                    ("MessageStatus", status), ("SmsStatus", status), ("From", CAMPAIGN_NUMBER),
                    ("To", "+447700900000"), ("ApiVersion", "2010-04-01")]).await
            }
        };
        let reqs = t.provider.received_requests().await.unwrap();
        let callback_for = |to: &str| {
            let req = reqs.iter().find(|r| param(r, "To").as_deref() == Some(to)).unwrap();
            param(req, "StatusCallback").unwrap()
        };
        let callback0 = callback_for("+447700900000");
        let callback1 = callback_for("+447700900001");
        assert!(callback0.starts_with("https://pb.example.org/webhooks/sms/status?o="), "{callback0}");
        let sid0 = sms_sid(1);
        for s in ["sent", "delivered", "sent", "queued", "delivered"] {
            let r = status(callback0.clone(), sid0.clone(), s).await;
            assert_eq!(r.status, 204, "{}", r.text);
        }
        // The lost one: its first callback names the sid the provider gave it.
        let r = status(callback1.clone(), sms_sid(77), "delivered").await;
        assert_eq!(r.status, 204, "{}", r.text);
        let r = status(callback1, sms_sid(77), "sent").await;
        assert_eq!(r.status, 204, "{}", r.text);
        let summary = t.summary().await;
        assert_eq!(summary["sent"], 2, "{summary}");
        assert_eq!(summary["uncertain"], 0, "{summary}");
        assert_eq!(summary["delivery"], json!({"delivered": 2}), "{summary}");

        // Malformed and unsigned callbacks change nothing.
        let r = t.app.webhook("/webhooks/sms/status?o=1", &[("MessageStatus", "failed")]).await;
        assert_eq!(r.status, 400);
        let r = t.app.webhook_signed("/webhooks/sms/status?o=1",
            &[("MessageSid", &sid0), ("MessageStatus", "failed")], Some("forged")).await;
        assert_eq!(r.status, 403);
        let r = t.app.webhook("/webhooks/sms/status?o=zzz",
            &[("MessageSid", "SMnobody"), ("MessageStatus", "read")]).await;
        assert_eq!(r.status, 204);
        assert_eq!(t.summary().await["delivery"], json!({"delivered": 2}));
    }

    async fn provider_errors_are_handled_per_code(store) {
        let t = texts(store, &few(7)).await;
        let reply = |phone: &str, status: u16, file: &str| {
            Mock::given(method("POST")).and(path(MESSAGES)).and(to_matcher(phone))
                .respond_with(respond(status, file)).with_priority(1)
        };
        reply("+447700900001", 400, "error-21610-400.json").mount(&t.provider).await;
        reply("+447700900002", 400, "error-21211-400.json").mount(&t.provider).await;
        reply("+447700900003", 400, "error-21614-400.json").mount(&t.provider).await;
        // Busy twice, then accepted: retried by the client with backoff.
        reply("+447700900004", 429, "error-20429-429.json").up_to_n_times(2).mount(&t.provider).await;
        // Busy for longer than the client retries: back in the queue for later.
        reply("+447700900005", 429, "error-20429-429.json").up_to_n_times(3)
            .mount(&t.provider).await;
        t.send_all().await;
        let (sender, fake) = t.sender(50);
        let first = sender.pass().await.unwrap();
        assert_eq!(first.retry_later, 1, "{first:?}");
        assert!(first.wait.is_some(), "the sender slows down: {first:?}");
        drain(&sender, &fake).await;
        let summary = t.summary().await;
        assert_eq!(summary["reasons"]["failed:unsubscribed"], 1, "{summary}");
        assert_eq!(summary["reasons"]["failed:invalid_number"], 1, "{summary}");
        assert_eq!(summary["reasons"]["failed:not_mobile"], 1, "{summary}");
        assert_eq!(summary["queued"], 1, "member 5 waits for its retry: {summary}");
        assert_eq!(summary["sent"], 3, "{summary}");

        // 21610: suppressed everywhere, by the carrier.
        let r = t.app.json("POST", "/api/v1/suppressions/lookup", json!({"phone": "+447700900001"})).await;
        assert_eq!(r.body["suppressed"], true, "{}", r.text);
        assert_eq!(r.body["suppression"]["source"], "carrier");

        // The retry, once its time has come, goes out.
        t.clock.set(tuesday_evening() + jiff::SignedDuration::from_mins(1));
        drain(&sender, &fake).await;
        let summary = t.summary().await;
        assert_eq!(summary["queued"], 0, "{summary}");
        assert_eq!(summary["sent"], 4, "{summary}");
        let texted = t.texted().await;
        let count = |p: &str| texted.iter().filter(|x| *x == p).count();
        assert_eq!(count("+447700900004"), 3, "two 429s and the accepted one");
        assert_eq!(count("+447700900005"), 4, "three 429s, then the retry");
        assert_eq!(count("+447700900001"), 1, "21610 is not retried");

        // The next question skips the bad numbers and the unsubscribed one.
        let r = t.send(json!({"question": "help", "audience": {"kind": "all"}})).await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.body["skipped_bad_number"], 2, "{}", r.text);
        assert_eq!(r.body["skipped_suppressed"], 1, "{}", r.text);
        assert_eq!(r.body["queued"], 4, "{}", r.text);
    }

    async fn ten_thousand_members_paced_outside_hours_deferred_restart_safe(store) {
        // Ten drama blocks of 1,000 give 10,000 distinct fictional numbers.
        let blocks = ["1134960", "1144960", "1154960", "1164960", "1174960", "1184960",
                      "1214960", "1314960", "1414960", "1514960"];
        let seats = ["Hendon", "Finchley and Golders Green", "Chipping Barnet"];
        let members: Vec<(String, String, String, &str)> = (0..10_000)
            .map(|i| (format!("M{i:05}"), format!("Member {i}"),
                      format!("+44{}{:03}", blocks[i / 1000], i % 1000), seats[i % 3]))
            .collect();
        let t = texts(store, &members).await;
        // Chipping Barnet members "live" in Tokyo: 03:00 there, outside calling hours.
        let r = t.app.json("PATCH", &format!("/api/v1/seats/{BARNET}"), json!({"time_zone": "Asia/Tokyo"})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let tokyo: std::collections::HashSet<String> =
            members.iter().filter(|m| m.3 == "Chipping Barnet").map(|m| m.2.clone()).collect();
        let suppressed: Vec<String> = members.iter().step_by(997).map(|m| m.2.clone()).collect();
        for p in &suppressed {
            let r = t.app.json("POST", "/api/v1/suppressions", json!({"phone": p, "reason": "asked"})).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
        let sent = t.send_all().await;
        let suppressed_now = suppressed.len() as i64;
        assert_eq!(sent.body["skipped_suppressed"], suppressed_now, "{}", sent.text);
        assert_eq!(sent.body["queued"], 10_000 - suppressed_now, "{}", sent.text);
        // Asking again queues nobody twice.
        let again = t.send_all().await;
        assert_eq!(again.body["queued"], 0, "{}", again.text);
        assert_eq!(again.body["already_queued"], 10_000, "{}", again.text);

        // Sender A at 200 texts a second: each pass sends one second's worth, no more.
        let (a, fake_a) = t.sender(200);
        let mut passes = Vec::new();
        for _ in 0..10 {
            let p = a.pass().await.unwrap();
            assert!(p.limited, "{p:?}");
            passes.push(p.sent);
            fake_a.advance(Duration::from_secs(1));
        }
        assert_eq!(passes, vec![200; 10]);
        assert_eq!(t.texted().await.len(), 2000);
        // One more opts out mid-send: checked again right before their text.
        let late = members.iter().rev().find(|m| m.3 != "Chipping Barnet" && !suppressed.contains(&m.2)).unwrap().2.clone();
        t.text_in(&sms_sid(9_999_999), &late, "STOP").await;

        // A sender dies holding a batch it leased but never settled (killed mid-send).
        let now = t.clock.now().as_millisecond();
        let zones = vec!["Europe/London".to_owned()];
        let orphans = t.app.store.claim_texts(t.campaign_id, &zones, now, now + 60_000, 7).await.unwrap();
        assert_eq!(orphans.len(), 7);
        drop(a);

        // Sender B starts after the lease ran out; its fresh pacer allows one burst.
        t.clock.set(tuesday_evening() + jiff::SignedDuration::from_mins(2));
        let (b, fake_b) = t.sender(200);
        let passes = drain(&b, &fake_b).await;
        assert_eq!(passes[0].lost, 7, "{:?}", passes[0]);
        assert!(passes.iter().all(|p| p.sent <= 200), "never more than the rate");
        assert!(passes[..passes.len() - 1].iter().all(|p| p.sent == 200));

        let texted = t.texted().await;
        let unique: std::collections::HashSet<&String> = texted.iter().collect();
        assert_eq!(unique.len(), texted.len(), "nobody texted twice");
        assert!(texted.iter().all(|p| !tokyo.contains(p)), "nobody outside calling hours");
        assert!(texted.iter().all(|p| !suppressed.contains(p)), "no suppressed number");
        assert!(!texted.contains(&late), "the late opt-out was honoured");
        let orphan_phones: Vec<&String> = orphans.iter().map(|o| &o.phone).collect();
        assert!(texted.iter().all(|p| !orphan_phones.contains(&p)), "lost sends are not resent");
        let london_eligible = members.iter()
            .filter(|m| m.3 != "Chipping Barnet" && !suppressed.contains(&m.2))
            .count();
        assert_eq!(texted.len(), london_eligible - 7 - 1);

        let summary = t.summary().await;
        assert_eq!(summary["uncertain"], 7, "{summary}");
        assert_eq!(summary["reasons"]["uncertain:worker_lost"], 7, "{summary}");
        assert_eq!(summary["sent"], texted.len(), "{summary}");
        let tokyo_queued = members.iter()
            .filter(|m| m.3 == "Chipping Barnet" && !suppressed.contains(&m.2)).count();
        assert_eq!(summary["queued"], tokyo_queued, "deferred, not dropped: {summary}");
        assert_eq!(summary["skipped"], suppressed_now + 1, "{summary}");

        // Tokyo wakes up (10:30 there): the deferred texts go out.
        t.clock.set("2026-12-09T01:30:00Z".parse().unwrap());
        drain(&b, &fake_b).await;
        assert_eq!(t.summary().await["queued"], 0);
        assert_eq!(t.texted().await.len(), london_eligible - 8 + tokyo_queued);
    }

    async fn unreached_means_called_without_an_answer(store) {
        let t = texts(store, &few(3)).await;
        let v = t.app.json("POST", "/api/v1/volunteers",
            json!({"name": "Vic", "phone": "020 7946 0500"})).await;
        let mut call = Call::new(&t.app, 1, "+442079460500");
        let doc = call.start().await;
        let doc = call.press(&doc, v.body["pin"].as_str().unwrap()).await;
        let said = doc.said();
        let dialled = (0..3).find(|i| said.contains(&format!("Next: Member {i} "))).expect("a member announced");
        let doc = call.press(&doc, "1").await;
        call.run_dial(&doc, "no-answer", 0).await;
        call.hang_up().await;
        let r = t.send(json!({"audience": {"kind": "unreached", "min_attempts": 1}})).await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.body["queued"], 1, "{}", r.text);
        let r = t.send(json!({"audience": {"kind": "unreached", "min_attempts": 2}})).await;
        assert_eq!(r.body["queued"], 0, "{}", r.text);
        let (sender, fake) = t.sender(10);
        drain(&sender, &fake).await;
        assert_eq!(t.texted().await, [format!("+447700900{dialled:03}")]);
    }

    async fn the_organiser_api_validates_and_shows_segments(store) {
        let t = texts(store, &few(3)).await;
        let id = t.campaign_id;
        let c = t.app.get(&format!("/api/v1/campaigns/{id}")).await;
        assert_eq!(c.body["sms"][0]["question"], "support");
        assert_eq!(c.body["sms"][0]["encoding"], "gsm7");
        assert_eq!(c.body["sms"][0]["segments"], 1);
        // A curly apostrophe in a long question: UCS-2 and more segments, shown at once.
        let mut body = campaign_body("Hendon Calls");
        body["script"]["questions"][0]["text"] = json!(format!("We’d love to know {}", "whether you will vote for us. ".repeat(3)));
        let c = t.app.json("POST", "/api/v1/campaigns", body).await;
        assert_eq!(c.status, 201, "{}", c.text);
        assert_eq!(c.body["sms"][0]["encoding"], "ucs2");
        assert_eq!(c.body["sms"][0]["segments"], 3, "{}", c.body["sms"][0]);
        let draft = c.body["id"].as_i64().unwrap();

        let r = t.app.json("POST", &format!("/api/v1/campaigns/{draft}/sms/send"), json!({"audience": {"kind": "all"}})).await;
        assert_eq!(r.status, 409, "{}", r.text);
        assert_eq!(r.body["error"]["code"], "campaign_not_active");
        let r = t.send(json!({"question": "nope", "audience": {"kind": "all"}})).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.body["error"]["fields"][0]["field"], "question");
        let r = t.send(json!({"audience": {"kind": "everyone"}})).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["error"]["code"], "invalid_body");
        let r = t.send(json!({"audience": {"kind": "seat", "seat": "E99999999"}})).await;
        assert_eq!(r.status, 422, "{}", r.text);
        let r = t.send(json!({"audience": {"kind": "members", "member_ids": []}})).await;
        assert_eq!(r.status, 422, "{}", r.text);
        let r = t.send(json!({"audience": {"kind": "unreached", "min_attempts": 0}})).await;
        assert_eq!(r.status, 422, "{}", r.text);
        let r = t.app.raw("POST", &format!("/api/v1/campaigns/{id}/sms/send"), "application/json", "{not json").await;
        assert_eq!(r.status, 400);
        assert_eq!(r.body["error"]["code"], "malformed_json");
        let r = t.app.json("POST", "/api/v1/campaigns/999/sms/send", json!({"audience": {"kind": "all"}})).await;
        assert_eq!(r.status, 404);
        let r = t.app.get("/api/v1/sms/reviews?state=whatever").await;
        assert_eq!(r.status, 422, "{}", r.text);
        let r = t.app.get("/api/v1/sms/reviews?limit=abc").await;
        assert_eq!(r.status, 400, "{}", r.text);
        let r = t.app.json("POST", "/api/v1/sms/reviews/12345/dismiss", json!({})).await;
        assert_eq!(r.status, 404, "{}", r.text);
        let r = t.app.get("/api/v1/suppressions?limit=0").await;
        assert_eq!(r.status, 422, "{}", r.text);

        // By seat, and by member list; nobody twice across the two.
        let r = t.send(json!({"audience": {"kind": "seat", "seat": HENDON}})).await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.body["queued"], 1, "{}", r.text);
        assert_eq!(r.body["segments"]["segments"], 1);
        let r = t.send(json!({"audience": {"kind": "members", "member_ids": ["M0", "M1", "nobody"]}})).await;
        assert_eq!(r.body["queued"], 1, "{}", r.text);
        assert_eq!(r.body["already_queued"], 1, "{}", r.text);
        // Nobody has been called yet, so nobody is "unreached after 1 attempt".
        let r = t.send(json!({"audience": {"kind": "unreached", "min_attempts": 1}})).await;
        assert_eq!(r.body["queued"], 0, "{}", r.text);

        // Without provider credentials there is no sender: refused, nothing queued.
        let settings = phonebank::config::Settings { account_sid: None, ..voice_settings() };
        let bare = TestApp::with_state(AppState::new(t.app.store.clone(), settings)).await;
        let r = bare.json("POST", &format!("/api/v1/campaigns/{id}/sms/send"), json!({"audience": {"kind": "all"}})).await;
        assert_eq!(r.status, 503, "{}", r.text);
        assert_eq!(r.body["error"]["code"], "telephony_not_configured");

        // A paused campaign sends nothing until it resumes.
        t.app.json("POST", &format!("/api/v1/campaigns/{id}/pause"), json!({})).await;
        let (sender, fake) = t.sender(10);
        drain(&sender, &fake).await;
        assert!(t.texted().await.is_empty());
        t.app.json("POST", &format!("/api/v1/campaigns/{id}/start"), json!({})).await;
        drain(&sender, &fake).await;
        assert_eq!(t.texted().await.len(), 2);
    }
}

/// The sender as `phonebank serve` runs it (real clock and pacer): it empties the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_sender_delivers_the_queue() {
    let t = texts(common::sqlite().await, &few(3)).await;
    t.send_all().await;
    let task = phonebank::sms_worker::spawn(t.state.clone(), 50, Duration::from_millis(20));
    // Wait for the outcome (bounded), not for a duration.
    for _ in 0..500 {
        if t.summary().await["sent"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    assert_eq!(t.summary().await["sent"], 3);
    assert_eq!(t.texted().await.len(), 3);
}
