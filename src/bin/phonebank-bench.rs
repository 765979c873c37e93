//! `phonebank-bench`: the benchmark driver behind `scripts/bench.sh`.
//!
//! * `claim`: the claim (`Store::claim`) called directly, with 1..N concurrent claimers
//!   (closed loop) and at a fixed offered rate over many sessions (open loop), on growing
//!   member lists; duplicate claims are counted from the database afterwards.
//! * `webhooks`: the volunteer loop over real HTTP against a `phonebank serve` child
//!   process, at fixed offered rates (open loop), and the same generator against a
//!   minimal axum handler (`ceiling`) for the machine's own ceiling; the server's RSS.
//! * `ceiling`: that minimal handler, as a process of its own.
//!
//! Every figure is printed as a Markdown table row on stdout; progress goes to stderr.
//! Benchmarks, not tests: nothing here asserts a timing.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use phonebank::config::Settings;
use phonebank::demo::members::{self, CAMPAIGN_NUMBER, volunteer_number};
use phonebank::demo::{Organiser, seat_picks, smallest_majorities};
use phonebank::domain::{ApiToken, PhoneNumber};
use phonebank::http::{self, AppState};
use phonebank::import::{BUNDLED_SEATS, QueueNew, import_members, import_seats};
use phonebank::simulator::twiml::Doc;
use phonebank::store::Store;
use phonebank::store::calls::{ClaimOutcome, ClaimRequest, Finish, RateClock};
use phonebank::telephony::signature;

const CAMPAIGN: &str = include_str!("../../docs/examples/campaign.json");
const AUTH_TOKEN: &str = "benchbenchbenchbenchbenchbench00";
const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
/// Target seats (smallest 2024 majorities), weighted and rate-limited.
const TARGETS: usize = 50;

#[derive(Parser)]
#[command(about = "phonebank benchmark driver (see scripts/bench.sh and BENCHMARKS.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Claims per second and latency, closed and open loop, at growing member counts.
    Claim {
        /// sqlite:FILE or postgres://... (an empty database).
        #[arg(long)]
        db: String,
        /// Member counts, ascending; the list grows between them.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        sizes: Vec<usize>,
        /// Concurrent claimers (closed loop).
        #[arg(long, value_delimiter = ',', default_value = "1,50,500,1000")]
        levels: Vec<usize>,
        /// Seconds per measurement (a level also stops after claiming half the queue).
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Open loop: offered claims per second ...
        #[arg(long, default_value_t = 2000.0)]
        open_rate: f64,
        /// ... spread over this many volunteer sessions (0: skip the open-loop row).
        #[arg(long, default_value_t = 1000)]
        open_sessions: usize,
    },
    /// The volunteer loop over HTTP against `phonebank serve`, and the ceiling.
    Webhooks {
        #[arg(long)]
        db: String,
        #[arg(long, default_value_t = 1_000_000)]
        members: usize,
        /// Offered requests per second.
        #[arg(long, value_delimiter = ',', default_value = "500,2000,5000")]
        rates: Vec<f64>,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Simulated volunteers on the phone at once (each has one request in flight
        /// at most, as a real call does).
        #[arg(long, default_value_t = 200)]
        volunteers: usize,
        /// The server binary (`phonebank`).
        #[arg(long, default_value = "target/release/phonebank")]
        server: String,
    },
    /// What one statement and one write transaction cost through the store's driver:
    /// the floor under every request that touches the database.
    Roundtrip {
        /// sqlite:FILE or postgres://... (an empty database).
        #[arg(long)]
        db: String,
        #[arg(long, default_value_t = 5000)]
        count: usize,
    },
    /// A minimal axum server answering every POST with one fixed TwiML document.
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.command {
            Command::Claim {
                db,
                sizes,
                levels,
                seconds,
                open_rate,
                open_sessions,
            } => {
                claim_bench(
                    &db,
                    &sizes,
                    &levels,
                    Duration::from_secs_f64(seconds),
                    open_rate,
                    open_sessions,
                )
                .await
            }
            Command::Webhooks {
                db,
                members,
                rates,
                seconds,
                volunteers,
                server,
            } => {
                webhook_bench(
                    &db,
                    members,
                    &rates,
                    Duration::from_secs_f64(seconds),
                    volunteers,
                    &server,
                )
                .await
            }
            Command::Roundtrip { db, count } => roundtrip(&db, count).await,
            Command::Ceiling { bind } => ceiling(bind).await,
        }
    })
}

/// Sequential `select 1`s (one trip to the database and back each), sequential write
/// transactions of one insert (begin, insert, commit: the shape of the smallest write in
/// the loop, durable on return), and the same transactions from 50 tasks at once.
async fn roundtrip(db: &str, count: usize) -> anyhow::Result<()> {
    let backend = backend_name(db);
    let store = Store::connect(Some(db)).await?;
    sqlx::query("create table if not exists bench_scratch (id bigint primary key, v bigint)")
        .execute(store.pool())
        .await?;
    let ids = Arc::new(AtomicU64::new(0));
    let select = Recorder::new();
    let began_all = Instant::now();
    for _ in 0..count {
        let began = Instant::now();
        sqlx::query("select 1").execute(store.pool()).await?;
        select.record(began.elapsed(), true);
    }
    let select_rate = count as f64 / began_all.elapsed().as_secs_f64();
    async fn write(store: &Store, id: u64) -> anyhow::Result<()> {
        let mut tx = store.begin_write().await?;
        sqlx::query("insert into bench_scratch (id, v) values ($1, $1)")
            .bind(id as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
    let sequential = Recorder::new();
    let began_all = Instant::now();
    for _ in 0..count {
        let began = Instant::now();
        write(&store, ids.fetch_add(1, Ordering::Relaxed)).await?;
        sequential.record(began.elapsed(), true);
    }
    let sequential_rate = count as f64 / began_all.elapsed().as_secs_f64();
    let concurrent = Recorder::new();
    let began_all = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (store, ids, rec) = (store.clone(), ids.clone(), concurrent.clone());
            tokio::spawn(async move {
                for _ in 0..count / 50 {
                    let began = Instant::now();
                    let ok = write(&store, ids.fetch_add(1, Ordering::Relaxed))
                        .await
                        .is_ok();
                    rec.record(began.elapsed(), ok);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let concurrent_rate = (count / 50 * 50) as f64 / began_all.elapsed().as_secs_f64();
    println!("| backend | what | n | per second | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    let (n, p50, p99, _, max) = select.summary();
    println!(
        "| {backend} | `select 1`, one after another | {n} | {select_rate:.0} | {p50:.3} | {p99:.3} | {max:.1} |"
    );
    let (n, p50, p99, _, max) = sequential.summary();
    println!(
        "| {backend} | write transaction (begin, insert, commit), one after another | {n} | {sequential_rate:.0} | {p50:.3} | {p99:.3} | {max:.1} |"
    );
    let (n, p50, p99, _, max) = concurrent.summary();
    println!(
        "| {backend} | the same from 50 tasks at once | {n} | {concurrent_rate:.0} | {p50:.3} | {p99:.3} | {max:.1} |"
    );
    store.close().await;
    Ok(())
}

fn backend_name(db: &str) -> &'static str {
    if db.starts_with("sqlite:") {
        "SQLite"
    } else {
        "PostgreSQL"
    }
}

// ---------------------------------------------------------------------------------
// Latency recording

/// Latencies in microseconds, plus outcome counts.
struct Recorder {
    hist: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            hist: Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3).expect("bounds")),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    fn record(&self, latency: Duration, ok: bool) {
        let us = (latency.as_micros() as u64).clamp(1, 120_000_000);
        if let Ok(mut h) = self.hist.lock() {
            let _ = h.record(us);
        }
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (count, p50, p99, p99.9, max) in milliseconds.
    fn summary(&self) -> (u64, f64, f64, f64, f64) {
        let h = self.hist.lock().expect("histogram lock");
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        (
            h.len(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0,
        )
    }
}

/// Open loop: request `k` is due at `start + k / rate`, whether or not earlier ones
/// have been answered, and its latency is measured from when it was due (so a stalled
/// server is not hidden by a generator that waits for it: no coordinated omission).
/// Each actor has at most one request in flight; if none is free when a request is
/// due, it goes out late and the wait counts in its latency.
async fn open_loop<A, F, Fut>(
    actors: Vec<A>,
    rate: f64,
    duration: Duration,
    step: F,
) -> (Arc<Recorder>, Duration, Vec<A>)
where
    A: Send + 'static,
    F: Fn(A) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = (A, Option<bool>)> + Send + 'static,
{
    let n = actors.len();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for a in actors {
        let _ = tx.send(a);
    }
    let rec = Recorder::new();
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut k: u32 = 0;
    loop {
        let due = start + interval * k;
        if due >= start + duration {
            break;
        }
        tokio::time::sleep_until(due).await;
        let Some(actor) = rx.recv().await else { break };
        // Past the end of the run: requests still waiting for a free call are not sent
        // (the achieved rate shows the shortfall).
        if tokio::time::Instant::now() >= start + duration {
            let _ = tx.send(actor);
            break;
        }
        k += 1;
        let (tx, rec, step) = (tx.clone(), rec.clone(), step.clone());
        tokio::spawn(async move {
            let (actor, ok) = step(actor).await;
            // None: nothing was sent (the run had already stopped).
            if let Some(ok) = ok {
                rec.record(due.elapsed(), ok);
            }
            let _ = tx.send(actor);
        });
    }
    let mut back = Vec::with_capacity(n);
    while back.len() < n {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(a)) => back.push(a),
            _ => break,
        }
    }
    (rec, start.elapsed(), back)
}

// ---------------------------------------------------------------------------------
// Setting a phone bank up (through the organiser API, as the demo does)

struct Bank {
    store: Store,
    api: Organiser,
    campaign_id: i64,
    /// The in-process server used for the organiser API during set-up.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A fixed-offset zone where it is now about 13:00 (`Etc/GMT` signs are inverted:
/// `Etc/GMT-3` is three hours ahead of UTC).
fn afternoon_zone() -> String {
    let utc_hour = i64::from(
        jiff::Timestamp::now()
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .hour(),
    );
    match 13 - utc_hour {
        0 => "Etc/GMT".to_owned(),
        ahead if ahead > 0 => format!("Etc/GMT-{ahead}"),
        behind => format!("Etc/GMT+{}", -behind),
    }
}

impl Bank {
    /// Seats, targets (weights and rate limits), a draft campaign with the widest calling
    /// hours every day, and targeting by membership.
    async fn create(db: &str) -> anyhow::Result<Self> {
        let store = Store::connect(Some(db)).await?;
        if !store.list_campaigns().await?.is_empty() {
            bail!("{db} already holds campaigns: the benchmark needs an empty database");
        }
        import_seats(&store, std::io::Cursor::new(BUNDLED_SEATS.as_bytes())).await?;
        // Calling hours are at most 08:00-21:00 local: every seat moves to a zone where it
        // is early afternoon, so the run is inside them whatever hour it starts at.
        sqlx::query("update seats set time_zone = $1")
            .bind(afternoon_zone())
            .execute(store.pool())
            .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let settings = Settings {
            public_url: Some(base.clone()),
            auth_token: Some(AUTH_TOKEN.to_owned().into()),
            account_sid: Some(ACCOUNT_SID.into()),
            ..Settings::default()
        };
        let state = AppState::new(store.clone(), settings);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(state, listener, async {
            let _ = rx.await;
        }));
        let token = ApiToken::generate();
        store.create_token("bench", &token).await?;
        let api = Organiser::new(&base, token.expose());
        for (i, (code, _, _)) in smallest_majorities(TARGETS).iter().enumerate() {
            api.send(
                "PATCH",
                &format!("/api/v1/seats/{code}"),
                json!({"is_target": true, "weight": 1 + i % 3,
                       "rate_per_hour": 3600, "burst": 20}),
            )
            .await?;
        }
        let mut campaign: Value = serde_json::from_str(CAMPAIGN)?;
        campaign["name"] = json!("Benchmark");
        campaign["caller_number"] = json!(CAMPAIGN_NUMBER);
        let all_day = json!({"start": "08:00", "end": "21:00"});
        campaign["calling_hours"] = json!({"days": {
            "mon": all_day, "tue": all_day, "wed": all_day, "thu": all_day,
            "fri": all_day, "sat": all_day, "sun": all_day}});
        let created = api.send("POST", "/api/v1/campaigns", campaign).await?;
        let campaign_id = created["id"].as_i64().context("campaign id")?;
        api.send(
            "PUT",
            &format!("/api/v1/campaigns/{campaign_id}/targeting"),
            json!({"non_targets": "fallback", "attribute": "membership",
                   "attribute_weights": {"full": 2, "supporter": 1, "affiliate": 1}}),
        )
        .await?;
        Ok(Self {
            store,
            api,
            campaign_id,
            shutdown: Some(tx),
            server: Some(server),
        })
    }

    async fn start_campaign(&self) -> anyhow::Result<()> {
        self.api
            .send(
                "POST",
                &format!("/api/v1/campaigns/{}/start", self.campaign_id),
                json!({}),
            )
            .await?;
        Ok(())
    }

    async fn stop_server(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
    }

    async fn scalar(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(self.campaign_id)
            .fetch_one(self.store.pool())
            .await?)
    }
}

/// Members on Ofcom drama numbers, 30% of them in the target seats (as in the demo).
fn people(n: usize) -> Vec<members::Generated> {
    let targets: Vec<String> = smallest_majorities(TARGETS)
        .into_iter()
        .map(|t| t.0)
        .collect();
    members::generate(n, &seat_picks(), &targets, 0.3, 2026)
}

async fn import_slice(store: &Store, people: &[members::Generated]) -> anyhow::Result<f64> {
    let began = Instant::now();
    let csv = members::to_csv(people);
    let report = import_members(
        store,
        std::io::Cursor::new(csv.into_bytes()),
        phonenumber::country::Id::GB,
        QueueNew::Now,
    )
    .await?;
    if !report.rejected.is_empty() {
        bail!("{} generated members rejected", report.rejected.len());
    }
    Ok(began.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------
// The claim

struct Claimer {
    volunteer_id: i64,
    session_id: i64,
}

async fn claim_bench(
    db: &str,
    sizes: &[usize],
    levels: &[usize],
    duration: Duration,
    open_rate: f64,
    open_sessions: usize,
) -> anyhow::Result<()> {
    let backend = backend_name(db);
    let mut bank = Bank::create(db).await?;
    let max = sizes.iter().copied().max().unwrap_or(0);
    eprintln!("claim[{backend}]: generating {max} members");
    let everyone = people(max);
    // Volunteers and their sessions, made directly (no PIN is ever checked here).
    let claimers = levels
        .iter()
        .copied()
        .chain([open_sessions])
        .max()
        .unwrap_or(1);
    let now = phonebank::domain::now_millis();
    let mut pool = Vec::new();
    for i in 0..claimers {
        let phone = if i < 999 {
            volunteer_number(i)
        } else {
            format!("+447700900{:03}", i - 999)
        };
        let phone = PhoneNumber::from_e164(&phone).map_err(|e| anyhow::anyhow!("{e}"))?;
        let v = bank
            .store
            .create_volunteer(&format!("Bench {i}"), &phone, None, "unused")
            .await?;
        let s = bank
            .store
            .open_session(&format!("CAbench{i:08}"), phone.as_e164(), v.id, None, now)
            .await?;
        pool.push(Arc::new(Claimer {
            volunteer_id: v.id,
            session_id: s.id,
        }));
    }
    println!(
        "| backend | members | claimers | loop | claims | claims/s | p50 ms | p99 ms | max ms | empty | errors | duplicates |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut loaded = 0;
    for &size in sizes {
        let took = import_slice(&bank.store, &everyone[loaded..size]).await?;
        if loaded == 0 {
            bank.start_campaign().await?;
        }
        loaded = size;
        eprintln!("claim[{backend}]: {size} members loaded (+{took:.1} s)");
        if bank.store.backend() == phonebank::store::Backend::Postgres {
            sqlx::query("analyze").execute(bank.store.pool()).await?;
        }
        for &level in levels {
            let row = claim_run(&bank, &pool[..level], duration, None).await?;
            println!(
                "| {backend} | {size} | {level} | closed | {} |",
                row.join(" | ")
            );
        }
        if open_sessions > 0 {
            let row = claim_run(&bank, &pool[..open_sessions], duration, Some(open_rate)).await?;
            println!(
                "| {backend} | {size} | {open_sessions} | open, {open_rate:.0}/s offered | {} |",
                row.join(" | ")
            );
        }
    }
    bank.stop_server().await;
    bank.store.close().await;
    Ok(())
}

/// One measurement: claim, then finish the attempt (the member is done), as fast as
/// the claimers can (closed) or at `rate` (open). Stops after `duration` or after half
/// the ready queue is claimed. Afterwards: duplicates from the database, and the queue
/// put back as it was.
async fn claim_run(
    bank: &Bank,
    claimers: &[Arc<Claimer>],
    duration: Duration,
    rate: Option<f64>,
) -> anyhow::Result<Vec<String>> {
    let campaign = bank.store.get_campaign(bank.campaign_id).await?;
    let ready = bank
        .scalar("select count(*) from call_queue where campaign_id = $1 and state = 'ready'")
        .await?;
    let budget = (ready / 2).max(1) as u64;
    let mark = bank
        .scalar("select coalesce(max(id), 0) from contact_attempts where campaign_id = $1")
        .await?;
    let claimed = Arc::new(AtomicU64::new(0));
    let empty = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = Arc::new((bank.store.clone(), campaign));
    let one = {
        let (claimed, empty, stop, ctx) = (claimed.clone(), empty.clone(), stop.clone(), ctx);
        move |c: Arc<Claimer>| {
            let (claimed, empty, stop, ctx) =
                (claimed.clone(), empty.clone(), stop.clone(), ctx.clone());
            async move {
                if stop.load(Ordering::Relaxed) {
                    return (c, true, Duration::ZERO, false);
                }
                let (store, campaign) = &*ctx;
                let began = Instant::now();
                let out = store
                    .claim(&ClaimRequest {
                        campaign_id: campaign.id,
                        volunteer_id: c.volunteer_id,
                        session_id: c.session_id,
                        hours: &campaign.calling_hours,
                        now: jiff::Timestamp::now(),
                        lease_millis: 600_000,
                        rate_clock: RateClock::Database,
                    })
                    .await;
                let took = began.elapsed();
                let ok = match out {
                    Ok(ClaimOutcome::Claimed(a)) => {
                        if claimed.fetch_add(1, Ordering::Relaxed) + 1 >= budget {
                            stop.store(true, Ordering::Relaxed);
                        }
                        let finish = Finish {
                            disposition: None,
                            opt_out: false,
                        };
                        let done = store
                            .finish_attempt(
                                a.id,
                                finish,
                                &campaign.retry_policy,
                                phonebank::domain::now_millis(),
                            )
                            .await;
                        if let Err(e) = &done {
                            eprintln!("finish failed: {e}");
                        }
                        done.is_ok()
                    }
                    Ok(_) => {
                        empty.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(e) => {
                        eprintln!("claim failed: {e}");
                        false
                    }
                };
                (c, ok, took, true)
            }
        }
    };
    let began = Instant::now();
    let rec = match rate {
        None => {
            // Closed loop: every claimer claims again as soon as it is done.
            let rec = Recorder::new();
            let mut tasks = tokio::task::JoinSet::new();
            for c in claimers {
                let (c, one, rec, stop) = (c.clone(), one.clone(), rec.clone(), stop.clone());
                tasks.spawn(async move {
                    let mut c = c;
                    while began.elapsed() < duration && !stop.load(Ordering::Relaxed) {
                        let (back, ok, took, ran) = one(c).await;
                        c = back;
                        if ran {
                            rec.record(took, ok);
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            rec
        }
        Some(rate) => {
            let step = move |c: Arc<Claimer>| {
                let one = one.clone();
                async move {
                    let (c, ok, _, ran) = one(c).await;
                    (c, ran.then_some(ok))
                }
            };
            // Never run the queue below half: shorten the run instead.
            let duration = duration.min(Duration::from_secs_f64(0.9 * budget as f64 / rate));
            let (rec, _, _) = open_loop(claimers.to_vec(), rate, duration, step).await;
            rec
        }
    };
    let elapsed = began.elapsed().as_secs_f64();
    let n = claimed.load(Ordering::Relaxed);
    // A duplicate: a member leased more than once in this run (each claimed member is
    // finished as done, so a second attempt on it can only be a double claim).
    let duplicates = bank
        .scalar(&format!(
            "select count(*) from (select member_id from contact_attempts \
             where campaign_id = $1 and id > {mark} group by member_id having count(*) > 1) d"
        ))
        .await?;
    let open = bank
        .scalar(
            "select count(*) from contact_attempts where campaign_id = $1 \
             and state in ('leased', 'dialling', 'answered')",
        )
        .await?;
    sqlx::query(
        "update call_queue set state = 'ready', attempts = 0, not_before = 0 \
         where campaign_id = $1 and state = 'done'",
    )
    .bind(bank.campaign_id)
    .execute(bank.store.pool())
    .await?;
    let (_, p50, p99, _, max) = rec.summary();
    let label = if rate.is_some() { "open" } else { "closed" };
    eprintln!(
        "  {label} {} claimers: {n} claims in {elapsed:.1} s, p50 {p50:.2} ms p99 {p99:.2} ms, {duplicates} duplicates, {open} left open",
        claimers.len()
    );
    Ok(vec![
        n.to_string(),
        format!("{:.0}", n as f64 / elapsed),
        format!("{p50:.2}"),
        format!("{p99:.2}"),
        format!("{max:.1}"),
        empty.load(Ordering::Relaxed).to_string(),
        rec.failed.load(Ordering::Relaxed).to_string(),
        duplicates.to_string(),
    ])
}

// ---------------------------------------------------------------------------------
// The webhooks

/// One volunteer on the phone, as the carrier sees it: the next requests to send.
struct Volunteer {
    http: reqwest::Client,
    base: Arc<String>,
    phone: String,
    pin: String,
    call: u64,
    call_sid: String,
    child: u64,
    queue: VecDeque<(String, Vec<(String, String)>)>,
    /// Past the PIN: the loop proper.
    in_loop: bool,
    index: usize,
}

impl Volunteer {
    fn new(http: reqwest::Client, base: Arc<String>, index: usize, pin: String) -> Self {
        let mut v = Self {
            http,
            base,
            phone: volunteer_number(index),
            pin,
            call: 0,
            call_sid: String::new(),
            child: 0,
            queue: VecDeque::new(),
            in_loop: false,
            index,
        };
        v.new_call();
        v
    }

    fn new_call(&mut self) {
        self.call += 1;
        self.in_loop = false;
        self.call_sid = format!("CA{:016x}{:016x}", self.index, self.call);
        self.queue.clear();
        let p = self.params(&[("CallStatus", "ringing")]);
        self.queue
            .push_back((format!("{}/webhooks/voice", self.base), p));
    }

    fn params(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = [
            ("AccountSid", ACCOUNT_SID),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", self.call_sid.as_str()),
            ("From", self.phone.as_str()),
            ("To", CAMPAIGN_NUMBER),
            ("Direction", "inbound"),
            ("CallStatus", "in-progress"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in extra {
            p.retain(|(pk, _)| pk != k);
            p.push(((*k).to_owned(), (*v).to_owned()));
        }
        p
    }

    /// One request, for the open loop.
    async fn request(self) -> (Self, Option<bool>) {
        let (v, ok) = self.step().await;
        (v, Some(ok))
    }

    /// An absolute URL for one the server wrote (the ceiling writes relative ones).
    fn absolute(&self, url: &str) -> String {
        if url.starts_with('/') {
            format!("{}{url}", self.base)
        } else {
            url.to_owned()
        }
    }

    /// Send the next request; queue what the answer asks for. False on a failure.
    async fn step(mut self) -> (Self, bool) {
        let Some((url, params)) = self.queue.pop_front() else {
            self.new_call();
            return (self, true);
        };
        let sig = signature::sign(AUTH_TOKEN, &url, &params);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let sent = self
            .http
            .post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Twilio-Signature", sig)
            .body(body)
            .send()
            .await;
        let text = match sent {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            Ok(r) => {
                eprintln!("{} from {url}", r.status());
                self.new_call();
                return (self, false);
            }
            Err(e) => {
                eprintln!("no answer from {url}: {e}");
                self.new_call();
                return (self, false);
            }
        };
        // Member-leg status callbacks are answered with an empty document.
        if url.contains("/member-status") {
            return (self, true);
        }
        let Ok(doc) = Doc::parse(&text) else {
            self.new_call();
            return (self, false);
        };
        self.follow(&doc);
        (self, true)
    }

    /// What the carrier does with a document: press keys on a `<Gather>` (the PIN,
    /// else 1: ready, yes, ...), run a `<Dial>` (four status callbacks of the member
    /// leg, then the action, 95 s connected), follow a `<Redirect>`, or ring again.
    fn follow(&mut self, doc: &Doc) {
        let said: String = doc
            .verbs
            .iter()
            .flat_map(|v| v.says())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(g) = doc.verb("Gather") {
            let action = self.absolute(g.attr("action").unwrap_or_default());
            let digits = if said.contains("PIN") {
                self.pin.clone()
            } else {
                self.in_loop = true;
                "1".to_owned()
            };
            let p = self.params(&[("Digits", &digits), ("FinishedOnKey", "")]);
            self.queue.push_back((action, p));
        } else if let Some(d) = doc.verb("Dial") {
            self.child += 1;
            let child = format!("CA{:016x}{:016x}", self.index + 1_000_000, self.child);
            let number = d.child("Number").cloned().unwrap_or_default();
            let callback = number.attr("statusCallback").unwrap_or_default().to_owned();
            for (seq, status) in ["initiated", "ringing", "in-progress", "completed"]
                .iter()
                .enumerate()
            {
                let p: Vec<(String, String)> = [
                    ("AccountSid", ACCOUNT_SID),
                    ("CallSid", child.as_str()),
                    ("ParentCallSid", self.call_sid.as_str()),
                    ("From", CAMPAIGN_NUMBER),
                    ("To", number.text.as_str()),
                    ("Direction", "outbound-dial"),
                    ("CallStatus", status),
                    ("SequenceNumber", &seq.to_string()),
                    ("CallbackSource", "call-progress-events"),
                ]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
                self.queue.push_back((callback.clone(), p));
            }
            let action = d.attr("action").unwrap_or_default().to_owned();
            let p = self.params(&[
                ("DialCallStatus", "completed"),
                ("DialCallSid", &child),
                ("DialCallDuration", "95"),
                ("DialBridged", "true"),
            ]);
            self.queue.push_back((action, p));
        } else if let Some(r) = doc.verb("Redirect") {
            let p = self.params(&[]);
            self.queue.push_back((self.absolute(&r.text), p));
        } else {
            if !said.is_empty() {
                eprintln!("call ended: {said}");
            }
            self.new_call();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_healthy(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{base} did not come up")
}

/// (VmRSS, VmHWM) of a process in MiB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn webhook_bench(
    db: &str,
    members: usize,
    rates: &[f64],
    duration: Duration,
    volunteers: usize,
    server_bin: &str,
) -> anyhow::Result<()> {
    let backend = backend_name(db);
    if volunteers > 999 {
        bail!("at most 999 volunteers (020 7946 0001 to 0999)");
    }
    let mut bank = Bank::create(db).await?;
    // Started before the import, which then queues the members itself: starting a
    // campaign over 1M members through the API took longer than the 30 s request
    // timeout on PostgreSQL (see BENCHMARKS.md).
    bank.start_campaign().await?;
    eprintln!("webhooks[{backend}]: importing {members} members");
    let took = import_slice(&bank.store, &people(members)).await?;
    eprintln!("webhooks[{backend}]: imported in {took:.1} s; creating {volunteers} volunteers");
    let mut pins = Vec::new();
    for i in 0..volunteers {
        let v = bank
            .api
            .send(
                "POST",
                "/api/v1/volunteers",
                json!({"name": format!("Volunteer {}", i + 1), "phone": volunteer_number(i)}),
            )
            .await?;
        pins.push(v["pin"].as_str().context("PIN")?.to_owned());
    }
    bank.stop_server().await;
    bank.store.close().await;

    // The server under test, and the ceiling, as processes of their own.
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let server = Child(
        tokio::process::Command::new(server_bin)
            .arg("serve")
            .env("DATABASE_URL", db)
            .env("PHONEBANK_BIND", format!("127.0.0.1:{port}"))
            .env("PHONEBANK_PUBLIC_URL", &base)
            .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            .env("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {server_bin}"))?,
    );
    let pid = server.0.id().context("server pid")?;
    let cport = free_port()?;
    let cbase = format!("http://127.0.0.1:{cport}");
    let _ceiling = Child(
        tokio::process::Command::new(std::env::current_exe()?)
            .args(["ceiling", "--bind", &format!("127.0.0.1:{cport}")])
            .stdout(Stdio::null())
            .spawn()?,
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(volunteers * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    wait_healthy(&http, &base).await?;
    wait_healthy(&http, &cbase).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, _) = rss(pid);

    // Warm-up, not measured: every volunteer rings in and enters the PIN (argon2,
    // deliberately slow), so the measured runs are the loop itself.
    let base = Arc::new(base);
    let mut vols: Vec<Volunteer> = pins
        .into_iter()
        .enumerate()
        .map(|(i, pin)| Volunteer::new(http.clone(), base.clone(), i, pin))
        .collect();
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    for mut v in vols.drain(..) {
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire().await;
            for _ in 0..10 {
                let ok;
                (v, ok) = v.step().await;
                if v.in_loop || !ok {
                    break;
                }
            }
            v
        });
    }
    while let Some(v) = tasks.join_next().await {
        vols.push(v?);
    }
    let logged_in = vols.iter().filter(|v| v.in_loop).count();
    eprintln!(
        "webhooks[{backend}]: {logged_in}/{volunteers} volunteers past the PIN in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    let (login_rss, _) = rss(pid);

    println!(
        "| backend | members | target | offered req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | failed | loop / ceiling |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    // The ceiling's actors post a typical loop request (the announcement's "1") and
    // read the fixed document, so both runs cost the generator the same.
    let cbase = Arc::new(cbase);
    for &rate in rates {
        let cvols: Vec<Volunteer> = (0..volunteers)
            .map(|i| {
                let mut v = Volunteer::new(http.clone(), cbase.clone(), i, String::new());
                v.in_loop = true;
                v
            })
            .collect();
        let (crec, celapsed, _) = open_loop(cvols, rate, duration, Volunteer::request).await;
        let (lrec, lelapsed, back) = open_loop(vols, rate, duration, Volunteer::request).await;
        vols = back;
        let (cn, c50, c99, c999, cmax) = crec.summary();
        let (ln, l50, l99, l999, lmax) = lrec.summary();
        let crate_ = cn as f64 / celapsed.as_secs_f64();
        let lrate = ln as f64 / lelapsed.as_secs_f64();
        eprintln!(
            "  {rate:.0}/s: loop {lrate:.0}/s p99 {l99:.2} ms; ceiling {crate_:.0}/s p99 {c99:.2} ms"
        );
        println!(
            "| {backend} | - | ceiling (fixed TwiML) | {rate:.0} | {crate_:.0} | {c50:.2} | {c99:.2} | {c999:.2} | {cmax:.1} | {} | |",
            crec.failed.load(Ordering::Relaxed)
        );
        println!(
            "| {backend} | {members} | volunteer loop | {rate:.0} | {lrate:.0} | {l50:.2} | {l99:.2} | {l999:.2} | {lmax:.1} | {} | {:.2} |",
            lrec.failed.load(Ordering::Relaxed),
            lrate / crate_.max(1.0)
        );
    }
    let (after_rss, peak_rss) = rss(pid);
    println!();
    println!(
        "| backend | members | server RSS idle (MiB) | after {volunteers} logins (MiB) | after the runs (MiB) | peak (VmHWM, MiB) |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {backend} | {members} | {idle_rss:.0} | {login_rss:.0} | {after_rss:.0} | {peak_rss:.0} |"
    );
    // Sanity: the loop really stored something.
    let store = Store::connect(Some(db)).await?;
    let attempts: i64 = sqlx::query_scalar("select count(*) from contact_attempts")
        .fetch_one(store.pool())
        .await?;
    let answers: i64 = sqlx::query_scalar("select count(*) from answers")
        .fetch_one(store.pool())
        .await?;
    eprintln!("webhooks[{backend}]: {attempts} attempts, {answers} answers stored");
    store.close().await;
    drop(server);
    Ok(())
}

// ---------------------------------------------------------------------------------
// The ceiling

const FIXED_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
<Gather input=\"dtmf\" action=\"/webhooks/voice/ready?a=1\" numDigits=\"1\" timeout=\"15\">\
<Say>Call reference 1. Next: Olivia Smith from Hendon. Your first question: At the next \
general election, can we count on your vote?</Say><Say>Press 1 to call them now, or 0 to end \
your session.</Say></Gather><Redirect>/webhooks/voice/next</Redirect></Response>";

async fn ceiling(bind: SocketAddr) -> anyhow::Result<()> {
    async fn fixed(_body: axum::body::Bytes) -> impl axum::response::IntoResponse {
        ([("content-type", "text/xml; charset=utf-8")], FIXED_TWIML)
    }
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/{*path}", axum::routing::post(fixed));
    let listener = tokio::net::TcpListener::bind(bind).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
