//! Configuration: every setting is a flag and an environment variable (clap `env`), with
//! the names the spec fixes (`DATABASE_URL`, `PHONEBANK_*`, and the provider's own
//! `TWILIO_*`). Secrets are `SecretString`, so they never reach a log or `--help` output.

use std::net::SocketAddr;

use phonenumber::country::Id as Region;
use secrecy::SecretString;

use crate::domain::phone::parse_region;

/// Where the data lives.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// `sqlite:path.db` or `postgres://user@host/db`. Unset: `phonebank.db` in the working
    /// directory, created and migrated on first start.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
}

/// How phone numbers in files and API requests are read.
#[derive(Debug, Clone, clap::Args)]
pub struct PhoneArgs {
    /// Country assumed for numbers written without a country code (ISO 3166 code).
    #[arg(long, env = "PHONEBANK_DEFAULT_REGION", default_value = "GB", value_parser = parse_region, global = true)]
    pub default_region: Region,
}

/// `phonebank serve` settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PHONEBANK_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// The public base URL the provider calls (e.g. `https://pb.example.org`). Webhook
    /// signatures are computed over this URL, never over the Host header, because a TLS
    /// proxy in front changes scheme and host.
    #[arg(long, env = "PHONEBANK_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Provider account id.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub account_sid: Option<String>,

    /// Provider auth token: signs webhooks and authenticates REST calls.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<SecretString>,

    /// Provider REST base URL; point it at a compatible provider or a test double.
    #[arg(
        long,
        env = "TWILIO_API_BASE",
        default_value = "https://api.twilio.com"
    )]
    pub api_base: String,

    /// Largest accepted request body for JSON endpoints, in bytes.
    #[arg(long, env = "PHONEBANK_MAX_BODY", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest accepted member CSV upload, in bytes.
    #[arg(long, env = "PHONEBANK_MAX_UPLOAD", default_value_t = 256 * 1024 * 1024)]
    pub max_upload_bytes: usize,

    /// Seconds before a request is abandoned with 408 (uploads get ten times as long).
    #[arg(long, env = "PHONEBANK_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Survey texts this instance hands to the provider per second (its sender's MPS;
    /// a UK or US long code takes about 1). Each instance paces itself.
    #[arg(long, env = "PHONEBANK_SMS_PER_SECOND", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sms_per_second: u32,

    /// Hours after a survey text during which a reply is matched to it as an answer.
    #[arg(long, env = "PHONEBANK_SMS_REPLY_WINDOW_HOURS", default_value_t = 72, value_parser = clap::value_parser!(u64).range(1..=24 * 60))]
    pub sms_reply_window_hours: u64,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// In-process rate limits (`crate::limits`); 0 turns one off.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Organiser API requests per minute per bearer token (also the burst); more get 429.
    #[arg(long, env = "PHONEBANK_API_RATE_PER_MINUTE", default_value_t = 600)]
    pub api_rate_per_minute: u32,

    /// PIN attempts per hour per caller number, before the database's own count of wrong
    /// PINs; guards the argon2 check and the database against floods. Right and wrong
    /// PINs both count, so it is generous: a volunteer redialling a bad line is not shut out.
    #[arg(long, env = "PHONEBANK_PIN_ATTEMPTS_PER_HOUR", default_value_t = 120)]
    pub pin_attempts_per_hour: u32,

    /// PIN attempts one number may make at once before the hourly rate applies.
    #[arg(long, env = "PHONEBANK_PIN_BURST", default_value_t = 20)]
    pub pin_burst: u32,

    /// Texts per minute per sender number (also the burst); excess texts are dropped,
    /// opt-outs never are.
    #[arg(long, env = "PHONEBANK_SMS_PER_SENDER_PER_MINUTE", default_value_t = 5)]
    pub sms_per_sender_per_minute: u32,

    /// Calls created through the provider's REST API per second for the account (the
    /// provider's default is 1; raise it if your account allows more).
    #[arg(long, env = "PHONEBANK_CALLS_PER_SECOND", default_value_t = 1)]
    pub calls_per_second: u32,

    /// Seconds a call-back may wait for a call slot before it is refused unsent.
    #[arg(long, env = "PHONEBANK_CALL_PACING_WAIT", default_value_t = 5)]
    pub call_pacing_wait_secs: u64,
}

impl LimitArgs {
    pub fn settings(&self) -> crate::limits::LimitSettings {
        crate::limits::LimitSettings {
            api_per_minute: self.api_rate_per_minute,
            pin_per_hour: self.pin_attempts_per_hour,
            pin_burst: self.pin_burst,
            sms_per_minute: self.sms_per_sender_per_minute,
            calls_per_second: self.calls_per_second,
            call_wait: std::time::Duration::from_secs(self.call_pacing_wait_secs),
        }
    }
}

/// What the running application needs, independent of where it came from (tests build
/// it directly).
#[derive(Debug, Clone)]
pub struct Settings {
    pub default_region: Region,
    pub public_url: Option<String>,
    pub account_sid: Option<String>,
    pub auth_token: Option<SecretString>,
    pub api_base: String,
    pub max_body_bytes: usize,
    pub max_upload_bytes: usize,
    pub request_timeout: std::time::Duration,
    /// In-process rate limits.
    pub limits: crate::limits::LimitSettings,
    /// Survey texts per second (the sender's pace).
    pub sms_per_second: u32,
    /// How long after a survey text a reply still answers it.
    pub sms_reply_window: std::time::Duration,
}

impl Settings {
    /// The base URL the provider reaches us on; without configuration, the bind address.
    pub fn public_base(&self) -> &str {
        self.public_url
            .as_deref()
            .unwrap_or("http://127.0.0.1:8080")
    }

    pub fn new(serve: &ServeArgs, phone: &PhoneArgs) -> Self {
        Self {
            default_region: phone.default_region,
            public_url: Some(
                serve
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", serve.bind)),
            ),
            account_sid: serve.account_sid.clone(),
            auth_token: serve.auth_token.clone(),
            api_base: serve.api_base.clone(),
            max_body_bytes: serve.max_body_bytes,
            max_upload_bytes: serve.max_upload_bytes,
            request_timeout: std::time::Duration::from_secs(serve.request_timeout_secs),
            limits: serve.limits.settings(),
            sms_per_second: serve.sms_per_second,
            sms_reply_window: std::time::Duration::from_secs(serve.sms_reply_window_hours * 3600),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_region: Region::GB,
            public_url: None,
            account_sid: None,
            auth_token: None,
            api_base: "https://api.twilio.com".into(),
            max_body_bytes: 1024 * 1024,
            max_upload_bytes: 256 * 1024 * 1024,
            request_timeout: std::time::Duration::from_secs(30),
            limits: crate::limits::LimitSettings::default(),
            sms_per_second: 1,
            sms_reply_window: std::time::Duration::from_secs(72 * 3600),
        }
    }
}
