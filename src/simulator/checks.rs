//! What the carrier can see, checked against the guarantees. Everything here is
//! observed from the outside (the TwiML the server answered, the numbers it dialled,
//! the keys volunteers pressed), then compared with the server's own report.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use serde::Serialize;

use super::people::Plan;
use crate::domain::{CallingHours, Disposition};

/// One guarantee and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    /// What was measured, or the first violations.
    pub detail: String,
}

/// Live counters for the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    pub announced: AtomicU64,
    pub dials: AtomicU64,
    pub connected: AtomicU64,
    pub surveys: AtomicU64,
    pub answers: AtomicU64,
    pub opt_outs: AtomicU64,
    pub call_backs: AtomicU64,
    pub rang_back: AtomicU64,
    pub texts_received: AtomicU64,
    pub text_replies: AtomicU64,
    /// Replies that answer the question plainly (stored as answers).
    pub texted_answers: AtomicU64,
}

#[derive(Default)]
struct Seen {
    live: HashSet<String>,
    /// Dial times per (number, name): one member.
    dials: HashMap<(String, String), Vec<Timestamp>>,
    finished: HashSet<(String, String)>,
    opted_out: HashMap<String, Timestamp>,
    by_reference: HashMap<i64, (String, String)>,
    announced: HashMap<i64, (String, Timestamp)>,
    tally: BTreeMap<(String, String), i64>,
    violations: BTreeMap<&'static str, Vec<String>>,
    violation_counts: BTreeMap<&'static str, u64>,
}

/// What a seat may take per hour (target seats with a rate limit).
#[derive(Debug, Clone)]
pub struct SeatLimit {
    pub rate_per_hour: i64,
    pub burst: i64,
}

pub struct Observer {
    seen: Mutex<Seen>,
    pub counters: Counters,
    campaign_number: String,
    /// National significant numbers (10 digits) of every member.
    member_digits: HashSet<String>,
    hours: CallingHours,
    max_attempts: usize,
    seat_limits: HashMap<String, SeatLimit>,
}

const NO_DUPLICATES: &str = "no member dialled twice by mistake";
const CALLER_ID: &str = "caller ID is always the campaign number";
const MASKING: &str = "no member number reaches a volunteer";
const OPT_OUT: &str = "opt-outs hold: no dial after STOP or the opt-out key";
const CONFIRMED: &str = "every dial confirmed by a live volunteer's key press";
const HOURS: &str = "calls only inside calling hours, member's local time";
const TWIML: &str = "every webhook answered 2xx with valid TwiML";

impl Observer {
    pub fn new(
        campaign_number: &str,
        member_numbers: impl IntoIterator<Item = String>,
        hours: CallingHours,
        max_attempts: usize,
        seat_limits: HashMap<String, SeatLimit>,
    ) -> Self {
        Self {
            seen: Mutex::default(),
            counters: Counters::default(),
            campaign_number: campaign_number.to_owned(),
            member_digits: member_numbers
                .into_iter()
                .filter_map(|n| national_digits(&n))
                .collect(),
            hours,
            max_attempts,
            seat_limits,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Seen) -> R) -> R {
        let mut guard = match self.seen.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn violate(seen: &mut Seen, check: &'static str, what: String) {
        *seen.violation_counts.entry(check).or_default() += 1;
        let v = seen.violations.entry(check).or_default();
        if v.len() < 5 {
            v.push(what);
        }
    }

    pub fn announced(&self, reference: i64, seat: &str, now: Timestamp) {
        self.with(|s| {
            if s.announced
                .insert(reference, (seat.to_owned(), now))
                .is_none()
            {
                self.counters.announced.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    pub fn dial_started(
        &self,
        reference: i64,
        number: &str,
        name: &str,
        caller_id: &str,
        confirmed: bool,
        now: Timestamp,
    ) {
        self.counters.dials.fetch_add(1, Ordering::Relaxed);
        let inside = self.hours.allows_in(now, crate::domain::DEFAULT_TIME_ZONE)
            || self.hours.allows_in(
                now - jiff::SignedDuration::from_secs(60),
                crate::domain::DEFAULT_TIME_ZONE,
            );
        self.with(|s| {
            if caller_id != self.campaign_number {
                Self::violate(s, CALLER_ID, format!("callerId {caller_id:?}"));
            }
            if !confirmed {
                Self::violate(s, CONFIRMED, format!("dial of reference {reference}"));
            }
            if !inside {
                Self::violate(s, HOURS, format!("dial at {now}"));
            }
            if !s.live.insert(number.to_owned()) {
                Self::violate(
                    s,
                    NO_DUPLICATES,
                    format!("reference {reference}: number already on a live call"),
                );
            }
            if let Some(at) = s.opted_out.get(number) {
                Self::violate(
                    s,
                    OPT_OUT,
                    format!("reference {reference}: dialled after opting out at {at}"),
                );
            }
            let key = (number.to_owned(), name.to_owned());
            if s.finished.contains(&key) {
                Self::violate(
                    s,
                    NO_DUPLICATES,
                    format!("reference {reference}: {name} dialled after being finished"),
                );
            }
            let times = s.dials.entry(key.clone()).or_default();
            times.push(now);
            let dialled = times.len();
            if dialled > self.max_attempts {
                Self::violate(s, NO_DUPLICATES, format!("{name} dialled {dialled} times"));
            }
            s.by_reference.insert(reference, key);
        });
    }

    pub fn dial_ended(&self, number: &str) {
        self.with(|s| s.live.remove(number));
    }

    /// The volunteer moved on from this member after keying `plan`.
    pub fn member_done(&self, reference: i64, plan: Plan, surveyed: bool, now: Timestamp) {
        self.with(|s| {
            let Some(key) = s.by_reference.get(&reference).cloned() else {
                return;
            };
            let finished = match plan {
                Plan::Survey => surveyed,
                Plan::OptOut => true,
                Plan::Disposition(d) => matches!(
                    d,
                    Disposition::Refused | Disposition::WrongNumber | Disposition::MovedOrDeceased
                ),
            };
            if plan == Plan::Survey && surveyed {
                self.counters.surveys.fetch_add(1, Ordering::Relaxed);
            }
            if finished {
                s.finished.insert(key.clone());
            }
            if plan == Plan::OptOut {
                self.counters.opt_outs.fetch_add(1, Ordering::Relaxed);
                s.opted_out.entry(key.0).or_insert(now);
            }
        });
    }

    pub fn connected(&self) {
        self.counters.connected.fetch_add(1, Ordering::Relaxed);
    }

    /// A number opted out by text or by the call-back opt-out key.
    pub fn opted_out(&self, number: &str, now: Timestamp) {
        self.counters.opt_outs.fetch_add(1, Ordering::Relaxed);
        self.with(|s| {
            s.opted_out.entry(number.to_owned()).or_insert(now);
        });
    }

    /// Answers keyed for one member (undo already applied).
    pub fn keyed(&self, answers: &[(String, String)]) {
        self.counters
            .answers
            .fetch_add(answers.len() as u64, Ordering::Relaxed);
        self.with(|s| {
            for a in answers {
                *s.tally.entry(a.clone()).or_default() += 1;
            }
        });
    }

    /// A member's reply that names one option plainly: the server must store it.
    pub fn texted(&self, question: &str, option: &str) {
        self.counters.texted_answers.fetch_add(1, Ordering::Relaxed);
        self.with(|s| {
            *s.tally
                .entry((question.to_owned(), option.to_owned()))
                .or_default() += 1;
        });
    }

    pub fn call_back_placed(&self) {
        self.counters.call_backs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn member_rang_back(&self) {
        self.counters.rang_back.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bad_twiml(&self, url: &str, why: &str) {
        self.with(|s| Self::violate(s, TWIML, format!("{url}: {why}")));
    }

    /// Everything a volunteer heard or was sent must be free of member numbers, in any
    /// spelling: `+447700900123`, `447700900123`, `07700 900123`, or read out digit by
    /// digit.
    pub fn shown_to_volunteer(&self, text: &str) {
        let mut run = String::new();
        let mut leaks = Vec::new();
        for c in text.chars().chain(std::iter::once('x')) {
            if c.is_ascii_digit() {
                run.push(c);
            } else if !matches!(c, ' ' | '+' | '-' | '.' | '(' | ')' | ',') {
                if run.len() >= 10 {
                    for i in 0..=run.len() - 10 {
                        if self.member_digits.contains(&run[i..i + 10]) {
                            leaks.push(format!("…{}", &run[i + 6..i + 10]));
                        }
                    }
                }
                run.clear();
            }
        }
        if !leaks.is_empty() {
            self.with(|s| {
                for l in leaks {
                    Self::violate(s, MASKING, format!("a member number ending {l}"));
                }
            });
        }
    }

    /// Every keyed answer, by (question code, option code).
    pub fn tally(&self) -> BTreeMap<(String, String), i64> {
        self.with(|s| s.tally.clone())
    }

    /// Dials observed.
    pub fn dials(&self) -> u64 {
        self.counters.dials.load(Ordering::Relaxed)
    }

    /// The verdict: the guarantees observed during the run, plus the comparisons with
    /// the server's report (`answers_reported` by question and option code,
    /// `attempts_reported`) and the carrier's own traffic counters.
    pub fn verdict(
        &self,
        answers_reported: &BTreeMap<(String, String), i64>,
        attempts_reported: i64,
        lost_dials: u64,
        webhook_failures: u64,
        failure_samples: &[String],
    ) -> Vec<Check> {
        self.with(|s| {
            let mut checks = Vec::new();
            // Checks over nothing prove nothing: an evening without a dial fails.
            checks.push(Check {
                name: "the evening was exercised",
                passed: self.counters.dials.load(Ordering::Relaxed) > 0,
                detail: format!(
                    "{} dials, {} answers keyed or texted, {} opt-outs",
                    self.counters.dials.load(Ordering::Relaxed),
                    s.tally.values().sum::<i64>(),
                    s.opted_out.len()
                ),
            });
            let mut simple = |name: &'static str, measured: String| {
                let count = s.violation_counts.get(name).copied().unwrap_or(0);
                checks.push(Check {
                    name,
                    passed: count == 0,
                    detail: if count == 0 {
                        measured
                    } else {
                        format!(
                            "{count} violation(s): {}",
                            s.violations.get(name).map(|v| v.join("; ")).unwrap_or_default()
                        )
                    },
                });
            };
            let dials = self.counters.dials.load(Ordering::Relaxed);
            let members = s.dials.len();
            simple(
                NO_DUPLICATES,
                format!("{dials} dials to {members} members, none concurrent, none after a final outcome, at most {} each", self.max_attempts),
            );
            simple(CALLER_ID, format!("{dials} dials checked"));
            simple(MASKING, "every document and text a volunteer received, read for member numbers".into());
            simple(OPT_OUT, format!("{} numbers opted out during the run", s.opted_out.len()));
            simple(CONFIRMED, format!("{dials} dials, each after the volunteer pressed 1"));
            simple(HOURS, format!("{dials} dials checked against the campaign's hours"));
            let twiml_count = s.violation_counts.get(TWIML).copied().unwrap_or(0);
            checks.push(Check {
                name: TWIML,
                passed: twiml_count == 0 && webhook_failures == 0,
                detail: if twiml_count == 0 && webhook_failures == 0 {
                    "no error, timeout or unreadable document".into()
                } else {
                    format!(
                        "{webhook_failures} failed webhook(s), {twiml_count} unreadable: {} {}",
                        failure_samples.join("; "),
                        s.violations.get(TWIML).map(|v| v.join("; ")).unwrap_or_default()
                    )
                },
            });
            checks.push(seat_limit_check(&s.announced, &self.seat_limits));
            let keyed: i64 = s.tally.values().sum();
            let stored: i64 = answers_reported.values().sum();
            let diff: Vec<String> = s
                .tally
                .keys()
                .chain(answers_reported.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| s.tally.get(k) != answers_reported.get(k))
                .take(5)
                .map(|(q, o)| {
                    format!(
                        "{q}={o}: keyed {}, reported {}",
                        s.tally.get(&(q.clone(), o.clone())).unwrap_or(&0),
                        answers_reported.get(&(q.clone(), o.clone())).unwrap_or(&0)
                    )
                })
                .collect();
            checks.push(Check {
                name: "every keyed or texted answer is in the report, once",
                passed: diff.is_empty(),
                detail: if diff.is_empty() {
                    format!("{keyed} answers keyed or texted, {stored} reported")
                } else {
                    diff.join("; ")
                },
            });
            // A dial whose TwiML was lost to a duplicated delivery is an attempt the
            // server must not dial again: it counts, though the carrier never rang.
            checks.push(Check {
                name: "every dial is an attempt in the report",
                passed: (dials + lost_dials) as i64 == attempts_reported,
                detail: format!(
                    "{dials} dials seen + {lost_dials} lost to duplicated deliveries, {attempts_reported} attempts reported"
                ),
            });
            checks
        })
    }
}

/// Claims per seat in any hour never exceed the seat's rate plus its burst.
fn seat_limit_check(
    announced: &HashMap<i64, (String, Timestamp)>,
    limits: &HashMap<String, SeatLimit>,
) -> Check {
    let mut by_seat: HashMap<&str, Vec<Timestamp>> = HashMap::new();
    for (seat, at) in announced.values() {
        if limits.contains_key(seat) {
            by_seat.entry(seat).or_default().push(*at);
        }
    }
    let mut worst: Option<(String, usize, i64)> = None;
    let mut failures = Vec::new();
    for (seat, times) in &mut by_seat {
        times.sort();
        let Some(limit) = limits.get(*seat) else {
            continue;
        };
        let cap = limit.rate_per_hour + limit.burst;
        let mut window: VecDeque<Timestamp> = VecDeque::new();
        let mut max = 0;
        for t in times.iter() {
            window.push_back(*t);
            while window
                .front()
                .is_some_and(|f| *t - jiff::SignedDuration::from_secs(3600) >= *f)
            {
                window.pop_front();
            }
            max = max.max(window.len());
        }
        if max as i64 > cap {
            failures.push(format!("{seat}: {max} claims in an hour, limit {cap}"));
        }
        if worst.as_ref().is_none_or(|w| max > w.1) {
            worst = Some(((*seat).to_owned(), max, cap));
        }
    }
    Check {
        name: "per-seat rate limits hold",
        passed: failures.is_empty(),
        detail: if failures.is_empty() {
            match worst {
                Some((seat, max, cap)) => format!(
                    "{} limited seats; busiest: {seat}, {max} claims in its busiest hour (rate + burst {cap})",
                    limits.len()
                ),
                None => format!("{} limited seats, none claimed", limits.len()),
            }
        } else {
            failures.join("; ")
        },
    }
}

/// The last ten digits of a UK number (the national significant number).
fn national_digits(e164: &str) -> Option<String> {
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    (digits.len() >= 10).then(|| digits[digits.len() - 10..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observer() -> Observer {
        Observer::new(
            "+442079460999",
            ["+447700900123".to_owned()],
            CallingHours::default(),
            3,
            HashMap::new(),
        )
    }

    #[test]
    fn a_number_in_any_spelling_is_a_leak() {
        for text in [
            "<Say>Call +447700900123 now</Say>",
            "<Say>07700 900123</Say>",
            "<Say>4 4 7 7 0 0 9 0 0 1 2 3</Say>",
            "<Say>(0)7700-900-123</Say>",
        ] {
            let o = observer();
            o.shown_to_volunteer(text);
            let v = o.verdict(&BTreeMap::new(), 0, 0, 0, &[]);
            assert!(
                !v.iter().find(|c| c.name == MASKING).unwrap().passed,
                "{text}"
            );
        }
    }

    #[test]
    fn references_and_menus_are_not_leaks() {
        let o = observer();
        o.shown_to_volunteer(
            "<Say>Call reference 1 2 3 4. For no answer, press 1. For busy, press 2.</Say><Dial callerId=\"+442079460999\"></Dial>",
        );
        let v = o.verdict(&BTreeMap::new(), 0, 0, 0, &[]);
        assert!(v.iter().find(|c| c.name == MASKING).unwrap().passed);
    }

    #[test]
    fn a_second_dial_to_a_finished_member_fails() {
        let o = observer();
        let t: Timestamp = "2026-12-08T18:00:00Z".parse().unwrap();
        o.dial_started(1, "+447700900123", "Ann", "+442079460999", true, t);
        o.dial_ended("+447700900123");
        o.member_done(1, Plan::Disposition(Disposition::Refused), false, t);
        o.dial_started(2, "+447700900123", "Ann", "+442079460999", true, t);
        let v = o.verdict(&BTreeMap::new(), 2, 0, 0, &[]);
        assert!(!v.iter().find(|c| c.name == NO_DUPLICATES).unwrap().passed);
    }

    #[test]
    fn seat_limits_are_counted_over_a_sliding_hour() {
        let t: Timestamp = "2026-12-08T18:00:00Z".parse().unwrap();
        let mut announced = HashMap::new();
        for i in 0..7 {
            announced.insert(
                i,
                ("Hendon".to_owned(), t + jiff::SignedDuration::from_mins(i)),
            );
        }
        let limits = HashMap::from([(
            "Hendon".to_owned(),
            SeatLimit {
                rate_per_hour: 4,
                burst: 2,
            },
        )]);
        assert!(!seat_limit_check(&announced, &limits).passed);
        announced.remove(&6);
        assert!(seat_limit_check(&announced, &limits).passed);
    }
}
