//! The carrier's side of a call, for the voice tests: signed webhooks exactly as the
//! provider sends them (form-encoded, `X-Twilio-Signature` over the public URL), and a
//! small TwiML reader so a test can press keys, follow redirects and answer a `<Dial>`.

use axum::body::Body;
use axum::http::{Request, header};
use jiff::Timestamp;
use phonebank::config::Settings;
use phonebank::domain::Clock;
use phonebank::http::AppState;
use phonebank::store::Store;
use phonebank::telephony::signature;
use secrecy::SecretString;

use super::app::{Reply, TestApp};

pub const PUBLIC_URL: &str = "https://pb.example.org";
pub const AUTH_TOKEN: &str = "12345abcdefauthtokenfortests0000";
pub const CAMPAIGN_NUMBER: &str = "+442079460000";

/// A Tuesday evening in December (GMT): inside the default calling hours.
pub fn tuesday_evening() -> Timestamp {
    "2026-12-08T18:00:00Z".parse().unwrap()
}

pub fn voice_settings() -> Settings {
    Settings {
        public_url: Some(PUBLIC_URL.into()),
        auth_token: Some(SecretString::from(AUTH_TOKEN)),
        account_sid: Some("AC00000000000000000000000000000000".into()),
        // Call pacing runs on real time; tests/limits.rs checks it on a manual clock.
        limits: phonebank::limits::LimitSettings {
            calls_per_second: 0,
            ..Default::default()
        },
        ..Settings::default()
    }
}

/// An app with webhook signing configured and a manual clock the test can move.
pub async fn voice_app(store: Store, clock: Clock) -> TestApp {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("phonebank=debug,warn")
        .with_test_writer()
        .try_init();
    TestApp::with_state(AppState::new(store, voice_settings()).with_clock(clock)).await
}

pub fn call_sid(n: u64) -> String {
    format!("CA{n:032x}")
}

pub use phonebank::simulator::twiml::Node;

/// A parsed `<Response>` and its raw text (the simulator's TwiML reader).
#[derive(Debug, Clone)]
pub struct Doc {
    pub raw: String,
    pub verbs: Vec<Node>,
    /// What the caller heard on the way here (documents followed by redirect).
    pub heard: Vec<String>,
}

impl Doc {
    pub fn parse(raw: &str) -> Doc {
        let doc =
            phonebank::simulator::twiml::Doc::parse(raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
        let heard = doc.verbs.iter().flat_map(Node::says).collect();
        Doc {
            raw: doc.raw,
            verbs: doc.verbs,
            heard,
        }
    }

    /// Everything heard since the last key press, this document included.
    pub fn said(&self) -> String {
        self.heard.join(" ")
    }

    pub fn verb(&self, name: &str) -> Option<&Node> {
        self.verbs.iter().find(|v| v.name == name)
    }

    pub fn gather(&self) -> Option<&Node> {
        self.verb("Gather")
    }

    pub fn dial(&self) -> Option<&Node> {
        self.verb("Dial")
    }

    pub fn hangs_up(&self) -> bool {
        self.verbs.iter().any(|v| v.name == "Hangup")
    }

    /// The URL the call goes to when nothing is pressed (the verb after `<Gather>`).
    pub fn redirect(&self) -> Option<&str> {
        self.verb("Redirect").map(|r| r.text.as_str())
    }
}

impl TestApp {
    /// POST a webhook as the provider would: form body, signature over the public URL.
    pub async fn webhook(&self, url: &str, params: &[(&str, &str)]) -> Reply {
        let full = absolute(url);
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let sig = signature::sign(AUTH_TOKEN, &full, &owned);
        self.webhook_signed(url, params, Some(&sig)).await
    }

    /// POST a webhook with the given signature header (or none).
    pub async fn webhook_signed(
        &self,
        url: &str,
        params: &[(&str, &str)],
        signature: Option<&str>,
    ) -> Reply {
        let full = absolute(url);
        let path = full.strip_prefix(PUBLIC_URL).unwrap_or(&full).to_owned();
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let mut req = Request::builder()
            .method("POST")
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(s) = signature {
            req = req.header("X-Twilio-Signature", s);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }
}

fn absolute(url: &str) -> String {
    if url.starts_with("http") {
        url.to_owned()
    } else {
        format!("{PUBLIC_URL}{url}")
    }
}

/// One phone call in progress, from the carrier's side.
pub struct Call<'a> {
    pub app: &'a TestApp,
    pub sid: String,
    pub from: String,
    pub to: String,
    /// Every document the server answered on this call, in order.
    pub docs: Vec<Doc>,
    next_child: u64,
}

impl<'a> Call<'a> {
    pub fn new(app: &'a TestApp, n: u64, from: &str) -> Self {
        Self {
            app,
            sid: call_sid(n),
            from: from.to_owned(),
            to: CAMPAIGN_NUMBER.to_owned(),
            docs: Vec::new(),
            next_child: n * 1000,
        }
    }

    fn base(&self) -> Vec<(&str, String)> {
        vec![
            ("AccountSid", "AC00000000000000000000000000000000".into()),
            ("ApiVersion", "2010-04-01".into()),
            ("CallSid", self.sid.clone()),
            ("From", self.from.clone()),
            ("To", self.to.clone()),
            ("Direction", "inbound".into()),
            ("CallStatus", "in-progress".into()),
        ]
    }

    /// POST to `url` with the call's parameters plus `extra`; the TwiML answer.
    pub async fn post(&mut self, url: &str, extra: &[(&str, &str)]) -> Doc {
        let mut params = self.base();
        for (k, v) in extra {
            params.retain(|(pk, _)| pk != k);
            params.push((k, (*v).to_owned()));
        }
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = self.app.webhook(url, &borrowed).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.text);
        assert!(
            reply
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.to_str().unwrap().starts_with("text/xml")),
            "TwiML content type"
        );
        let doc = Doc::parse(&reply.text);
        self.docs.push(doc.clone());
        doc
    }

    /// The call rings the number's voice URL.
    pub async fn start(&mut self) -> Doc {
        let doc = self
            .post("/webhooks/voice", &[("CallStatus", "ringing")])
            .await;
        self.settle(doc).await
    }

    /// Follow bare redirects until the document waits for keys, dials or hangs up.
    pub async fn settle(&mut self, mut doc: Doc) -> Doc {
        for _ in 0..20 {
            if doc.gather().is_some() || doc.dial().is_some() || doc.hangs_up() {
                return doc;
            }
            match doc.redirect() {
                Some(url) => {
                    let url = url.to_owned();
                    let mut next = self.post(&url, &[]).await;
                    let mut heard = std::mem::take(&mut doc.heard);
                    heard.append(&mut next.heard);
                    next.heard = heard;
                    doc = next;
                }
                None => return doc,
            }
        }
        panic!("redirect loop: {}", doc.raw);
    }

    /// Press `digits` on the document's `<Gather>`, then settle.
    pub async fn press(&mut self, doc: &Doc, digits: &str) -> Doc {
        let gather = doc
            .gather()
            .unwrap_or_else(|| panic!("no Gather in {}", doc.raw));
        let action = gather.attr("action").expect("Gather action").to_owned();
        let next = self
            .post(&action, &[("Digits", digits), ("FinishedOnKey", "")])
            .await;
        self.settle(next).await
    }

    /// Let the `<Gather>` time out: the provider runs the verb after it.
    pub async fn silence(&mut self, doc: &Doc) -> Doc {
        assert!(doc.gather().is_some(), "no Gather in {}", doc.raw);
        let url = doc
            .redirect()
            .expect("a fallback after the Gather")
            .to_owned();
        let next = self.post(&url, &[]).await;
        self.settle(next).await
    }

    /// Run the `<Dial>` in `doc`: the member leg's status callbacks, then the dial's
    /// action with `status` and `seconds` connected. Returns the child CallSid too.
    pub async fn run_dial(&mut self, doc: &Doc, status: &str, seconds: u32) -> (Doc, String) {
        let dial = doc
            .dial()
            .unwrap_or_else(|| panic!("no Dial in {}", doc.raw))
            .clone();
        let number = dial
            .children
            .iter()
            .find(|n| n.name == "Number")
            .expect("<Number>")
            .clone();
        self.next_child += 1;
        let child = call_sid(self.next_child);
        let callback = number
            .attr("statusCallback")
            .expect("statusCallback")
            .to_owned();
        let mut events = vec!["initiated", "ringing"];
        if status == "completed" {
            events.push("in-progress");
        }
        events.push(status);
        for (seq, event) in events.iter().enumerate() {
            self.member_event(&callback, &child, &number.text, event, seq)
                .await;
        }
        let action = dial.attr("action").expect("Dial action").to_owned();
        let secs = seconds.to_string();
        let next = self
            .post(
                &action,
                &[
                    ("DialCallStatus", status),
                    ("DialCallSid", &child),
                    ("DialCallDuration", &secs),
                    (
                        "DialBridged",
                        if status == "completed" {
                            "true"
                        } else {
                            "false"
                        },
                    ),
                ],
            )
            .await;
        (self.settle(next).await, child)
    }

    /// One status callback of the member leg.
    pub async fn member_event(
        &mut self,
        url: &str,
        child: &str,
        number: &str,
        status: &str,
        seq: usize,
    ) -> Reply {
        let seq = seq.to_string();
        self.app
            .webhook(
                url,
                &[
                    ("AccountSid", "AC00000000000000000000000000000000"),
                    ("CallSid", child),
                    ("ParentCallSid", &self.sid),
                    ("From", CAMPAIGN_NUMBER),
                    ("To", number),
                    ("Direction", "outbound-dial"),
                    ("CallStatus", status),
                    ("SequenceNumber", &seq),
                    ("CallbackSource", "call-progress-events"),
                ],
            )
            .await
    }

    /// The volunteer hangs up: the final status callback of their own leg.
    pub async fn hang_up(&mut self) {
        let reply = self
            .app
            .webhook(
                "/webhooks/voice/status",
                &[
                    ("AccountSid", "AC00000000000000000000000000000000"),
                    ("CallSid", &self.sid),
                    ("From", &self.from),
                    ("To", &self.to),
                    ("CallStatus", "completed"),
                    ("SequenceNumber", "9"),
                ],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }

    /// Every document of the call: a member number may appear only inside `<Number>`.
    pub fn assert_masked(&self, numbers: &[String]) {
        for doc in &self.docs {
            let outside = phonebank::simulator::twiml::Doc::parse(&doc.raw)
                .expect("TwiML")
                .outside_numbers();
            for n in numbers {
                let national = format!("0{}", &n[3..]);
                for form in [n.as_str(), &n[1..], national.as_str()] {
                    assert!(
                        !outside.contains(form),
                        "member number {n} outside <Number>: {}",
                        doc.raw
                    );
                }
            }
        }
    }
}

/// The volunteer every `PhoneBank` registers.
pub const VOLUNTEER: &str = "+442079460500";

/// `n` members on 07700 900xxx spread over `seats` in turn, as a member CSV, with their
/// numbers.
pub fn members_csv(n: usize, seats: &[&str]) -> (String, Vec<String>) {
    let mut csv = String::from("member_id,name,phone,constituency\n");
    let mut phones = Vec::new();
    for i in 0..n {
        let phone = format!("+447700900{i:03}");
        csv.push_str(&format!(
            "M{i:04},Member {i},{phone},{}\n",
            seats[i % seats.len()]
        ));
        phones.push(phone);
    }
    (csv, phones)
}

/// A phone bank ready to call through the voice webhooks: seats loaded, the given
/// members imported, the numbers in `suppressed` opted out, one active campaign, and
/// one volunteer ([`VOLUNTEER`]) with their PIN; the app on a manual clock at
/// [`tuesday_evening`].
pub struct PhoneBank {
    pub app: TestApp,
    pub clock: Clock,
    pub campaign_id: i64,
    pub pin: String,
}

impl PhoneBank {
    pub async fn open(store: Store, members: &str, suppressed: &[&str]) -> Self {
        let clock = Clock::manual(tuesday_evening());
        super::load_seats(&store).await;
        let report = super::import_members_str(&store, members).await;
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        let app = voice_app(store, clock.clone()).await;
        for phone in suppressed {
            let r = app
                .json(
                    "POST",
                    "/api/v1/suppressions",
                    serde_json::json!({"phone": phone, "reason": "asked"}),
                )
                .await;
            assert!(r.status.is_success(), "{}", r.text);
        }
        let campaign = app
            .json(
                "POST",
                "/api/v1/campaigns",
                super::app::campaign_body("Hendon Calls"),
            )
            .await;
        assert_eq!(campaign.status, 201, "{}", campaign.text);
        let campaign_id = campaign.body["id"].as_i64().unwrap();
        let started = app
            .json(
                "POST",
                &format!("/api/v1/campaigns/{campaign_id}/start"),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(started.status, 200, "{}", started.text);
        let v = app
            .json(
                "POST",
                "/api/v1/volunteers",
                serde_json::json!({"name": "Vic Volunteer", "phone": VOLUNTEER}),
            )
            .await;
        assert_eq!(v.status, 201, "{}", v.text);
        Self {
            app,
            clock,
            campaign_id,
            pin: v.body["pin"].as_str().unwrap().to_owned(),
        }
    }

    /// The volunteer's call number `n`, past the PIN, at the first announcement.
    pub async fn logged_in(&self, n: u64) -> (Call<'_>, Doc) {
        let mut call = Call::new(&self.app, n, VOLUNTEER);
        let doc = call.start().await;
        assert!(doc.said().contains("PIN"), "{}", doc.raw);
        let doc = call.press(&doc, &self.pin).await;
        (call, doc)
    }

    /// One value from the database (`count(*)` and the like).
    pub async fn value<T>(&self, sql: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + Send + Unpin,
    {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(self.app.store.pool())
            .await
            .unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.value(sql).await
    }

    pub fn advance(&self, by: jiff::SignedDuration) {
        self.clock.set(self.clock.now() + by);
    }
}
