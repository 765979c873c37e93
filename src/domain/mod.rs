//! Domain types: parsed once at the edge (HTTP, CSV, CLI), then trusted everywhere else.

pub mod campaign;
pub mod credentials;
pub mod phone;

pub use campaign::{
    AnswerOption, CallingHours, CampaignStatus, Disposition, FieldError, Question, RetryPolicy,
    RetryRule, Script,
};
pub use credentials::{ApiToken, Pin};
pub use phone::{PhoneError, PhoneNumber};

/// Milliseconds since the Unix epoch, UTC. Both backends store instants this way so the
/// schema, the comparisons and the arithmetic are identical on SQLite and PostgreSQL.
pub type UnixMillis = i64;

pub fn now_millis() -> UnixMillis {
    jiff::Timestamp::now().as_millisecond()
}

/// The time zone for UK seats, DST included.
pub const DEFAULT_TIME_ZONE: &str = "Europe/London";
