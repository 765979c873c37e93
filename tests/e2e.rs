//! End to end: the carrier simulator against real servers over real HTTP on loopback,
//! an evening compressed into seconds. Each run passes only if every guarantee check
//! the simulator makes from the outside holds, and the server's report agrees with
//! what the carrier saw (answers keyed, attempts dialled).

mod common;

use phonebank::demo::{self, DemoDatabase, DemoOptions};
use phonebank::simulator::Faults;

/// A short evening: enough volunteers and members for contention, retries, opt-outs
/// and call-backs to happen, small enough for a debug build on two cores.
fn short(database: DemoDatabase) -> DemoOptions {
    DemoOptions {
        database,
        members: 1_500,
        volunteers: 10,
        hours: 0.75,
        time_scale: 90.0,
        targets: 10,
        seed: 7,
        ..DemoOptions::default()
    }
}

/// Evenings run one at a time: each is a whole phone bank (servers, pools, dozens of
/// simulated callers), and two at once on two cores only measure contention.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn evening(opts: DemoOptions) -> demo::DemoOutcome {
    let _turn = ONE_AT_A_TIME.lock().await;
    run_evening(opts).await
}

/// An evening on a fresh PostgreSQL database, created only once it is this test's turn
/// (an idle database is fair game for a test run's clean-up).
async fn evening_on_postgres(
    options: impl FnOnce(DemoDatabase) -> DemoOptions,
) -> Option<demo::DemoOutcome> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (store, url) = common::postgres_url().await?;
    store.close().await;
    Some(run_evening(options(DemoDatabase::Postgres(url))).await)
}

async fn run_evening(opts: DemoOptions) -> demo::DemoOutcome {
    // Server errors are logged, not returned: show them if a check fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("error")
        .with_test_writer()
        .try_init();
    let run = demo::run(&opts).await.expect("demo runs");
    let outcome = run.outcome.clone();
    run.shut_down().await;
    let report = demo::render(&outcome);
    assert!(outcome.passed(), "a guarantee check failed:\n{report}");
    // Not a vacuous pass: the evening did the things the checks are about.
    assert!(outcome.dials > 30, "too few dials:\n{report}");
    assert!(outcome.answers_keyed > 10, "too few answers:\n{report}");
    assert!(outcome.call_backs > 0, "no call-back session:\n{report}");
    outcome
}

fn sqlite_file() -> DemoDatabase {
    let dir = common::test_dir();
    DemoDatabase::Sqlite(dir.join("e2e.db"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evening_on_sqlite() {
    evening(short(sqlite_file())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evening_on_postgres() {
    evening_on_postgres(short).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_database() {
    evening_on_postgres(|db| DemoOptions {
        instances: 2,
        ..short(db)
    })
    .await;
}

/// Duplicated webhooks, reordered status callbacks and 429s from the REST API change
/// nothing the checks can see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evening_with_carrier_faults() {
    let outcome = evening(DemoOptions {
        faults: Faults::all(),
        ..short(sqlite_file())
    })
    .await;
    assert!(outcome.duplicates_injected > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evening_with_carrier_faults_on_two_postgres_instances() {
    evening_on_postgres(|db| DemoOptions {
        faults: Faults::all(),
        instances: 2,
        ..short(db)
    })
    .await;
}

/// The demo refuses to run in a database that already holds a campaign, so it can
/// never mix its synthetic evening into real data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_refuses_a_database_in_use() {
    let db = sqlite_file();
    let run = demo::run(&DemoOptions {
        members: 50,
        volunteers: 1,
        hours: 0.05,
        time_scale: 200.0,
        ..short(db.clone())
    })
    .await
    .expect("first run");
    run.shut_down().await;
    let again = demo::run(&short(db)).await;
    let err = again.err().expect("second run refused").to_string();
    assert!(err.contains("already holds campaigns"), "{err}");
}
