//! `phonebank demo`: the whole system on one machine, no account, no network.
//!
//! It starts the real server (one or more instances) on loopback, loads the 650 real
//! seats and synthetic members on fictional numbers, sets a campaign up through the
//! organiser API as an organiser would, and lets the carrier simulator run an evening
//! of volunteers and members against it, faster than real time. At the end it reads
//! the server's report and prints it beside the simulator's guarantee checks.

pub mod members;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use rand::{Rng as _, SeedableRng as _};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Settings;
use crate::domain::{ApiToken, CallingHours, Clock, Script};
use crate::http::{self, AppState};
use crate::import::{BUNDLED_SEATS, QueueNew, import_members, import_seats};
use crate::simulator::{
    Behaviour, Carrier, Cast, Check, Faults, Observer, RestApi, SeatLimit, Sim, VolunteerCard,
};
use crate::store::Store;
use members::{CAMPAIGN_NUMBER, SeatPick, volunteer_number};

/// The example campaign from the docs: a real-looking script, hours and retry policy.
const CAMPAIGN: &str = include_str!("../../docs/examples/campaign.json");

/// Where the demo keeps its data.
#[derive(Debug, Clone)]
pub enum DemoDatabase {
    /// A new SQLite file in the temporary directory, removed afterwards.
    Temporary,
    /// This SQLite file (kept).
    Sqlite(PathBuf),
    /// An empty PostgreSQL database.
    Postgres(String),
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub database: DemoDatabase,
    pub members: usize,
    pub volunteers: usize,
    /// Share of volunteers who ask to be called back rather than dialling in.
    pub callback_share: f64,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    /// Length of the evening in hours, from 18:00.
    pub hours: f64,
    /// Target seats: the smallest majorities of 2024.
    pub targets: usize,
    pub seed: u64,
    pub faults: Faults,
    pub behaviour: Behaviour,
    /// Server instances on the one database (PostgreSQL only for more than one).
    pub instances: usize,
    /// Address of the first instance (port 0: any free port).
    pub bind: SocketAddr,
    /// Show a progress bar and print the report.
    pub interactive: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            database: DemoDatabase::Temporary,
            members: 20_000,
            volunteers: 50,
            callback_share: 0.2,
            time_scale: 60.0,
            hours: 2.5,
            targets: 20,
            seed: 2026,
            faults: Faults::default(),
            behaviour: Behaviour::default(),
            instances: 1,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            interactive: false,
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct DemoOutcome {
    pub checks: Vec<Check>,
    /// The server's own report (`GET /api/v1/campaigns/{id}/report`).
    pub report: Value,
    pub campaign_id: i64,
    pub dials: u64,
    pub answers_keyed: u64,
    pub surveys: u64,
    pub opt_outs: u64,
    pub call_backs: u64,
    /// Survey texts the organiser queued for members the phones missed.
    pub texts_queued: i64,
    pub texts_received: u64,
    pub text_replies: u64,
    pub texted_answers: u64,
    pub webhooks: u64,
    pub duplicates_injected: u64,
    pub rest_refusals_injected: u64,
    pub evening: String,
    pub real_seconds: f64,
    /// Where to reach the server if it is left running.
    pub base_url: String,
    pub api_token: String,
    pub database: String,
}

impl DemoOutcome {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// A running demo: the outcome, plus the servers if they are to stay up.
pub struct Demo {
    pub outcome: DemoOutcome,
    servers: Vec<Instance>,
    _temp_file: TempFile,
}

/// A temporary SQLite database, removed (with its WAL files) when dropped: after the
/// demo, or when it fails half-way.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
            }
        }
    }
}

struct Instance {
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    sweeper: tokio::task::JoinHandle<()>,
    texts: tokio::task::JoinHandle<()>,
    store: Store,
}

impl Demo {
    /// Stop the servers and remove a temporary database.
    pub async fn shut_down(self) {
        for i in self.servers {
            let _ = i.shutdown.send(());
            let _ = i.task.await;
            i.sweeper.abort();
            i.texts.abort();
            i.store.close().await;
        }
    }
}

/// Run the demo evening. The servers are still up when this returns.
pub async fn run(opts: &DemoOptions) -> anyhow::Result<Demo> {
    if opts.instances > 1 && !matches!(opts.database, DemoDatabase::Postgres(_)) {
        bail!("several instances need a shared PostgreSQL database (--postgres URL)");
    }
    let (url, temp_file) = match &opts.database {
        DemoDatabase::Temporary => {
            let f = std::env::temp_dir()
                .join(format!("phonebank-demo-{:08x}.db", rand::random::<u32>()));
            (format!("sqlite:{}", f.display()), TempFile(Some(f)))
        }
        DemoDatabase::Sqlite(p) => (format!("sqlite:{}", p.display()), TempFile(None)),
        DemoDatabase::Postgres(u) => (u.clone(), TempFile(None)),
    };
    let shown_db = crate::store::redact_url(&url);
    let store = Store::connect(Some(&url))
        .await
        .with_context(|| format!("opening {shown_db}"))?;
    if !store.list_campaigns().await?.is_empty() {
        bail!(
            "{shown_db} already holds campaigns: the demo needs an empty database \
             (pass another --db or --postgres database; without either it makes a temporary one)"
        );
    }
    let say = |s: &str| {
        if opts.interactive {
            eprintln!("{s}");
        }
    };

    // The data: real seats, synthetic members.
    say("Loading the 650 seats of the 2024 general election ...");
    import_seats(&store, std::io::Cursor::new(BUNDLED_SEATS.as_bytes())).await?;
    let seats = seat_picks();
    let targets = smallest_majorities(opts.targets);
    say(&format!(
        "Generating {} members on Ofcom drama numbers ...",
        opts.members
    ));
    let people = members::generate(
        opts.members,
        &seats,
        &targets.iter().map(|t| t.0.clone()).collect::<Vec<_>>(),
        0.3,
        opts.seed,
    );
    let csv = members::to_csv(&people);
    let imported = import_members(
        &store,
        std::io::Cursor::new(csv.into_bytes()),
        phonenumber::country::Id::GB,
        QueueNew::Now,
    )
    .await?;
    if !imported.rejected.is_empty() {
        bail!(
            "{} generated members were rejected, e.g. line {}: {}",
            imported.rejected.len(),
            imported.rejected[0].line,
            imported.rejected[0].reason
        );
    }

    // The evening: a Tuesday from 18:00 London time, in simulated time.
    let start = next_tuesday_evening()?;
    let end = start + jiff::SignedDuration::from_secs_f64(opts.hours * 3600.0);
    let clock = Clock::scaled(start, opts.time_scale);

    // The carrier's REST face, and the servers.
    let token = format!("{:032x}", rand::random::<u128>());
    let account_sid = format!("AC{:032x}", rand::random::<u128>());
    let carrier_traffic = Arc::new(crate::simulator::carrier::Traffic::default());
    let rest = RestApi::new(&account_sid, &token, opts.faults, carrier_traffic.clone());
    let rest_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rest_addr = rest_listener.local_addr()?;
    let rest_router = rest.router.clone();
    tokio::spawn(async move {
        let _ = axum::serve(rest_listener, rest_router).await;
    });

    let mut listeners = Vec::new();
    for i in 0..opts.instances.max(1) {
        let addr = if i == 0 {
            opts.bind
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        };
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        listeners.push(l);
    }
    let backends: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| format!("http://{a}")))
        .collect::<Result<_, _>>()?;
    // Every instance sits behind one public URL, as behind a load balancer.
    let public_url = backends[0].clone();
    let mut servers = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let store = if i == 0 {
            store.clone()
        } else {
            Store::connect(Some(&url)).await?
        };
        let settings = Settings {
            public_url: Some(public_url.clone()),
            account_sid: Some(account_sid.clone()),
            auth_token: Some(SecretString::from(token.clone())),
            api_base: format!("http://{rest_addr}"),
            ..Settings::default()
        };
        let state = AppState::new(store.clone(), settings).with_clock(clock.clone());
        let sweeper = crate::sweeper::spawn(state.clone(), Duration::from_secs(5));
        let texts = crate::sms_worker::spawn(state.clone(), 20, Duration::from_millis(500));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(http::serve(state, listener, async {
            let _ = rx.await;
        }));
        servers.push(Instance {
            shutdown: tx,
            task,
            sweeper,
            texts,
            store,
        });
    }

    // The organiser's side, through the API.
    let api_token = ApiToken::generate();
    store.create_token("demo organiser", &api_token).await?;
    let api = Organiser {
        http: reqwest::Client::new(),
        base: public_url.clone(),
        token: api_token.expose().to_owned(),
    };
    let mut limits = HashMap::new();
    for (code, name, majority) in &targets {
        let weight = match majority {
            m if *m < 100 => 3,
            m if *m < 300 => 2,
            _ => 1,
        };
        let (rate, burst) = (40, 8);
        api.send(
            "PATCH",
            &format!("/api/v1/seats/{code}"),
            json!({"is_target": true, "weight": weight, "rate_per_hour": rate, "burst": burst}),
        )
        .await?;
        limits.insert(
            name.clone(),
            SeatLimit {
                rate_per_hour: rate,
                burst,
            },
        );
    }
    let mut campaign: Value = serde_json::from_str(CAMPAIGN)?;
    campaign["name"] = json!("Marginals phone bank (demo)");
    campaign["caller_number"] = json!(CAMPAIGN_NUMBER);
    let created = api.send("POST", "/api/v1/campaigns", campaign).await?;
    let campaign_id = created["id"].as_i64().context("campaign id")?;
    let script: Script = serde_json::from_value(created["script"].clone())?;
    let hours: CallingHours = serde_json::from_value(created["calling_hours"].clone())?;
    let max_attempts = created["retry_policy"]["max_attempts"]
        .as_u64()
        .unwrap_or(3) as usize;
    api.send(
        "PUT",
        &format!("/api/v1/campaigns/{campaign_id}/targeting"),
        json!({"non_targets": "fallback", "attribute": "membership",
               "attribute_weights": {"full": 2, "supporter": 1, "affiliate": 1}}),
    )
    .await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let mut cards = Vec::new();
    for i in 0..opts.volunteers {
        let phone = volunteer_number(i);
        let v = api
            .send(
                "POST",
                "/api/v1/volunteers",
                json!({"name": format!("Volunteer {}", i + 1), "phone": phone}),
            )
            .await?;
        cards.push(VolunteerCard {
            phone,
            pin: v["pin"].as_str().context("volunteer PIN")?.to_owned(),
            callback: rng.random_bool(opts.callback_share.clamp(0.0, 1.0)),
        });
    }
    api.send(
        "POST",
        &format!("/api/v1/campaigns/{campaign_id}/start"),
        json!({}),
    )
    .await?;

    // The evening.
    let observer = Observer::new(
        CAMPAIGN_NUMBER,
        people.iter().map(|m| m.phone.clone()),
        hours,
        max_attempts,
        limits,
    );
    let carrier = Carrier::new(&public_url, backends, &token, &account_sid, opts.faults)
        .with_traffic(carrier_traffic.clone());
    let sim = Arc::new(Sim::new(
        clock.clone(),
        start,
        end,
        opts.time_scale,
        carrier,
        observer,
        opts.behaviour,
        script.clone(),
        CAMPAIGN_NUMBER,
        &rest,
        &cards,
        shared_numbers(&people),
    ));
    let mut stop_texters: Vec<String> = people
        .iter()
        .filter(|_| rng.random_bool(opts.behaviour.stop_text))
        .map(|m| m.phone.clone())
        .collect();
    stop_texters.dedup();
    say(&format!(
        "Running the evening: {} volunteers, {} target seats, {} to {} ({}x real time) ...",
        opts.volunteers,
        targets.len(),
        start
            .to_zoned_datetime(jiff::tz::TimeZone::get(crate::domain::DEFAULT_TIME_ZONE)?)
            .strftime("%a %-d %b %H:%M"),
        end.to_zoned_datetime(jiff::tz::TimeZone::get(crate::domain::DEFAULT_TIME_ZONE)?)
            .strftime("%H:%M"),
        opts.time_scale
    ));
    let began = std::time::Instant::now();
    // Part-way through, the organiser texts the survey to members the phones missed.
    let texting = {
        let sim = sim.clone();
        let api = api.clone();
        let at = start + jiff::SignedDuration::from_secs_f64(opts.hours * 3600.0 * 0.4);
        tokio::spawn(async move {
            while sim.clock.now() < at && !sim.stopping() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if sim.stopping() {
                return None;
            }
            api.send(
                "POST",
                &format!("/api/v1/campaigns/{campaign_id}/sms/send"),
                json!({"audience": {"kind": "unreached", "min_attempts": 1}}),
            )
            .await
            .ok()
        })
    };
    let progress = opts
        .interactive
        .then(|| spawn_progress(sim.clone(), start, end));
    sim.clone()
        .run(
            rest.outbound,
            Cast {
                volunteers: cards,
                stop_texters,
                seed: opts.seed,
            },
        )
        .await;
    if let Some(p) = progress {
        p.abort();
        let _ = p.await;
    }
    let texts_queued = texting
        .await
        .ok()
        .flatten()
        .and_then(|r| r["queued"].as_i64())
        .unwrap_or(0);
    let real_seconds = began.elapsed().as_secs_f64();

    // The verdict: the server's report against what the carrier saw.
    let report = api
        .send(
            "GET",
            &format!("/api/v1/campaigns/{campaign_id}/report"),
            Value::Null,
        )
        .await?;
    let mut answers: BTreeMap<(String, String), i64> = BTreeMap::new();
    if let Some(q) = report["totals"]["answers"].as_object() {
        for (question, options) in q {
            for (option, n) in options.as_object().into_iter().flatten() {
                answers.insert((question.clone(), option.clone()), n.as_i64().unwrap_or(0));
            }
        }
    }
    let attempts = report["totals"]["attempts"].as_i64().unwrap_or(-1);
    let samples = carrier_traffic
        .failure_samples
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let checks = sim.observer.verdict(
        &answers,
        attempts,
        carrier_traffic.lost_dials.load(Ordering::Relaxed),
        carrier_traffic.failures.load(Ordering::Relaxed),
        &samples,
    );
    let c = &sim.observer.counters;
    let outcome = DemoOutcome {
        checks,
        report,
        campaign_id,
        dials: c.dials.load(Ordering::Relaxed),
        answers_keyed: c.answers.load(Ordering::Relaxed),
        surveys: c.surveys.load(Ordering::Relaxed),
        opt_outs: c.opt_outs.load(Ordering::Relaxed),
        call_backs: c.call_backs.load(Ordering::Relaxed),
        texts_queued,
        texts_received: c.texts_received.load(Ordering::Relaxed),
        text_replies: c.text_replies.load(Ordering::Relaxed),
        texted_answers: c.texted_answers.load(Ordering::Relaxed),
        webhooks: carrier_traffic.webhooks.load(Ordering::Relaxed),
        duplicates_injected: carrier_traffic.duplicates.load(Ordering::Relaxed),
        rest_refusals_injected: carrier_traffic.rest_refused.load(Ordering::Relaxed),
        evening: format!("{start} to {end}"),
        real_seconds,
        base_url: public_url,
        api_token: api.token.clone(),
        database: shown_db,
    };
    Ok(Demo {
        outcome,
        servers,
        _temp_file: temp_file,
    })
}

/// A live line while the evening runs: simulated time and the counters.
fn spawn_progress(sim: Arc<Sim>, start: Timestamp, end: Timestamp) -> tokio::task::JoinHandle<()> {
    let span = (end.as_millisecond() - start.as_millisecond()).max(1) as u64 / 1000;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(span)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let tz = jiff::tz::TimeZone::get(crate::domain::DEFAULT_TIME_ZONE)
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let plain = !std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let mut last_plain = 0;
        loop {
            let now = sim.clock.now();
            let done =
                ((now.as_millisecond() - start.as_millisecond()).max(0) as u64 / 1000).min(span);
            let c = &sim.observer.counters;
            let line = format!(
                "{}  dials {}  connected {}  surveys {}  answers {}  opt-outs {}  call-backs {}",
                now.to_zoned_datetime(tz.clone()).strftime("%H:%M"),
                c.dials.load(Ordering::Relaxed),
                c.connected.load(Ordering::Relaxed),
                c.surveys.load(Ordering::Relaxed),
                c.answers.load(Ordering::Relaxed),
                c.opt_outs.load(Ordering::Relaxed),
                c.call_backs.load(Ordering::Relaxed),
            );
            bar.set_position(done);
            bar.set_message(line.clone());
            // Without a terminal: a line every simulated half hour.
            if plain && done / 1800 > last_plain {
                last_plain = done / 1800;
                eprintln!("  {line}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            if sim.stopping() {
                bar.finish_and_clear();
                return;
            }
        }
    })
}

/// Numbers more than one member has.
fn shared_numbers(people: &[members::Generated]) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    people
        .iter()
        .filter(|m| !seen.insert(m.phone.clone()))
        .map(|m| m.phone.clone())
        .collect()
}

/// The organiser API, as a client (also used by the benchmark driver).
#[derive(Clone)]
pub struct Organiser {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Organiser {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// Send `body` (as JSON unless null) and return the JSON answer; an error status fails.
    pub async fn send(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if !body.is_null() {
            req = req.json(&body);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = res.status();
        let text = res.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn seat_rows() -> Vec<csv::StringRecord> {
    let mut r = csv::Reader::from_reader(BUNDLED_SEATS.as_bytes());
    r.records().filter_map(Result::ok).collect()
}

/// Every bundled seat with its electorate, for the member generator.
pub fn seat_picks() -> Vec<SeatPick> {
    seat_rows()
        .iter()
        .map(|r| SeatPick {
            code: r.get(0).unwrap_or_default().to_owned(),
            electorate: r.get(7).and_then(|e| e.parse().ok()).unwrap_or(70_000),
        })
        .collect()
}

/// (code, name, majority) of the `n` seats with the smallest 2024 majorities.
pub fn smallest_majorities(n: usize) -> Vec<(String, String, i64)> {
    let mut seats: Vec<(String, String, i64)> = seat_rows()
        .iter()
        .filter_map(|r| {
            Some((
                r.get(0)?.to_owned(),
                r.get(1)?.to_owned(),
                r.get(6)?.parse().ok()?,
            ))
        })
        .collect();
    seats.sort_by_key(|s| (s.2, s.0.clone()));
    seats.truncate(n);
    seats
}

/// The coming Tuesday (or today, if it is one) at 18:00 in London.
fn next_tuesday_evening() -> anyhow::Result<Timestamp> {
    let tz = jiff::tz::TimeZone::get(crate::domain::DEFAULT_TIME_ZONE)?;
    let today = Timestamp::now().to_zoned_datetime(tz.clone()).date();
    let mut day = today;
    while day.weekday() != jiff::civil::Weekday::Tuesday {
        day = day.tomorrow()?;
    }
    Ok(day.at(18, 0, 0, 0).to_zoned_datetime(tz)?.timestamp())
}

/// The report as people read it: target seats, national totals, then the checks.
pub fn render(outcome: &DemoOutcome) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let r = &outcome.report;
    let seats = r["seats"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "\nTarget seats (smallest 2024 majorities)");
    let _ = writeln!(
        out,
        "{:<34} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "seat", "weight", "members", "attempts", "reached", "finished", "opted out"
    );
    // JSON numbers ignore width in `Display`: format them as integers.
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    for s in seats
        .iter()
        .filter(|s| s["is_target"].as_bool() == Some(true))
    {
        let _ = writeln!(
            out,
            "{:<34} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9}",
            truncate(s["name"].as_str().unwrap_or_default(), 34),
            n(&s["weight"]),
            n(&s["members"]),
            n(&s["attempts"]),
            n(&s["reached"]),
            n(&s["completed"]),
            n(&s["opted_out"]),
        );
    }
    let t = &r["totals"];
    let non_target_attempts: i64 = seats
        .iter()
        .filter(|s| s["is_target"].as_bool() != Some(true))
        .filter_map(|s| s["attempts"].as_i64())
        .sum();
    let _ = writeln!(
        out,
        "\nNational totals: {} members, {} attempts ({} in non-target seats), {} reached, {} finished, {} opted out",
        t["members"],
        t["attempts"],
        non_target_attempts,
        t["reached"],
        t["completed"],
        t["opted_out"]
    );
    if let Some(q) = t["answers"].as_object() {
        for (question, options) in q {
            let parts: Vec<String> = options
                .as_object()
                .into_iter()
                .flatten()
                .map(|(o, n)| format!("{o} {n}"))
                .collect();
            let _ = writeln!(out, "  {question}: {}", parts.join(", "));
        }
    }
    let _ = writeln!(
        out,
        "\nSurvey texts: {} queued for members not reached by phone, {} reached the carrier, {} replies ({} plain answers, the rest for review or STOP)",
        outcome.texts_queued, outcome.texts_received, outcome.text_replies, outcome.texted_answers
    );
    let _ = writeln!(
        out,
        "The carrier saw {} webhooks, {} dials, {} call-backs placed through the REST API{}",
        outcome.webhooks,
        outcome.dials,
        outcome.call_backs,
        if outcome.duplicates_injected + outcome.rest_refusals_injected > 0 {
            format!(
                "; faults injected: {} duplicate webhooks, {} REST refusals",
                outcome.duplicates_injected, outcome.rest_refusals_injected
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(out, "\nGuarantee checks");
    for c in &outcome.checks {
        let _ = writeln!(
            out,
            "  {}  {}: {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let failed = outcome.checks.iter().filter(|c| !c.passed).count();
    let _ = writeln!(
        out,
        "\n{}",
        if failed == 0 {
            format!("All {} checks passed.", outcome.checks.len())
        } else {
            format!("{failed} of {} checks FAILED.", outcome.checks.len())
        }
    );
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}
