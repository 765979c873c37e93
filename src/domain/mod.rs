//! Domain types: parsed once at the edge (HTTP, CSV, CLI), then trusted everywhere else.

pub mod campaign;
pub mod credentials;
pub mod phone;
pub mod sms;
pub mod targeting;
pub mod text;

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
    /// Simulated time running `factor` times faster than the wall clock from `origin`
    /// (the demo's evening in minutes). Every instance given a clone agrees on it.
    Scaled {
        origin: jiff::Timestamp,
        started: std::time::Instant,
        factor: f64,
    },
}

impl Clock {
    pub fn manual(at: jiff::Timestamp) -> Self {
        Self::Manual(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
            at.as_millisecond(),
        )))
    }

    /// A clock that starts at `origin` and runs `factor` times faster than real time.
    pub fn scaled(origin: jiff::Timestamp, factor: f64) -> Self {
        Self::Scaled {
            origin,
            started: std::time::Instant::now(),
            factor: factor.max(f64::MIN_POSITIVE),
        }
    }

    /// True for the wall clock: the one clock every process agrees on, so the database
    /// may stand in for it.
    pub fn is_system(&self) -> bool {
        matches!(self, Self::System)
    }

    pub fn now(&self) -> jiff::Timestamp {
        match self {
            Self::System => jiff::Timestamp::now(),
            Self::Scaled {
                origin,
                started,
                factor,
            } => {
                let elapsed = started.elapsed().as_secs_f64() * factor;
                jiff::Timestamp::from_millisecond(
                    origin.as_millisecond() + (elapsed * 1000.0) as i64,
                )
                .unwrap_or(*origin)
            }
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
