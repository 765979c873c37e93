//! The provider's REST API (2010-04-01 shape): placing a call to a volunteer, sending a
//! text to a member.
//!
//! Creating a call or a message is not idempotent at the provider, so retries are limited
//! to answers that say the request was *not* processed: HTTP 429 / error 20429 and
//! failures to connect at all. A 5xx or a timeout after the request was sent may have
//! created the call or message; it is reported as [`RestError::Uncertain`] and never
//! retried, so one request never rings a volunteer (or texts a member) twice.
//!
//! Every request to create a call first waits for a slot of the account's calls per
//! second ([`crate::limits::Pacer`]); one that would wait too long is refused unsent
//! ([`RestError::Paced`]).

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

/// Credentials and where to reach the provider.
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    account_sid: String,
    token: SecretString,
    /// Attempts for retry-safe failures, and the first backoff (doubled each time).
    max_attempts: u32,
    backoff: Duration,
    /// Calls per second for the account, shared by every clone of this client.
    pacer: crate::limits::Pacer,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base", &self.base)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

/// What to place: the provider fetches `url` for TwiML when the volunteer answers.
#[derive(Debug, Clone)]
pub struct NewCall<'a> {
    pub to: &'a str,
    pub from: &'a str,
    pub url: &'a str,
    pub status_callback: &'a str,
    /// Ring time before giving up on the volunteer.
    pub timeout_secs: u32,
}

/// A text to send. The provider reports delivery to `status_callback`.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub to: &'a str,
    pub from: &'a str,
    pub body: &'a str,
    pub status_callback: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MessageResource {
    pub sid: String,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CallResource {
    pub sid: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// The provider's error body (legacy `{code,message}` or problem-details; keyed on `code`).
#[derive(Debug, Clone, Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    #[serde(alias = "detail", alias = "title")]
    message: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The provider refused the request; it did nothing. Not retried (except 429).
    #[error("provider refused the request (HTTP {status}, code {code:?}): {message}")]
    Rejected {
        status: u16,
        code: Option<i64>,
        message: String,
    },
    /// The request may or may not have been carried out (5xx, timeout after sending,
    /// unreadable answer). Not retried: a second call could ring the volunteer twice.
    #[error("provider outcome unknown: {0}")]
    Uncertain(String),
    /// Not sent: the account's calls-per-second budget had no slot within the wait
    /// allowed. Nothing was created; safe to try again after `retry_after`.
    #[error("too many calls being placed: try again in {retry_after:?}")]
    Paced { retry_after: Duration },
    /// Retry-safe failures persisted through every attempt.
    #[error("provider unavailable after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
}

impl RestError {
    /// The provider error code, when it gave one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Rejected { code, .. } => *code,
            _ => None,
        }
    }
}

impl RestClient {
    pub fn new(base: &str, account_sid: &str, token: SecretString) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .expect("reqwest client with rustls");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            account_sid: account_sid.to_owned(),
            token,
            max_attempts: 4,
            backoff: Duration::from_millis(250),
            pacer: crate::limits::Pacer::unlimited(),
        }
    }

    /// How long one request may take before its outcome is treated as unknown.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()
            .expect("reqwest client with rustls");
        self
    }

    /// Pace call creation (the application state hands over its shared pacer).
    pub fn with_pacer(mut self, pacer: crate::limits::Pacer) -> Self {
        self.pacer = pacer;
        self
    }

    /// Shorter backoff for tests.
    pub fn with_backoff(mut self, first: Duration, max_attempts: u32) -> Self {
        self.backoff = first;
        self.max_attempts = max_attempts.max(1);
        self
    }

    pub async fn create_call(&self, call: &NewCall<'_>) -> Result<CallResource, RestError> {
        let timeout = call.timeout_secs.to_string();
        let form: [(&str, &str); 9] = [
            ("To", call.to),
            ("From", call.from),
            ("Url", call.url),
            ("Method", "POST"),
            ("StatusCallback", call.status_callback),
            ("StatusCallbackMethod", "POST"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
            ("Timeout", &timeout),
        ];
        self.create("Calls.json", &form, true).await
    }

    /// Create Message. The same retry rules as a call: a text is never sent twice by
    /// one request.
    pub async fn create_message(
        &self,
        message: &NewMessage<'_>,
    ) -> Result<MessageResource, RestError> {
        let form: [(&str, &str); 5] = [
            ("To", message.to),
            ("From", message.from),
            ("Body", message.body),
            ("StatusCallback", message.status_callback),
            ("StatusCallbackMethod", "POST"),
        ];
        // Texts are paced by their own sender (`sms_worker`), not the calls pacer.
        self.create("Messages.json", &form, false).await
    }

    /// POST a create request, retrying only what the provider certainly did not process.
    async fn create<T: serde::de::DeserializeOwned>(
        &self,
        resource: &str,
        form: &[(&str, &str)],
        paced: bool,
    ) -> Result<T, RestError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}",
            self.base, self.account_sid
        );
        let mut delay = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.max_attempts {
            // Every request counts against the account's rate, retries included.
            if paced {
                self.pacer.acquire().await.map_err(|l| RestError::Paced {
                    retry_after: l.retry_after,
                })?;
            }
            let sent = self
                .http
                .post(&url)
                .basic_auth(&self.account_sid, Some(self.token.expose_secret()))
                .form(form)
                .send()
                .await;
            let retry_after = match sent {
                Err(e) if e.is_connect() => {
                    // Never reached the provider: safe to try again.
                    last = format!("connection failed: {e}");
                    None
                }
                Err(e) => return Err(RestError::Uncertain(format!("request failed: {e}"))),
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let bytes = resp.bytes().await.map_err(|e| {
                        RestError::Uncertain(format!("reading the answer failed: {e}"))
                    })?;
                    if status.is_success() {
                        return serde_json::from_slice::<T>(&bytes).map_err(|e| {
                            RestError::Uncertain(format!("unreadable {resource} resource: {e}"))
                        });
                    }
                    let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
                    let code = body.as_ref().and_then(|b| b.code);
                    let message = body
                        .and_then(|b| b.message)
                        .unwrap_or_else(|| status.to_string());
                    if status.as_u16() == 429 || code == Some(20429) {
                        last = format!("rate limited (HTTP {}, code {code:?})", status.as_u16());
                        retry_after
                    } else if status.is_server_error() {
                        return Err(RestError::Uncertain(format!(
                            "HTTP {} code {code:?}: {message}",
                            status.as_u16()
                        )));
                    } else {
                        return Err(RestError::Rejected {
                            status: status.as_u16(),
                            code,
                            message,
                        });
                    }
                }
            };
            if attempt < self.max_attempts {
                let wait = retry_after.unwrap_or(delay).min(Duration::from_secs(10));
                // Jitter so many instances do not retry in lockstep.
                let jitter = Duration::from_millis(rand::random::<u64>() % 50);
                tokio::time::sleep(wait + jitter).await;
                delay *= 2;
            }
        }
        Err(RestError::Unavailable {
            attempts: self.max_attempts,
            last,
        })
    }
}
