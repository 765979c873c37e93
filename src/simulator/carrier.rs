//! The carrier's two faces: webhooks it sends to the server (form-encoded, signed over
//! the public URL exactly as the provider signs them) and the REST API it serves to the
//! server (Create Call, Modify Call, Create Message), with the provider's response
//! shapes and error codes. Faults (duplicates, 429s, slow answers) are injected here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use rand::Rng as _;
use serde_json::json;
use tokio::sync::mpsc;

use crate::telephony::signature;

/// What can go wrong on the carrier's side, on purpose.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Chance that a webhook is delivered twice (the provider retrying after a lost
    /// response: the first answer is thrown away).
    pub duplicate: f64,
    /// Member-leg status callbacks are sent all at once in shuffled order.
    pub reorder: bool,
    /// Chance that a REST request is refused with 429 / 20429 (never processed).
    pub rest_429: f64,
    /// Chance that a REST request answers 500 after *not* processing it.
    pub rest_500: f64,
    /// Extra delay before each REST answer.
    pub rest_delay: Duration,
}

impl Faults {
    pub fn all() -> Self {
        Self {
            duplicate: 0.05,
            reorder: true,
            rest_429: 0.2,
            rest_500: 0.05,
            rest_delay: Duration::from_millis(20),
        }
    }

    pub fn any(&self) -> bool {
        self.duplicate > 0.0
            || self.reorder
            || self.rest_429 > 0.0
            || self.rest_500 > 0.0
            || !self.rest_delay.is_zero()
    }
}

/// Counters the run reports.
#[derive(Debug, Default)]
pub struct Traffic {
    pub webhooks: AtomicU64,
    pub duplicates: AtomicU64,
    /// Duplicated deliveries whose lost first answer held a `<Dial>`: the provider
    /// never ran it, while the server (rightly) will not dial that attempt again.
    pub lost_dials: AtomicU64,
    /// Webhooks answered with anything but 2xx, or not answered at all.
    pub failures: AtomicU64,
    pub rest_requests: AtomicU64,
    pub rest_refused: AtomicU64,
    /// The first few failures, for the report.
    pub failure_samples: Mutex<Vec<String>>,
}

impl Traffic {
    fn fail(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.failure_samples.lock()
            && s.len() < 5
        {
            s.push(what);
        }
    }
}

/// A webhook's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends signed webhooks. The server instances sit behind one public URL (as behind a
/// load balancer): every request is signed over the public URL and sent to the next
/// instance in turn.
pub struct Carrier {
    http: reqwest::Client,
    public_base: String,
    backends: Vec<String>,
    token: String,
    pub account_sid: String,
    next_backend: AtomicUsize,
    sids: AtomicU64,
    pub faults: Faults,
    pub traffic: Arc<Traffic>,
}

impl Carrier {
    pub fn new(
        public_base: &str,
        backends: Vec<String>,
        token: &str,
        account_sid: &str,
        faults: Faults,
    ) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15)) // the provider's webhook budget
                .pool_max_idle_per_host(256)
                .build()
                .unwrap_or_default(),
            public_base: public_base.trim_end_matches('/').to_owned(),
            backends,
            token: token.to_owned(),
            account_sid: account_sid.to_owned(),
            next_backend: AtomicUsize::new(0),
            sids: AtomicU64::new(1),
            faults,
            traffic: Arc::new(Traffic::default()),
        }
    }

    /// Share counters with the REST face, so one report covers both.
    pub fn with_traffic(mut self, traffic: Arc<Traffic>) -> Self {
        self.traffic = traffic;
        self
    }

    /// A fresh id with the provider's shape (`CA` + 32 hex digits).
    pub fn sid(&self, prefix: &str) -> String {
        let n = self.sids.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:016x}{n:016x}", rand::random::<u64>())
    }

    /// The URL the provider would call for `url` (absolute, or a path on the public base).
    pub fn absolute(&self, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_owned()
        } else {
            format!("{}{url}", self.public_base)
        }
    }

    /// POST a webhook. With the duplicate fault it may be delivered twice, the first
    /// answer lost, as when the provider retries after a timeout.
    pub async fn post(&self, url: &str, params: &[(String, String)]) -> Answer {
        if self.faults.duplicate > 0.0 && rand::rng().random_bool(self.faults.duplicate) {
            self.traffic.duplicates.fetch_add(1, Ordering::Relaxed);
            let lost = self.post_once(url, params).await;
            if lost.body.contains("<Dial") {
                self.traffic.lost_dials.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.post_once(url, params).await
    }

    async fn post_once(&self, url: &str, params: &[(String, String)]) -> Answer {
        self.traffic.webhooks.fetch_add(1, Ordering::Relaxed);
        let url = self.absolute(url);
        let signature = signature::sign(&self.token, &url, params);
        let Some(rest) = url.strip_prefix(&self.public_base) else {
            self.traffic
                .fail(format!("URL outside the public base: {url}"));
            return Answer {
                status: 0,
                body: String::new(),
            };
        };
        let i = self.next_backend.fetch_add(1, Ordering::Relaxed) % self.backends.len().max(1);
        let target = format!("{}{rest}", self.backends.get(i).map_or("", |b| b.as_str()));
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let sent = self
            .http
            .post(&target)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Twilio-Signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                if !(200..300).contains(&status) {
                    self.traffic
                        .fail(format!("{status} from {rest}: {}", truncate(&body, 200)));
                }
                Answer { status, body }
            }
            Err(e) => {
                self.traffic.fail(format!("no answer from {rest}: {e}"));
                Answer {
                    status: 0,
                    body: String::new(),
                }
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A call the server asked the carrier to place (Create Call).
#[derive(Debug, Clone)]
pub struct PlacedCall {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub url: String,
    pub status_callback: Option<String>,
}

/// A text the server asked the carrier to send (Create Message).
#[derive(Debug, Clone)]
pub struct SentText {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub status_callback: Option<String>,
}

/// What the REST face hands to the simulated people.
#[derive(Debug)]
pub enum Outbound {
    Call(PlacedCall),
    Text(SentText),
}

#[derive(Clone)]
struct RestState {
    account_sid: String,
    token: String,
    faults: Faults,
    traffic: Arc<Traffic>,
    outbound: mpsc::UnboundedSender<Outbound>,
    /// Recipients who texted STOP to a sender: later texts from it fail with 21610, as
    /// the provider's own opt-out block does.
    blocked: Arc<Mutex<HashSet<(String, String)>>>,
    calls: Arc<Mutex<HashMap<String, String>>>,
    sids: Arc<AtomicU64>,
}

/// The carrier's REST API as an axum router, and the stream of what it was asked to do.
pub struct RestApi {
    pub router: Router,
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
    blocked: Arc<Mutex<HashSet<(String, String)>>>,
}

impl RestApi {
    pub fn new(account_sid: &str, token: &str, faults: Faults, traffic: Arc<Traffic>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let blocked = Arc::new(Mutex::new(HashSet::new()));
        let state = RestState {
            account_sid: account_sid.to_owned(),
            token: token.to_owned(),
            faults,
            traffic,
            outbound: tx,
            blocked: blocked.clone(),
            calls: Arc::default(),
            sids: Arc::new(AtomicU64::new(1)),
        };
        let router = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Calls.json",
                post(create_call),
            )
            .route(
                "/2010-04-01/Accounts/{account}/Calls/{sid}",
                post(modify_call),
            )
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(create_message),
            )
            .with_state(state);
        Self {
            router,
            outbound: rx,
            blocked,
        }
    }

    /// The carrier's block list, shared with the member side (STOP texts add to it).
    pub fn block_list(&self) -> Arc<Mutex<HashSet<(String, String)>>> {
        self.blocked.clone()
    }
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

/// Authentication and injected faults, common to every REST request.
async fn gate(s: &RestState, account: &str, headers: &HeaderMap) -> Result<(), Response> {
    s.traffic.rest_requests.fetch_add(1, Ordering::Relaxed);
    if !s.faults.rest_delay.is_zero() {
        tokio::time::sleep(s.faults.rest_delay).await;
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", s.account_sid, s.token))
    );
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if account != s.account_sid || auth != expected {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authentication Error - invalid username",
        ));
    }
    let (refuse, fail) = {
        let mut rng = rand::rng();
        (
            s.faults.rest_429 > 0.0 && rng.random_bool(s.faults.rest_429),
            s.faults.rest_500 > 0.0 && rng.random_bool(s.faults.rest_500),
        )
    };
    if refuse {
        s.traffic.rest_refused.fetch_add(1, Ordering::Relaxed);
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            20429,
            "Too Many Requests",
        ));
    }
    if fail {
        s.traffic.rest_refused.fetch_add(1, Ordering::Relaxed);
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            20500,
            "Internal Server Error",
        ));
    }
    Ok(())
}

fn form(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// `To`, `From` and the third required field, or the provider's error code and message
/// when one is missing or `To` is not a number.
fn required<'a>(
    f: &'a [(String, String)],
    third: &str,
    missing_code: i64,
) -> Result<(&'a str, &'a str, &'a str), (i64, String)> {
    let (Some(to), Some(from), Some(value)) = (field(f, "To"), field(f, "From"), field(f, third))
    else {
        return Err((missing_code, format!("To, From and {third} are required")));
    };
    if crate::domain::PhoneNumber::parse(to, phonenumber::country::Id::GB).is_err() {
        return Err((
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        ));
    }
    Ok((to, from, value))
}

fn rfc2822_now() -> String {
    jiff::Timestamp::now()
        .strftime("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

fn next_sid(s: &RestState, prefix: &str) -> String {
    let n = s.sids.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:016x}{n:016x}", rand::random::<u64>())
}

async fn create_call(
    State(s): State<RestState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&s, &account, &headers).await {
        return r;
    }
    let f = form(&body);
    let (to, from, url) = match required(&f, "Url", 21205) {
        Ok(v) => v,
        Err((code, message)) => return error(StatusCode::BAD_REQUEST, code, &message),
    };
    let sid = next_sid(&s, "CA");
    if let Ok(mut calls) = s.calls.lock() {
        calls.insert(sid.clone(), "queued".into());
    }
    let _ = s.outbound.send(Outbound::Call(PlacedCall {
        sid: sid.clone(),
        to: to.to_owned(),
        from: from.to_owned(),
        url: url.to_owned(),
        status_callback: field(&f, "StatusCallback").map(str::to_owned),
    }));
    let now = rfc2822_now();
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "sid": sid, "account_sid": s.account_sid, "parent_call_sid": null,
            "to": to, "from": from, "status": "queued", "direction": "outbound-api",
            "start_time": null, "end_time": null, "duration": null, "price": null,
            "price_unit": "GBP", "answered_by": null, "api_version": "2010-04-01",
            "queue_time": "0", "date_created": now, "date_updated": now,
            "uri": format!("/2010-04-01/Accounts/{}/Calls/{sid}.json", s.account_sid),
        })),
    )
        .into_response()
}

async fn modify_call(
    State(s): State<RestState>,
    Path((account, sid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&s, &account, &headers).await {
        return r;
    }
    let sid = sid.trim_end_matches(".json").to_owned();
    let f = form(&body);
    let known = s
        .calls
        .lock()
        .map(|c| c.contains_key(&sid))
        .unwrap_or(false);
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            20404,
            &format!("The requested resource /Calls/{sid}.json was not found"),
        );
    }
    let status = field(&f, "Status").unwrap_or("in-progress").to_owned();
    (
        StatusCode::OK,
        axum::Json(json!({"sid": sid, "account_sid": s.account_sid, "status": status})),
    )
        .into_response()
}

async fn create_message(
    State(s): State<RestState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&s, &account, &headers).await {
        return r;
    }
    let f = form(&body);
    let (to, from, text) = match required(&f, "Body", 21602) {
        Ok(v) => v,
        Err((code, message)) => return error(StatusCode::BAD_REQUEST, code, &message),
    };
    let blocked = s
        .blocked
        .lock()
        .map(|b| b.contains(&(to.to_owned(), from.to_owned())))
        .unwrap_or(false);
    if blocked {
        return error(
            StatusCode::BAD_REQUEST,
            21610,
            "Attempt to send to unsubscribed recipient",
        );
    }
    let sid = next_sid(&s, "SM");
    let segments = crate::domain::sms::segments(text).segments;
    let _ = s.outbound.send(Outbound::Text(SentText {
        sid: sid.clone(),
        to: to.to_owned(),
        from: from.to_owned(),
        body: text.to_owned(),
        status_callback: field(&f, "StatusCallback").map(str::to_owned),
    }));
    let now = rfc2822_now();
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "sid": sid, "account_sid": s.account_sid, "messaging_service_sid": null,
            "from": from, "to": to, "body": text, "status": "queued",
            "num_segments": segments.to_string(), "num_media": "0",
            "direction": "outbound-api", "price": null, "price_unit": "GBP",
            "error_code": null, "error_message": null, "date_created": now,
            "date_sent": null, "date_updated": now, "api_version": "2010-04-01",
            "uri": format!("/2010-04-01/Accounts/{}/Messages/{sid}.json", s.account_sid),
        })),
    )
        .into_response()
}
