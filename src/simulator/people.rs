//! The people on the phones. A volunteer is a TwiML-following caller with a small
//! "brain" that listens to what is said and presses keys the way a person would: the
//! PIN when asked, 1 when told who is next, the option the member chose from the menu
//! read out. Members decide, per dial, whether they answer, are busy, let voicemail
//! pick up, hang up at once, or talk and answer the survey.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regex::Regex;

use super::twiml::{Doc, Node};
use super::{Sim, sleep_sim};
use crate::domain::Disposition;

/// How members behave when dialled. The rest of the probability mass is "no answer".
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Answers and talks (survey, refusal, opt-out, wrong number, call back later).
    pub answer: f64,
    pub busy: f64,
    pub voicemail: f64,
    /// Picks up and hangs up within seconds.
    pub hang_up_early: f64,
    pub failed: f64,
    /// Of those who talk: asks never to be called again.
    pub opt_out: f64,
    /// Of those who talk: refuses.
    pub refuse: f64,
    /// Of those who talk: wrong number.
    pub wrong_number: f64,
    /// Of those who talk: asks to be called back later.
    pub call_back_later: f64,
    /// Chance that a member who did not answer rings the campaign number back.
    pub ring_back: f64,
    /// Chance that a member texts STOP at some point in the evening.
    pub stop_text: f64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            answer: 0.45,
            busy: 0.08,
            voicemail: 0.12,
            hang_up_early: 0.04,
            failed: 0.01,
            opt_out: 0.03,
            refuse: 0.08,
            wrong_number: 0.02,
            call_back_later: 0.05,
            ring_back: 0.05,
            stop_text: 0.002,
        }
    }
}

/// What happened on one dial, from the member's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pickup {
    NoAnswer,
    Busy,
    Failed,
    /// Connected for `seconds`, and then the volunteer records `Plan`.
    Connected {
        seconds: u32,
        plan: Plan,
    },
}

/// What the volunteer will key once the member leg is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Survey,
    Disposition(Disposition),
    OptOut,
}

impl Behaviour {
    pub fn pickup(&self, rng: &mut impl Rng) -> Pickup {
        let mut r: f64 = rng.random();
        let mut take = |p: f64| {
            r -= p;
            r < 0.0
        };
        if take(self.answer) {
            let mut t: f64 = rng.random();
            let mut talk = |p: f64| {
                t -= p;
                t < 0.0
            };
            let plan = if talk(self.opt_out) {
                Plan::OptOut
            } else if talk(self.refuse) {
                Plan::Disposition(Disposition::Refused)
            } else if talk(self.wrong_number) {
                Plan::Disposition(Disposition::WrongNumber)
            } else if talk(self.call_back_later) {
                Plan::Disposition(Disposition::CallBackLater)
            } else {
                Plan::Survey
            };
            let seconds = match plan {
                Plan::Survey => rng.random_range(60..300),
                _ => rng.random_range(15..60),
            };
            Pickup::Connected { seconds, plan }
        } else if take(self.busy) {
            Pickup::Busy
        } else if take(self.voicemail) {
            Pickup::Connected {
                seconds: rng.random_range(10..30),
                plan: Plan::Disposition(Disposition::AnsweringMachine),
            }
        } else if take(self.hang_up_early) {
            Pickup::Connected {
                seconds: rng.random_range(1..6),
                plan: Plan::Disposition(Disposition::CallBackLater),
            }
        } else if take(self.failed) {
            Pickup::Failed
        } else {
            Pickup::NoAnswer
        }
    }
}

/// A registered volunteer as the simulator knows them.
#[derive(Debug, Clone)]
pub struct VolunteerCard {
    pub phone: String,
    pub pin: String,
    /// Asks to be called back (texts CALL) instead of dialling in.
    pub callback: bool,
}

/// One call leg from the carrier's side.
struct Leg {
    sid: String,
    from: String,
    to: String,
    direction: &'static str,
    /// Where the final status callback goes.
    status_url: String,
}

impl Leg {
    fn params(&self, status: &str, extra: &[(String, String)]) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = [
            ("AccountSid", ""),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", &self.sid),
            ("From", &self.from),
            ("Caller", &self.from),
            ("To", &self.to),
            ("Called", &self.to),
            ("Direction", self.direction),
            ("CallStatus", status),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            p.retain(|(pk, _)| pk != k);
            p.push((k.clone(), v.clone()));
        }
        p
    }
}

/// The member in front of the volunteer right now.
#[derive(Debug, Clone)]
struct Current {
    reference: i64,
    name: String,
    plan: Option<Plan>,
    /// Answers keyed for this member: (question code, option code).
    keyed: Vec<(String, String)>,
    /// A wrong option was pressed and is still to be undone.
    owes_undo: bool,
}

/// Volunteer's reading of what they hear.
struct Brain {
    card: VolunteerCard,
    leave_at: jiff::Timestamp,
    current: Option<Current>,
    wrong_pin_pending: bool,
    confirmed: Option<i64>,
    empty_checks: u32,
    rng: StdRng,
}

fn re(s: &str) -> Regex {
    Regex::new(s).unwrap_or_else(|_| Regex::new("$^").unwrap_or_else(|_| unreachable!()))
}

struct Patterns {
    announce: Regex,
    option: Regex,
    opt_out: Regex,
}

fn patterns() -> &'static Patterns {
    static P: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
    P.get_or_init(|| Patterns {
        announce: re(
            r"Call reference ([0-9 ]+)\. Next: (.+?) from (.+?)\.(?: Your first question|$)",
        ),
        option: re(r"For ([^,.]+), press (\d)\."),
        opt_out: re(r"never to be contacted again, press (\d)"),
    })
}

/// What the volunteer does at a `<Gather>`: keys to press (and after how long), or
/// silence.
enum Keys {
    Press(String, f64),
    Silence,
}

impl Brain {
    fn keys(&mut self, sim: &Sim, prompt: &str, heard: &str) -> Keys {
        let now = sim.clock.now();
        let think = |rng: &mut StdRng, lo: f64, hi: f64| rng.random_range(lo..hi);
        if prompt.contains("enter your PIN") {
            let pin = if self.wrong_pin_pending {
                self.wrong_pin_pending = false;
                // A slip of the finger: a PIN that is not theirs.
                self.card.pin.chars().rev().collect::<String>() + "1"
            } else {
                self.card.pin.clone()
            };
            return Keys::Press(pin, think(&mut self.rng, 3.0, 8.0));
        }
        if let Some(c) = patterns().announce.captures(prompt) {
            let reference: i64 = c[1].replace(' ', "").parse().unwrap_or(-1);
            let name = c[2].to_owned();
            sim.observer.announced(reference, &c[3], now);
            self.finish_current(sim);
            if now >= self.leave_at {
                return Keys::Press("0".into(), think(&mut self.rng, 1.0, 3.0));
            }
            self.current = Some(Current {
                reference,
                name,
                plan: None,
                keyed: Vec::new(),
                owes_undo: false,
            });
            self.confirmed = Some(reference);
            self.empty_checks = 0;
            return Keys::Press("1".into(), think(&mut self.rng, 2.0, 8.0));
        }
        if prompt.contains("nobody to call right now") {
            self.finish_current(sim);
            self.empty_checks += 1;
            if now >= self.leave_at || self.empty_checks > 6 {
                return Keys::Silence;
            }
            return Keys::Press("1".into(), think(&mut self.rng, 5.0, 12.0));
        }
        if prompt.contains("For other outcomes, press") {
            return self.answer_question(sim, prompt);
        }
        if prompt.starts_with("Other outcomes.") {
            return self.pick_outcome(prompt);
        }
        let _ = heard;
        Keys::Silence
    }

    fn answer_question(&mut self, sim: &Sim, prompt: &str) -> Keys {
        let Some(cur) = self.current.as_mut() else {
            return Keys::Silence;
        };
        let think = self.rng.random_range(2.0..6.0);
        if cur.owes_undo && prompt.contains("press 9") {
            cur.owes_undo = false;
            cur.keyed.pop();
            return Keys::Press("9".into(), think);
        }
        match cur.plan {
            Some(Plan::Survey) => {}
            // Voicemail, a refusal, a short drop: straight to the other outcomes.
            _ => return Keys::Press("0".into(), think),
        }
        let Some(question) = sim
            .script
            .questions
            .iter()
            .find(|q| prompt.starts_with(&q.text))
        else {
            return Keys::Silence;
        };
        let offered: Vec<(String, String)> = patterns()
            .option
            .captures_iter(prompt)
            .map(|c| (c[1].to_owned(), c[2].to_owned()))
            .filter(|(label, _)| question.options.iter().any(|o| &o.label == label))
            .collect();
        if offered.is_empty() {
            return Keys::Silence;
        }
        let (label, digit) = offered[self.rng.random_range(0..offered.len())].clone();
        let Some(option) = question.options.iter().find(|o| o.label == label) else {
            return Keys::Silence;
        };
        // Now and then a slip: a wrong key, noticed and undone with 9 (only where
        // the wrong option does not end the script, so the undo is still possible).
        let wrong = offered
            .iter()
            .filter(|(l, _)| l != &label)
            .filter_map(|(l, d)| {
                let o = question.options.iter().find(|o| &o.label == l)?;
                o.next.as_ref().map(|_| (o.code.clone(), d.clone()))
            })
            .next();
        if let Some((wrong_code, wrong_digit)) = wrong
            && self.rng.random_bool(0.03)
        {
            cur.owes_undo = true;
            cur.keyed.push((question.code.clone(), wrong_code));
            return Keys::Press(wrong_digit, think);
        }
        cur.keyed.push((question.code.clone(), option.code.clone()));
        Keys::Press(digit, think)
    }

    fn pick_outcome(&mut self, prompt: &str) -> Keys {
        let think = self.rng.random_range(2.0..6.0);
        let plan = self
            .current
            .as_ref()
            .and_then(|c| c.plan)
            .unwrap_or(Plan::Disposition(Disposition::TechnicalProblem));
        let wanted = match plan {
            Plan::OptOut => {
                return match patterns().opt_out.captures(prompt) {
                    Some(c) => Keys::Press(c[1].to_owned(), think),
                    None => Keys::Silence,
                };
            }
            Plan::Disposition(d) => d,
            // A survey member whose call was too short to ask: try again later.
            Plan::Survey => Disposition::CallBackLater,
        };
        patterns()
            .option
            .captures_iter(prompt)
            .find(|c| &c[1] == wanted.spoken())
            .map_or(Keys::Silence, |c| Keys::Press(c[2].to_owned(), think))
    }

    /// The member in front of the volunteer is done with: their answers count.
    fn finish_current(&mut self, sim: &Sim) {
        if let Some(cur) = self.current.take() {
            sim.observer.keyed(&cur.keyed);
            if let Some(plan) = cur.plan {
                sim.observer.member_done(
                    cur.reference,
                    plan,
                    !cur.keyed.is_empty(),
                    sim.clock.now(),
                );
            }
        }
    }
}

/// One volunteer's evening: sessions (dial-in or call-back) until they leave.
pub async fn volunteer(sim: Arc<Sim>, card: VolunteerCard, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let span = (sim.end.as_millisecond() - sim.start.as_millisecond()).max(1);
    // Most stay to the end; some leave after an hour or two.
    let leave_at = if rng.random_bool(0.2) {
        sim.start + jiff::SignedDuration::from_millis(rng.random_range(span / 3..span))
    } else {
        sim.end
    };
    // Arrivals spread over the first ten minutes.
    sleep_sim(&sim, rng.random_range(0.0..600.0)).await;
    let mut brain = Brain {
        wrong_pin_pending: rng.random_bool(0.05),
        card: card.clone(),
        leave_at,
        current: None,
        confirmed: None,
        empty_checks: 0,
        rng: StdRng::seed_from_u64(seed ^ 0x5eed),
    };
    let mut sessions = 0;
    while sim.clock.now() < leave_at && sessions < 4 && !sim.stopping() {
        sessions += 1;
        let leg = if card.callback {
            ask_for_call(&sim, &card).await
        } else {
            let sid = sim.carrier.sid("CA");
            Some((
                Leg {
                    sid,
                    from: card.phone.clone(),
                    to: sim.campaign_number.clone(),
                    direction: "inbound",
                    status_url: sim.carrier.absolute("/webhooks/voice/status"),
                },
                sim.carrier.absolute("/webhooks/voice"),
            ))
        };
        if let Some((leg, url)) = leg {
            run_call(&sim, &leg, url, &mut brain).await;
            brain.finish_current(&sim);
        }
        // A break before trying again (the list may refill as retry gaps pass).
        sleep_sim(&sim, rng.random_range(300.0..900.0)).await;
    }
}

/// Text CALL and wait for the server to ring back through the REST API.
async fn ask_for_call(sim: &Sim, card: &VolunteerCard) -> Option<(Leg, String)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    sim.expect_call(&card.phone, tx);
    let sid = sim.carrier.sid("SM");
    let params = text_params(sim, &sid, &card.phone, "CALL");
    let answer = sim.carrier.post("/webhooks/sms", &params).await;
    if answer.status != 200 {
        return None;
    }
    // The server retries 429s with backoff in real time; allow for it.
    let placed = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .ok()?
        .ok()?;
    sim.observer.call_back_placed();
    let status_url = placed
        .status_callback
        .clone()
        .unwrap_or_else(|| sim.carrier.absolute("/webhooks/voice/status"));
    Some((
        Leg {
            sid: placed.sid,
            from: placed.from,
            to: placed.to,
            direction: "outbound-api",
            status_url,
        },
        placed.url,
    ))
}

pub(super) fn text_params(sim: &Sim, sid: &str, from: &str, body: &str) -> Vec<(String, String)> {
    [
        ("AccountSid", sim.carrier.account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("MessageSid", sid),
        ("SmsSid", sid),
        ("SmsMessageSid", sid),
        ("From", from),
        ("To", sim.campaign_number.as_str()),
        ("Body", body),
        ("NumMedia", "0"),
        ("NumSegments", "1"),
        ("SmsStatus", "received"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Follow one call's TwiML from `url` until someone hangs up.
async fn run_call(sim: &Sim, leg: &Leg, first_url: String, brain: &mut Brain) {
    let mut url = first_url;
    let mut extra: Vec<(String, String)> = Vec::new();
    let mut status = if leg.direction == "inbound" {
        "ringing"
    } else {
        "in-progress"
    };
    let mut heard: Vec<String> = Vec::new();
    let mut steps = 0u32;
    'fetch: loop {
        steps += 1;
        if steps > 2_000 || sim.stopping() {
            break;
        }
        let mut params = leg.params(status, &extra);
        if let Some(p) = params.iter_mut().find(|(k, _)| k == "AccountSid") {
            p.1 = sim.carrier.account_sid.clone();
        }
        status = "in-progress";
        let answer = sim.carrier.post(&url, &params).await;
        if answer.status != 200 {
            break;
        }
        let doc = match Doc::parse(&answer.body) {
            Ok(d) => d,
            Err(e) => {
                sim.observer.bad_twiml(&url, &e);
                break;
            }
        };
        sim.observer.shown_to_volunteer(&doc.outside_numbers());
        let current_url = url.clone();
        extra.clear();
        for verb in &doc.verbs {
            match verb.name.as_str() {
                "Say" => heard.push(verb.text.clone()),
                "Pause" => {
                    let secs: f64 = verb
                        .attr("length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(1.0);
                    sleep_sim(sim, secs).await;
                }
                "Gather" => {
                    let prompt = verb.says().join(" ");
                    heard.push(prompt.clone());
                    let keys = brain.keys(sim, &prompt, &heard.join(" "));
                    match keys {
                        Keys::Press(digits, think) => {
                            sleep_sim(sim, think).await;
                            heard.clear();
                            url = verb.attr("action").unwrap_or(&current_url).to_owned();
                            // Without numDigits the caller ends with the finish key.
                            let finished = if verb.attr("numDigits").is_none()
                                && verb.attr("finishOnKey") != Some("")
                            {
                                verb.attr("finishOnKey").unwrap_or("#").to_owned()
                            } else {
                                String::new()
                            };
                            extra = vec![
                                ("Digits".into(), digits),
                                ("FinishedOnKey".into(), finished),
                            ];
                            continue 'fetch;
                        }
                        Keys::Silence => {
                            let secs: f64 = verb
                                .attr("timeout")
                                .and_then(|t| t.parse().ok())
                                .unwrap_or(5.0);
                            sleep_sim(sim, secs).await;
                        }
                    }
                }
                "Dial" => {
                    let confirmed = brain.confirmed.take();
                    let plan = dial(sim, leg, verb, brain, confirmed).await;
                    if let Some(cur) = brain.current.as_mut() {
                        cur.plan = plan.0;
                    }
                    match verb.attr("action") {
                        Some(action) => {
                            url = action.to_owned();
                            extra = plan.1;
                            continue 'fetch;
                        }
                        None => continue,
                    }
                }
                "Redirect" => {
                    url = verb.text.trim().to_owned();
                    continue 'fetch;
                }
                "Hangup" | "Reject" => break 'fetch,
                _ => {}
            }
        }
        // The document ran out: the call ends.
        break;
    }
    // The call is over: the provider's final status callback.
    let mut params = leg.params("completed", &[]);
    if let Some(p) = params.iter_mut().find(|(k, _)| k == "AccountSid") {
        p.1 = sim.carrier.account_sid.clone();
    }
    params.push(("CallDuration".into(), "600".into()));
    params.push(("SequenceNumber".into(), "9".into()));
    let _ = sim.carrier.post(&leg.status_url, &params).await;
    if sim.carrier.faults.duplicate > 0.0 {
        let _ = sim.carrier.post(&leg.status_url, &params).await;
    }
}

/// Run a `<Dial>`: ring the member, play out their pickup, send the member leg's
/// status callbacks, and return the plan plus the dial action's parameters.
async fn dial(
    sim: &Sim,
    leg: &Leg,
    verb: &Node,
    brain: &mut Brain,
    confirmed: Option<i64>,
) -> (Option<Plan>, Vec<(String, String)>) {
    let Some(number) = verb.child("Number") else {
        sim.observer.bad_twiml("<Dial>", "no <Number>");
        return (None, vec![("DialCallStatus".into(), "failed".into())]);
    };
    let to = number.text.trim().to_owned();
    let caller_id = verb.attr("callerId").unwrap_or_default().to_owned();
    let ring_timeout: f64 = verb
        .attr("timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(30.0);
    let (name, reference) = brain
        .current
        .as_ref()
        .map(|c| (c.name.clone(), c.reference))
        .unwrap_or_default();
    let now = sim.clock.now();
    sim.observer.dial_started(
        reference,
        &to,
        &name,
        &caller_id,
        confirmed == Some(reference) && confirmed.is_some(),
        now,
    );
    let pickup = {
        let mut rng = StdRng::seed_from_u64(brain.rng.random());
        sim.behaviour.pickup(&mut rng)
    };
    let child = sim.carrier.sid("CA");
    let callback = number.attr("statusCallback").map(str::to_owned);
    let mut events: Vec<(&str, Option<u32>)> = vec![("initiated", None)];
    let (dial_status, seconds, plan) = match pickup {
        Pickup::NoAnswer => {
            events.push(("ringing", None));
            sleep_sim(sim, ring_timeout).await;
            events.push(("no-answer", None));
            ("no-answer", None, None)
        }
        Pickup::Busy => {
            sleep_sim(sim, 3.0).await;
            events.push(("busy", None));
            ("busy", None, None)
        }
        Pickup::Failed => {
            sleep_sim(sim, 1.0).await;
            events.push(("failed", None));
            ("failed", None, None)
        }
        Pickup::Connected { seconds, plan } => {
            sim.observer.connected();
            events.push(("ringing", None));
            events.push(("in-progress", None));
            let ring = brain.rng.random_range(3.0..15.0);
            sleep_sim(sim, ring + f64::from(seconds)).await;
            events.push(("completed", Some(seconds)));
            ("completed", Some(seconds), Some(plan))
        }
    };
    if let Some(url) = callback {
        member_events(sim, &url, &child, leg, &to, &events).await;
    }
    sim.observer.dial_ended(&to);
    if pickup == Pickup::NoAnswer && brain.rng.random_bool(sim.behaviour.ring_back) {
        sim.ring_back(&to);
    }
    let mut extra = vec![
        ("DialCallStatus".to_owned(), dial_status.to_owned()),
        ("DialCallSid".to_owned(), child),
        (
            "DialBridged".to_owned(),
            (dial_status == "completed").to_string(),
        ),
    ];
    if let Some(s) = seconds {
        extra.push(("DialCallDuration".into(), s.to_string()));
    }
    (plan, extra)
}

/// The member leg's status callbacks, in order (or, with the reorder fault, all at
/// once in shuffled order).
async fn member_events(
    sim: &Sim,
    url: &str,
    child: &str,
    leg: &Leg,
    to: &str,
    events: &[(&str, Option<u32>)],
) {
    let build = |seq: usize, status: &str, secs: Option<u32>| {
        let mut p: Vec<(String, String)> = [
            ("AccountSid", sim.carrier.account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", child),
            ("ParentCallSid", leg.sid.as_str()),
            ("From", sim.campaign_number.as_str()),
            ("To", to),
            ("Direction", "outbound-dial"),
            ("CallStatus", status),
            ("CallbackSource", "call-progress-events"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        p.push(("SequenceNumber".into(), seq.to_string()));
        if let Some(s) = secs {
            p.push(("CallDuration".into(), s.to_string()));
        }
        p
    };
    let all: Vec<Vec<(String, String)>> = events
        .iter()
        .enumerate()
        .map(|(i, (s, secs))| build(i, s, *secs))
        .collect();
    if sim.carrier.faults.reorder {
        let mut shuffled = all;
        {
            use rand::seq::SliceRandom as _;
            shuffled.shuffle(&mut rand::rng());
        }
        futures_join(sim, url, shuffled).await;
    } else {
        for p in all {
            sim.carrier.post(url, &p).await;
        }
    }
}

async fn futures_join(sim: &Sim, url: &str, all: Vec<Vec<(String, String)>>) {
    let mut set = Vec::new();
    for p in all {
        set.push(async move { sim.carrier.post(url, &p).await });
    }
    for f in set {
        f.await;
    }
}

/// A member who missed a call rings the campaign number back, hears who called, and
/// sometimes presses the opt-out key.
pub async fn member_rings_back(sim: Arc<Sim>, number: String, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    sleep_sim(&sim, rng.random_range(120.0..1200.0)).await;
    if sim.stopping() {
        return;
    }
    let leg = Leg {
        sid: sim.carrier.sid("CA"),
        from: number.clone(),
        to: sim.campaign_number.clone(),
        direction: "inbound",
        status_url: sim.carrier.absolute("/webhooks/voice/status"),
    };
    let mut params = leg.params("ringing", &[]);
    if let Some(p) = params.iter_mut().find(|(k, _)| k == "AccountSid") {
        p.1 = sim.carrier.account_sid.clone();
    }
    let answer = sim.carrier.post("/webhooks/voice", &params).await;
    let Ok(doc) = Doc::parse(&answer.body) else {
        sim.observer
            .bad_twiml("/webhooks/voice (member)", "unreadable");
        return;
    };
    sim.observer.member_rang_back();
    let Some(gather) = doc.verb("Gather") else {
        return;
    };
    if !gather.says().join(" ").contains("press 1") || !rng.random_bool(0.3) {
        return;
    }
    let Some(action) = gather.attr("action") else {
        return;
    };
    let mut params = leg.params(
        "in-progress",
        &[
            ("Digits".into(), "1".into()),
            ("FinishedOnKey".into(), String::new()),
        ],
    );
    if let Some(p) = params.iter_mut().find(|(k, _)| k == "AccountSid") {
        p.1 = sim.carrier.account_sid.clone();
    }
    let answer = sim.carrier.post(action, &params).await;
    if answer.status == 200 {
        sim.observer.opted_out(&number, sim.clock.now());
    }
}

/// A member texts STOP at a random moment of the evening.
pub async fn member_texts_stop(sim: Arc<Sim>, number: String, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let span = (sim.end.as_millisecond() - sim.start.as_millisecond()).max(1) as f64 / 1000.0;
    sleep_sim(&sim, rng.random_range(0.0..span)).await;
    if sim.stopping() {
        return;
    }
    let body = ["STOP", "stop.", " Unsubscribe ", "OPTOUT"][rng.random_range(0..4)];
    let sid = sim.carrier.sid("SM");
    let params = text_params(&sim, &sid, &number, body);
    let answer = sim.carrier.post("/webhooks/sms", &params).await;
    if answer.status == 200 {
        sim.carrier_blocks(&number);
        sim.observer.opted_out(&number, sim.clock.now());
    }
}
