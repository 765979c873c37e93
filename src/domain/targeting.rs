//! Where effort goes: which seats a campaign serves, in what proportion, and how fast.
//!
//! Seats carry the organisation's targeting (target flag, weight, per-seat limits: the
//! marginals are the same for every campaign). A campaign adds how non-target seats are
//! treated and which members of a seat come first. Two pure pieces live here so they can
//! be tested on their own: the stride scheduler's step and the GCRA rate limit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::FieldError;

/// How seats that are not targets are served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NonTargets {
    /// Never.
    Exclude,
    /// Only when no target seat has anyone eligible and budget left.
    #[default]
    Fallback,
    /// Alongside the targets, in proportion to their weights (target flag ignored).
    Blend,
}

impl NonTargets {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exclude => "exclude",
            Self::Fallback => "fallback",
            Self::Blend => "blend",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Exclude, Self::Fallback, Self::Blend]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// A campaign's targeting settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Targeting {
    #[serde(default)]
    pub non_targets: NonTargets,
    /// A member attribute (a CSV column kept at import, e.g. `membership`) whose values
    /// order members within a seat.
    #[serde(default)]
    pub attribute: Option<String>,
    /// Weight per value of `attribute`: higher first (e.g. `{"full": 2, "supporter": 1}`).
    /// Values not listed weigh 0.
    #[serde(default)]
    pub attribute_weights: BTreeMap<String, i64>,
}

impl Targeting {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.into(),
                message,
            })
        };
        if let Some(a) = &self.attribute
            && (a.is_empty()
                || a.len() > 64
                || !a
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            err(
                "attribute",
                "an attribute name is 1-64 letters, digits, '_' or '-'".into(),
            );
        }
        if self.attribute.is_none() && !self.attribute_weights.is_empty() {
            err(
                "attribute",
                "attribute_weights need the attribute they weigh".into(),
            );
        }
        for (value, w) in &self.attribute_weights {
            if !(0..=1000).contains(w) {
                err(
                    &format!("attribute_weights.{value}"),
                    "weights are 0 to 1000".into(),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Stride scheduling: a seat's pass advances by `STRIDE / weight` each time it is
/// served, and the seat with the lowest next pass (pass + stride) is served next. Over
/// any run of claims the seats' shares match their weights to within one claim each;
/// it is deterministic, and its state is one integer per seat, so it lives in the
/// database beside the claim.
/// 720720 is divisible by every weight up to 16, so small weights step exactly.
pub const STRIDE: i64 = 720_720 << 20;

pub fn stride(weight: i64) -> i64 {
    STRIDE / weight.max(1)
}

/// A per-seat rate limit as GCRA: `rate_per_hour` attempts with bursts of `burst`.
/// State is one instant per seat, the theoretical arrival time (TAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatLimit {
    /// Milliseconds between attempts at the sustained rate (`T`); 0 = unlimited.
    pub interval_ms: i64,
    /// How far the TAT may run ahead of now (`tau = T * (burst - 1)`).
    pub tolerance_ms: i64,
}

impl SeatLimit {
    pub fn new(rate_per_hour: Option<i64>, burst: Option<i64>) -> Self {
        match rate_per_hour {
            Some(rate) if rate > 0 => {
                let interval_ms = 3_600_000 / rate;
                let burst = burst.unwrap_or(1).max(1);
                Self {
                    interval_ms,
                    tolerance_ms: interval_ms * (burst - 1),
                }
            }
            _ => Self {
                interval_ms: 0,
                tolerance_ms: 0,
            },
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.interval_ms == 0
    }

    /// May an attempt start at `now` given the stored `tat`? Without a limit, always:
    /// a TAT left over from a limit since lifted must not hold the seat back.
    pub fn allows(&self, tat: i64, now: i64) -> bool {
        self.is_unlimited() || now >= tat - self.tolerance_ms
    }

    /// The TAT after an attempt at `now`.
    pub fn next_tat(&self, tat: i64, now: i64) -> i64 {
        tat.max(now) + self.interval_ms
    }
}

/// The local calendar day (as `yyyymmdd`) of an instant in an IANA zone, for daily caps.
/// An unknown zone counts in UTC.
pub fn local_day(at: jiff::Timestamp, zone: &str) -> i64 {
    let tz = jiff::tz::TimeZone::get(zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let d = at.to_zoned_datetime(tz).date();
    i64::from(d.year()) * 10_000 + i64::from(d.month()) * 100 + i64::from(d.day())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious model: an attempt is allowed if fewer than `burst` attempts fall in
    /// the window the sustained rate would have drained.
    fn admitted(limit: SeatLimit, times: &[i64]) -> Vec<bool> {
        let mut tat = 0;
        times
            .iter()
            .map(|&t| {
                if limit.allows(tat, t) {
                    tat = limit.next_tat(tat, t);
                    true
                } else {
                    false
                }
            })
            .collect()
    }

    #[test]
    fn ten_an_hour_with_burst_five() {
        let limit = SeatLimit::new(Some(10), Some(5));
        let t0 = 1_000_000_000;
        // Five at once, then the sixth is refused.
        let got = admitted(limit, &[t0; 6]);
        assert_eq!(got, [true, true, true, true, true, false]);
        // One more every six minutes after that.
        let mut times = vec![t0; 5];
        times.push(t0 + 5 * 60_000);
        times.push(t0 + 6 * 60_000);
        assert_eq!(admitted(limit, &times)[5..], [false, true]);
    }

    #[test]
    fn no_rate_means_no_limit() {
        let limit = SeatLimit::new(None, Some(3));
        assert!(admitted(limit, &[5; 100]).into_iter().all(|a| a));
        // Even with a TAT far ahead, left by a limit that was lifted.
        assert!(limit.allows(i64::MAX / 2, 0));
    }

    #[test]
    fn local_days_follow_the_zone() {
        let t: jiff::Timestamp = "2026-06-30T23:30:00Z".parse().unwrap();
        assert_eq!(local_day(t, "Europe/London"), 20260701);
        assert_eq!(local_day(t, "UTC"), 20260630);
    }

    #[test]
    fn stride_shares_match_weights() {
        let weights = [3i64, 2, 1];
        let mut pass = [0i64; 3];
        let mut served = [0; 3];
        for _ in 0..600 {
            let i = (0..3).min_by_key(|&i| (pass[i], i)).unwrap();
            served[i] += 1;
            pass[i] += stride(weights[i]);
        }
        assert_eq!(served, [300, 200, 100]);
    }

    proptest! {
        /// Over any window of length `w`, at most `burst + w / T` attempts are admitted.
        #[test]
        fn never_more_than_burst_plus_rate(
            rate in 1i64..500,
            burst in 1i64..20,
            mut gaps in proptest::collection::vec(0i64..120_000, 1..300),
        ) {
            let limit = SeatLimit::new(Some(rate), Some(burst));
            let mut t = 0;
            let times: Vec<i64> = gaps.drain(..).map(|g| { t += g; t }).collect();
            let ok = admitted(limit, &times);
            let admitted_times: Vec<i64> = times.iter().zip(&ok).filter(|(_, a)| **a).map(|(t, _)| *t).collect();
            for (i, &start) in admitted_times.iter().enumerate() {
                for (j, &end) in admitted_times.iter().enumerate().skip(i) {
                    let n = (j - i + 1) as i64;
                    let allowed = burst + (end - start) / limit.interval_ms;
                    prop_assert!(n <= allowed, "{n} admitted in {} ms (rate {rate}/h, burst {burst})", end - start);
                }
            }
        }
    }
}
