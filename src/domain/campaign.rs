//! Campaigns: the script volunteers follow, the outcomes they record, and when and how
//! often a member may be tried.
//!
//! A script is a small directed graph of questions. Each option has a keypad digit (what
//! the volunteer presses), a stable `code` (what is stored, so answers survive a reworded
//! label) and SMS keywords (what a member may text back). Options lead to another
//! question or end the script. Validation here is the only gate: the store keeps the
//! script as a JSON document and trusts it.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::ZonedDateTime;
use jiff::civil::{Time, Weekday};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::text::control_character;

/// Keys the volunteer loop keeps for itself on every answer menu; options may not use them.
pub const UNDO_KEY: char = '9';
pub const OTHER_OUTCOMES_KEY: char = '0';
/// Words that always mean "stop texting me" (provider and CTIA convention). An option's
/// SMS keyword can never be one of them: an opt-out must never be read as an answer.
pub const OPT_OUT_WORDS: &[&str] = &[
    "stop",
    "stopall",
    "unsubscribe",
    "cancel",
    "end",
    "quit",
    "revoke",
    "optout",
];
const CONTROL_WORDS: &[&str] = &["start", "unstop", "help", "call"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Being set up; nobody is called.
    Draft,
    Active,
    /// Volunteers are told the campaign is paused; nothing is dialled or sent.
    Paused,
    /// Closed for good; results stay readable.
    Finished,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Finished => "finished",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "draft" => Self::Draft,
            "active" => Self::Active,
            "paused" => Self::Paused,
            "finished" => Self::Finished,
            _ => return None,
        })
    }
}

/// How a call ended when it did not produce a survey, recorded alongside the answers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    NoAnswer,
    Busy,
    AnsweringMachine,
    WrongNumber,
    CallBackLater,
    Refused,
    MovedOrDeceased,
    /// The line failed or the volunteer hit a problem; the member is tried again.
    TechnicalProblem,
}

impl Disposition {
    pub const ALL: [Disposition; 8] = [
        Self::NoAnswer,
        Self::Busy,
        Self::AnsweringMachine,
        Self::WrongNumber,
        Self::CallBackLater,
        Self::Refused,
        Self::MovedOrDeceased,
        Self::TechnicalProblem,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoAnswer => "no_answer",
            Self::Busy => "busy",
            Self::AnsweringMachine => "answering_machine",
            Self::WrongNumber => "wrong_number",
            Self::CallBackLater => "call_back_later",
            Self::Refused => "refused",
            Self::MovedOrDeceased => "moved_or_deceased",
            Self::TechnicalProblem => "technical_problem",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// What the volunteer hears on the outcome menu.
    pub fn spoken(self) -> &'static str {
        match self {
            Self::NoAnswer => "no answer",
            Self::Busy => "busy",
            Self::AnsweringMachine => "answering machine",
            Self::WrongNumber => "wrong number",
            Self::CallBackLater => "call back later",
            Self::Refused => "refused to talk",
            Self::MovedOrDeceased => "moved away or deceased",
            Self::TechnicalProblem => "a technical problem",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Questions in order; the first one is where every call starts.
    pub questions: Vec<Question>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// Stable identifier, lower-case letters, digits and `_` (e.g. `voting_intention`).
    pub code: String,
    /// What the volunteer asks (and, for texts, what the member reads).
    pub text: String,
    pub options: Vec<AnswerOption>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerOption {
    /// The keypad digit, `1` to `8` (`9` is undo and `0` the other-outcomes menu).
    #[schema(value_type = String, example = "1")]
    pub digit: char,
    /// Stable code stored with each answer (e.g. `yes`).
    pub code: String,
    /// What the volunteer hears for this digit.
    pub label: String,
    /// Words a member may text back for this option (matched case-insensitively).
    #[serde(default)]
    pub sms_keywords: Vec<String>,
    /// Code of the next question; absent or null ends the script.
    #[serde(default)]
    pub next: Option<String>,
}

/// When members may be called or texted, in each member's own time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallingHours {
    /// Windows per weekday (`mon` ... `sun`); a day that is absent has no calling.
    #[schema(value_type = BTreeMap<String, Window>)]
    pub days: BTreeMap<DayName, Window>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DayName {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl DayName {
    fn of(weekday: Weekday) -> Self {
        match weekday {
            Weekday::Monday => Self::Mon,
            Weekday::Tuesday => Self::Tue,
            Weekday::Wednesday => Self::Wed,
            Weekday::Thursday => Self::Thu,
            Weekday::Friday => Self::Fri,
            Weekday::Saturday => Self::Sat,
            Weekday::Sunday => Self::Sun,
        }
    }
}

/// A local-time window, start inclusive and end exclusive (`"10:00"` to `"20:30"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    #[schema(value_type = String, example = "10:00")]
    pub start: Time,
    #[schema(value_type = String, example = "20:30")]
    pub end: Time,
}

impl Default for CallingHours {
    /// 10:00 to 20:30 on weekdays, 10:00 to 18:00 at weekends: the conservative default
    /// suggested by the UK research (no statutory hours; be well inside what is polite).
    fn default() -> Self {
        let weekday = Window {
            start: Time::constant(10, 0, 0, 0),
            end: Time::constant(20, 30, 0, 0),
        };
        let weekend = Window {
            start: Time::constant(10, 0, 0, 0),
            end: Time::constant(18, 0, 0, 0),
        };
        let mut days = BTreeMap::new();
        for d in [
            DayName::Mon,
            DayName::Tue,
            DayName::Wed,
            DayName::Thu,
            DayName::Fri,
        ] {
            days.insert(d, weekday);
        }
        days.insert(DayName::Sat, weekend);
        days.insert(DayName::Sun, weekend);
        Self { days }
    }
}

impl CallingHours {
    /// Is `at` (already in the member's zone, so DST is applied) inside the window?
    pub fn allows(&self, at: &ZonedDateTime) -> bool {
        let Some(window) = self.days.get(&DayName::of(at.weekday())) else {
            return false;
        };
        let t = at.time();
        window.start <= t && t < window.end
    }

    /// Is the instant inside the window in the IANA zone `zone`? The instant is
    /// converted, so DST is the zone's business. An unknown zone is never inside.
    pub fn allows_in(&self, at: jiff::Timestamp, zone: &str) -> bool {
        jiff::tz::TimeZone::get(zone)
            .map(|tz| self.allows(&at.to_zoned_datetime(tz)))
            .unwrap_or(false)
    }
}

/// How often, and how far apart, a member may be tried after each disposition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Hard cap on attempts per member in this campaign, whatever the dispositions.
    pub max_attempts: u32,
    /// Per disposition. A disposition with `max_attempts: 0` is final.
    #[schema(value_type = BTreeMap<String, RetryRule>)]
    pub rules: BTreeMap<Disposition, RetryRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    /// Attempts allowed in total when the last one ended this way (0: never again).
    pub max_attempts: u32,
    /// Minimum minutes between the end of that attempt and the next one.
    pub gap_minutes: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        use Disposition::*;
        let rule = |max_attempts, gap_minutes| RetryRule {
            max_attempts,
            gap_minutes,
        };
        let rules = BTreeMap::from([
            (NoAnswer, rule(3, 240)),
            (Busy, rule(3, 30)),
            (AnsweringMachine, rule(3, 24 * 60)),
            (CallBackLater, rule(3, 60)),
            (WrongNumber, rule(0, 0)),
            (Refused, rule(0, 0)),
            (MovedOrDeceased, rule(0, 0)),
            (TechnicalProblem, rule(3, 30)),
        ]);
        Self {
            max_attempts: 3,
            rules,
        }
    }
}

impl RetryPolicy {
    /// The rule for a disposition; one that is not configured is final.
    pub fn rule(&self, d: Disposition) -> RetryRule {
        self.rules.get(&d).copied().unwrap_or(RetryRule {
            max_attempts: 0,
            gap_minutes: 0,
        })
    }
}

/// One problem with a submitted script or setting, addressed by a JSON-pointer-ish path
/// so an API client can highlight the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Script {
    /// Check everything a volunteer or the SMS matcher will rely on. Returns every problem,
    /// not just the first.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.questions.is_empty() {
            errors.push(err(
                "script.questions",
                "a script needs at least one question",
            ));
        }
        if self.questions.len() > 50 {
            errors.push(err("script.questions", "at most 50 questions"));
        }
        let mut codes = HashSet::new();
        for (qi, q) in self.questions.iter().enumerate() {
            let at = format!("script.questions[{qi}]");
            if !is_code(&q.code) {
                errors.push(err(format!("{at}.code"), "use 1-64 of a-z, 0-9 and _"));
            }
            if !codes.insert(q.code.as_str()) {
                errors.push(err(
                    format!("{at}.code"),
                    format!("duplicate question code {:?}", q.code),
                ));
            }
            if q.text.trim().is_empty() || q.text.len() > 1000 {
                errors.push(err(
                    format!("{at}.text"),
                    "question text must be 1-1000 characters",
                ));
            }
            if let Some(reason) = control_character(&q.text, true) {
                errors.push(err(format!("{at}.text"), format!("question text {reason}")));
            }
            if q.options.len() < 2 {
                errors.push(err(
                    format!("{at}.options"),
                    "a question needs at least two options",
                ));
            }
            let mut digits = HashSet::new();
            let mut option_codes = HashSet::new();
            let mut keywords = HashSet::new();
            for (oi, o) in q.options.iter().enumerate() {
                let at = format!("{at}.options[{oi}]");
                if !('1'..='8').contains(&o.digit) {
                    errors.push(err(
                        format!("{at}.digit"),
                        format!("use a digit from 1 to 8 ({UNDO_KEY} is undo, {OTHER_OUTCOMES_KEY} the other-outcomes menu)"),
                    ));
                }
                if !digits.insert(o.digit) {
                    errors.push(err(
                        format!("{at}.digit"),
                        format!("digit {} is used twice", o.digit),
                    ));
                }
                if !is_code(&o.code) {
                    errors.push(err(format!("{at}.code"), "use 1-64 of a-z, 0-9 and _"));
                }
                if !option_codes.insert(o.code.as_str()) {
                    errors.push(err(
                        format!("{at}.code"),
                        format!("duplicate option code {:?}", o.code),
                    ));
                }
                if o.label.trim().is_empty() || o.label.len() > 200 {
                    errors.push(err(format!("{at}.label"), "label must be 1-200 characters"));
                }
                if let Some(reason) = control_character(&o.label, false) {
                    errors.push(err(format!("{at}.label"), format!("label {reason}")));
                }
                for (ki, k) in o.sms_keywords.iter().enumerate() {
                    let at = format!("{at}.sms_keywords[{ki}]");
                    let k = k.trim().to_lowercase();
                    if k.is_empty() || k.contains(char::is_whitespace) {
                        errors.push(err(&at, "a keyword is one word"));
                    } else if let Some(reason) = control_character(&k, false) {
                        errors.push(err(&at, format!("keyword {reason}")));
                    } else if OPT_OUT_WORDS.contains(&k.as_str())
                        || CONTROL_WORDS.contains(&k.as_str())
                    {
                        errors.push(err(
                            &at,
                            format!("{k:?} is reserved for opt-out and control messages"),
                        ));
                    } else if !keywords.insert(k.clone()) {
                        errors.push(err(&at, format!("keyword {k:?} is used by two options")));
                    }
                }
            }
        }
        let index: HashMap<&str, usize> = self
            .questions
            .iter()
            .enumerate()
            .map(|(i, q)| (q.code.as_str(), i))
            .collect();
        for (qi, q) in self.questions.iter().enumerate() {
            for (oi, o) in q.options.iter().enumerate() {
                if let Some(next) = &o.next {
                    match index.get(next.as_str()) {
                        None => errors.push(err(
                            format!("script.questions[{qi}].options[{oi}].next"),
                            format!("no question with code {next:?}"),
                        )),
                        // Only forward jumps: no loops, so every call ends.
                        Some(&ni) if ni <= qi => errors.push(err(
                            format!("script.questions[{qi}].options[{oi}].next"),
                            "next must point to a later question (scripts cannot loop)",
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    pub fn question(&self, code: &str) -> Option<&Question> {
        self.questions.iter().find(|q| q.code == code)
    }
}

impl CallingHours {
    /// The earliest start any window may have, in the member's local time.
    pub const EARLIEST: Time = Time::constant(8, 0, 0, 0);
    /// The latest end any window may have (exclusive), in the member's local time.
    pub const LATEST: Time = Time::constant(21, 0, 0, 0);

    /// Every window must start before it ends and lie within 08:00-21:00 local: a floor
    /// an organiser cannot set aside (nobody is rung at 23:30 because of a typo). We
    /// found no statutory UK hours for live calls (`../shared/reference/reliability.md` §4.4); 08:00-21:00
    /// is the US FCC rule (47 CFR 64.1200(c)(1)), and the default window sits well
    /// inside it.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let errors: Vec<_> = self
            .days
            .iter()
            .filter_map(|(d, w)| {
                let message = if w.start >= w.end {
                    "start must be before end"
                } else if w.start < Self::EARLIEST || w.end > Self::LATEST {
                    "calling hours must lie within 08:00-21:00 local time"
                } else {
                    return None;
                };
                Some(err(
                    format!(
                        "calling_hours.days.{}",
                        serde_json::to_string(d)
                            .unwrap_or_default()
                            .trim_matches('"')
                    ),
                    message,
                ))
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl RetryPolicy {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.max_attempts == 0 || self.max_attempts > 20 {
            errors.push(err("retry_policy.max_attempts", "must be between 1 and 20"));
        }
        for (d, r) in &self.rules {
            if r.gap_minutes > 60 * 24 * 60 {
                errors.push(err(
                    format!("retry_policy.rules.{}", d.as_str()),
                    "gap is longer than 60 days",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_script() -> Script {
        serde_json::from_value(serde_json::json!({
            "questions": [
                {"code": "support", "text": "Will you vote for us?", "options": [
                    {"digit": "1", "code": "yes", "label": "Yes", "sms_keywords": ["y", "yes"], "next": "volunteer"},
                    {"digit": "2", "code": "no", "label": "No", "sms_keywords": ["n", "no"]},
                    {"digit": "3", "code": "undecided", "label": "Undecided"}
                ]},
                {"code": "volunteer", "text": "Would you help?", "options": [
                    {"digit": "1", "code": "yes", "label": "Yes"},
                    {"digit": "2", "code": "no", "label": "No"}
                ]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn a_well_formed_branching_script_validates() {
        assert_eq!(sample_script().validate(), Ok(()));
    }

    #[test]
    fn reserved_digits_loops_and_opt_out_keywords_are_refused() {
        let mut s = sample_script();
        s.questions[0].options[2].digit = '9';
        s.questions[1].options[0].next = Some("support".into());
        s.questions[0].options[1].sms_keywords.push("STOP".into());
        let errors = s.validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"script.questions[0].options[2].digit"),
            "{errors:?}"
        );
        assert!(
            fields.contains(&"script.questions[1].options[0].next"),
            "{errors:?}"
        );
        assert!(
            fields.contains(&"script.questions[0].options[1].sms_keywords[2]"),
            "{errors:?}"
        );
    }

    #[test]
    fn calling_hours_follow_the_member_clock_across_dst() {
        let hours = CallingHours::default();
        // 2026-03-30 is the Monday after the clocks go forward: 09:30 UTC is 10:30 BST.
        let at: jiff::Timestamp = "2026-03-30T09:30:00Z".parse().unwrap();
        assert!(hours.allows(&at.in_tz("Europe/London").unwrap()));
        // The Monday before, 09:30 UTC is 09:30 GMT: too early.
        let at: jiff::Timestamp = "2026-03-23T09:30:00Z".parse().unwrap();
        assert!(!hours.allows(&at.in_tz("Europe/London").unwrap()));
    }

    #[test]
    fn control_characters_in_question_text_labels_and_keywords_are_refused() {
        let mut s = sample_script();
        s.questions[0].text = "Will you vote\u{B} for us?".into();
        s.questions[0].options[0].label = "Yes\u{1}".into();
        s.questions[0].options[1].sms_keywords.push("n\u{0}".into());
        s.questions[1].text = "Would you help?\nPlease say.".into();
        let errors = s.validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "script.questions[0].text",
                "script.questions[0].options[0].label",
                "script.questions[0].options[1].sms_keywords[2]"
            ],
            "{errors:?}"
        );
    }

    #[test]
    fn calling_hours_must_lie_within_eight_to_nine() {
        let window = |start: &str, end: &str| -> CallingHours {
            serde_json::from_value(
                serde_json::json!({"days": {"mon": {"start": start, "end": end}}}),
            )
            .unwrap()
        };
        assert_eq!(window("08:00", "21:00").validate(), Ok(()));
        for (start, end) in [
            ("00:00", "23:59"),
            ("07:59", "20:00"),
            ("09:00", "21:01"),
            ("06:00", "12:00"),
        ] {
            let errors = window(start, end).validate().unwrap_err();
            assert_eq!(errors[0].field, "calling_hours.days.mon", "{start}-{end}");
            assert!(errors[0].message.contains("08:00-21:00"), "{errors:?}");
        }
        assert_eq!(CallingHours::default().validate(), Ok(()));
    }

    #[test]
    fn unconfigured_dispositions_are_final() {
        let policy = RetryPolicy {
            max_attempts: 3,
            rules: BTreeMap::new(),
        };
        assert_eq!(policy.rule(Disposition::Busy).max_attempts, 0);
    }
}
