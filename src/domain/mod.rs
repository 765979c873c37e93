//! Domain types: parsed once at the edge (HTTP, CSV, CLI), then trusted everywhere else.

pub mod campaign;
pub mod credentials;
pub mod phone;
pub mod sms;
pub mod targeting;

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

/// Where "now" comes from. The server uses the system clock; tests and the simulator
/// pin or advance it so calling hours and retry gaps are reproducible.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// Milliseconds since the epoch, shared so a test can move it.
    Manual(std::sync::Arc<std::sync::atomic::AtomicI64>),
}

impl Clock {
    pub fn manual(at: jiff::Timestamp) -> Self {
        Self::Manual(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
            at.as_millisecond(),
        )))
    }

    pub fn now(&self) -> jiff::Timestamp {
        match self {
            Self::System => jiff::Timestamp::now(),
            Self::Manual(ms) => {
                jiff::Timestamp::from_millisecond(ms.load(std::sync::atomic::Ordering::Relaxed))
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            }
        }
    }

    /// Move a manual clock; the system clock ignores this.
    pub fn set(&self, at: jiff::Timestamp) {
        if let Self::Manual(ms) = self {
            ms.store(at.as_millisecond(), std::sync::atomic::Ordering::Relaxed);
        }
    }
}
