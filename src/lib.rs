//! phonebank: a phone-banking server. Volunteers phone party members one at a time from
//! a central queue, through a Twilio-style telephony API that keeps both sides' numbers
//! private; organisers steer the effort to target seats over an HTTP API.
//!
//! # Layout
//!
//! * [`domain`]: the vocabulary, parsed at the edge: E.164 phone numbers, scripts and
//!   their validation, dispositions, calling hours, retry policy, PINs and tokens.
//! * [`store`]: persistence on SQLite (embedded default) or PostgreSQL, one `Store` over
//!   a portable schema; SQL sits in the submodule of the thing it stores.
//! * [`import`]: streaming CSV imports of seats and members with per-line rejections.
//! * [`http`]: the axum application: the organiser API (`/api/v1`, OpenAPI generated
//!   from the handlers), the provider's webhooks (`/webhooks/...`), `/healthz`,
//!   `/readyz`, `/metrics`.
//! * [`telephony`]: the provider boundary: webhook signatures, TwiML, the REST client.
//! * [`callback`]: ringing a volunteer through the REST API (call-back sessions).
//! * [`limits`]: in-process rate limits (API tokens, PIN tries, SMS senders, call pacing).
//! * [`sweeper`]: periodic housekeeping of idle leases and calls to reconcile.
//! * [`simulator`]: the carrier as a test double (signed webhooks, TwiML followed,
//!   REST API served) with simulated volunteers and members and the guarantee checks.
//! * [`demo`]: `phonebank demo`, an evening of the simulator against real servers.
//! * [`sms_worker`]: the survey-text sender (paced, calling hours, opt-outs checked
//!   right before each send).
//! * [`cli`]: the `phonebank` command line; `main.rs` only calls [`cli::run`].
//! * [`config`]: settings from flags and environment variables.
//!
//! `docs/ARCHITECTURE.md` explains the choices.

pub mod callback;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod http;
pub mod import;
pub mod limits;
pub mod simulator;
pub mod sms_worker;
pub mod store;
pub mod sweeper;
pub mod telephony;
