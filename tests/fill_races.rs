//! Races around the queue fill and the store's connections: opt-outs, re-opt-ins,
//! targeting changes, re-imports, uploads, deletes and cancelled requests while a
//! campaign's queue fills in the background; the in-memory SQLite store under cancelled
//! requests; releases racing claims; and no member number in the logs of these paths.
//! Written as an adversarial pass: each test that failed then is a bug since fixed.
//!
//! Some races need a window wider than a few milliseconds to be hit on purpose. The
//! tests widen it from the outside with a test-only trigger on `call_queue` (the fill is
//! the only code that inserts into it): on PostgreSQL a statement trigger that sleeps,
//! on SQLite a row trigger that burns CPU. The code under test is unchanged; the
//! trigger only makes each fill chunk slow, as a large table or a busy disk would.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::app::TestApp;
use common::bank::{
    A, B, bank, numbers_leased_twice, queued, queued_in_the_end, stale_queue_copies, t0,
};
use common::load_seats;
use jiff::SignedDuration;
use phonebank::domain::targeting::{NonTargets, Targeting};
use phonebank::domain::{CallingHours, CampaignStatus, PhoneNumber};
use phonebank::store::calls::{ClaimOutcome, DialDecision, Finish};
use phonebank::store::{Backend, Store};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Make every fill chunk slow (about `secs` seconds on PostgreSQL, roughly as long on
/// SQLite for a 5,000-row chunk), or fast again with 0.
async fn slow_fill(store: &Store, secs: f64) {
    let mut tx = store.begin_write().await.unwrap();
    match store.backend() {
        Backend::Postgres => {
            for sql in [
                "create table if not exists breaker_gate (secs double precision not null)",
                "delete from breaker_gate",
            ] {
                sqlx::query(sql).execute(&mut *tx).await.unwrap();
            }
            sqlx::query("insert into breaker_gate (secs) values ($1)")
                .bind(secs)
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query(
                "create or replace function breaker_slow() returns trigger language plpgsql as \
                 $$ begin perform pg_sleep((select secs from breaker_gate limit 1)); return null; end $$",
            )
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query("drop trigger if exists breaker_slow on call_queue")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query(
                "create trigger breaker_slow before insert on call_queue \
                 for each statement execute function breaker_slow()",
            )
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        Backend::Sqlite => {
            // Steps of a recursive count per inserted row: ~5,000 rows x steps.
            let steps = (secs * 1_500.0) as i64;
            for sql in [
                "create table if not exists breaker_gate (steps integer not null, n integer)",
                "delete from breaker_gate",
                "drop trigger if exists breaker_slow",
                "create trigger breaker_slow after insert on call_queue begin \
                   update breaker_gate set n = (with recursive c(i) as (select 1 union all \
                     select i + 1 from c where i < (select steps from breaker_gate limit 1)) \
                     select count(*) from c); \
                 end",
            ] {
                sqlx::query(sql).execute(&mut *tx).await.unwrap();
            }
            sqlx::query("insert into breaker_gate (steps, n) values ($1, 0)")
                .bind(steps)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
    }
    tx.commit().await.unwrap();
}

/// Members with ids `{prefix}{i:05}` in `seat`, each on a number of its own (`phone_of`),
/// with a `membership` column.
fn members_csv(prefix: &str, ids: std::ops::Range<usize>, seat: &str, membership: &str) -> String {
    let mut csv = String::from("member_id,name,phone,constituency,membership\n");
    for i in ids {
        csv.push_str(&format!(
            "{prefix}{i:05},Member {i},{},{seat},{membership}\n",
            phone_of(i)
        ));
    }
    csv
}

/// Member `i`'s number: the demo's Ofcom drama blocks, 1,000 numbers each.
fn phone_of(i: usize) -> String {
    let blocks = phonebank::demo::members::MEMBER_BLOCKS;
    format!("{}{:03}", blocks[i / 1000], i % 1000)
}

async fn queue_state(store: &Store, campaign_id: i64, phone: &str) -> Vec<String> {
    sqlx::query_scalar("select state from call_queue where campaign_id = $1 and phone = $2")
        .bind(campaign_id)
        .bind(phone)
        .fetch_all(store.pool())
        .await
        .unwrap()
}

/// The seats, one running campaign, the API, and fill chunks of about `secs` each.
async fn running_campaign_with_slow_fills(store: &Store, secs: f64) -> (i64, TestApp) {
    load_seats(store).await;
    let c = active_campaign(store).await;
    let app = TestApp::new(store.clone()).await;
    slow_fill(store, secs).await;
    (c, app)
}

/// `csv` uploaded through the API in a task of its own.
fn upload_in_a_task(app: &TestApp, csv: String) -> tokio::task::JoinHandle<common::app::Reply> {
    let app = TestApp {
        router: app.router.clone(),
        store: app.store.clone(),
        token: app.token.clone(),
    };
    tokio::spawn(async move {
        app.raw("POST", "/api/v1/members/import", "text/csv", csv)
            .await
    })
}

/// Waits (up to 12 s) until `n` members are imported.
async fn wait_for_members(store: &Store, n: i64) {
    for _ in 0..600 {
        if members_count(store).await >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn members_count(store: &Store) -> i64 {
    sqlx::query_scalar("select count(*) from members")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn active_campaign(store: &Store) -> i64 {
    let c = store
        .create_campaign(&common::bank::spec("Breaker"))
        .await
        .unwrap();
    store
        .set_campaign_status(c.id, CampaignStatus::Active)
        .await
        .unwrap();
    c.id
}

// ---------------------------------------------------------------------------------------
// The background fill
// ---------------------------------------------------------------------------------------

/// 9,000 members uploaded into a running campaign with slow chunks; while the
/// background chunk that queues member 7,000 runs, `change` is called with that
/// member's number. When the fill is done: the member's queue states.
async fn change_during_the_fill<F, Fut>(store: &Store, change: F) -> Vec<String>
where
    F: FnOnce(PhoneNumber) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let c = active_campaign(store).await;
    let app = TestApp::new(store.clone()).await;
    slow_fill(store, 2.5).await;
    // Two chunks: (0, 5000] in the request, (5000, 10000] in the background.
    let number = phone_of(7_000);
    let r = app
        .raw(
            "POST",
            "/api/v1/members/import",
            "text/csv",
            members_csv("S", 0..9_000, A, "full"),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        queue_state(store, c, &number).await.is_empty(),
        "the chunk was not slow enough to race"
    );
    change(PhoneNumber::from_e164(&number).unwrap()).await;
    slow_fill(store, 0.0).await;
    assert_eq!(queued_in_the_end(store, c, 9_000).await, 9_000);
    queue_state(store, c, &number).await
}

both_backends! {
    // An opt-out that arrives while the background fill is inserting the chunk holding
    // the number must leave that member `suppressed`, never `ready`.
    //
    // PostgreSQL: the chunk's insert reads the suppression list at its statement
    // snapshot and `suppress_in` updates only committed queue rows, so a suppression
    // committed in between was seen by neither, and the member was queued `ready`. Each
    // chunk is now settled against the list after its commit. (SQLite serialises the
    // two on the single writer.)
    async fn opt_out_during_background_fill_leaves_member_suppressed(store) {
        load_seats(&store).await;
        let states = change_during_the_fill(&store, |number| {
            let store = store.clone();
            async move { store.suppress(&number, "STOP", "sms", "member").await.unwrap(); }
        })
        .await;
        assert_eq!(states, ["suppressed"], "an opt-out made during the fill was lost: the member is queued as callable");
    }

    // Changing a campaign's targeting while the background fill runs: the members
    // queued afterwards must be prioritised by the new settings (the fill once read the
    // targeting at its start only; each chunk now reads it in its own transaction).
    async fn targeting_changed_during_background_fill_applies_to_later_members(store) {
        load_seats(&store).await;
        let c = active_campaign(&store).await;
        let old = Targeting {
            non_targets: NonTargets::Fallback,
            attribute: Some("membership".into()),
            attribute_weights: BTreeMap::from([("full".to_owned(), 5)]),
        };
        store.set_targeting(c, &old).await.unwrap();
        let app = TestApp::new(store.clone()).await;
        slow_fill(&store, 2.5).await;
        // Four chunks: one in the request, three in the background.
        let r = app
            .raw("POST", "/api/v1/members/import", "text/csv", members_csv("T", 0..19_000, A, "full"))
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(queued(&store, c).await < 10_000, "the fill finished before the change");
        // The organiser now prefers supporters; full members weigh 0.
        let r = app
            .json(
                "PUT",
                &format!("/api/v1/campaigns/{c}/targeting"),
                serde_json::json!({"non_targets": "fallback", "attribute": "membership",
                                   "attribute_weights": {"supporter": 3}}),
            )
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        slow_fill(&store, 0.0).await;
        assert_eq!(queued_in_the_end(&store, c, 19_000).await, 19_000);
        let stale: i64 = sqlx::query_scalar(
            "select count(*) from call_queue where campaign_id = $1 and priority <> 0",
        )
        .bind(c)
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(
            stale, 0,
            "{stale} members queued after the targeting change carry the old weight (5) instead of 0"
        );
    }

    // A client that gives up on an upload (disconnect, or the 300 s upload timeout
    // firing) while the request is still in its 2 s of queue filling: the members are
    // imported, and must still be queued (the fill once ran in the request and its
    // background half was spawned only afterwards; now the whole fill is a task of its
    // own, which the request only waits for).
    async fn upload_cancelled_during_in_request_fill_still_queues_everyone(store) {
        let (c, app) = running_campaign_with_slow_fills(&store, 2.5).await;
        let upload = upload_in_a_task(&app, members_csv("U", 0..6_000, A, "full"));
        // Wait for the import to commit, then a little into the in-request fill.
        wait_for_members(&store, 6_000).await;
        assert_eq!(members_count(&store).await, 6_000);
        tokio::time::sleep(Duration::from_millis(400)).await;
        upload.abort();
        let _ = upload.await;
        slow_fill(&store, 0.0).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            queued(&store, c).await,
            6_000,
            "members imported by a cancelled upload are never queued (until a restart)"
        );
    }

    // The second upload's fill racing the first one's background fill, each with its
    // own targeting snapshot and range: every member ends queued exactly once, with the
    // queue's copy of the number and seat matching the member (including members the
    // second file moved to another number and seat).
    async fn two_uploads_with_overlapping_background_fills_converge(store) {
        let (c, app) = running_campaign_with_slow_fills(&store, 1.0).await;
        let r = app.raw("POST", "/api/v1/members/import", "text/csv", members_csv("W", 0..11_000, A, "full")).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        // Second file: re-imports 0..2000 onto seat B and new numbers, adds 11000..12000.
        let mut csv = members_csv("W", 11_000..12_000, B, "full");
        for i in 0..2_000usize {
            csv.push_str(&format!("W{i:05},Member {i},{},{B},full\n", phone_of(i + 10_000)));
        }
        let r = app.raw("POST", "/api/v1/members/import", "text/csv", csv).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        slow_fill(&store, 0.0).await;
        assert_eq!(queued_in_the_end(&store, c, 12_000).await, 12_000);
        let stale = stale_queue_copies(&store, c).await;
        assert_eq!(stale, 0, "queue copies out of date after overlapping fills");
    }
}

// ---------------------------------------------------------------------------------------
// A re-import that moves a member onto another member's number, racing claims
// ---------------------------------------------------------------------------------------

/// Hold the SQLite writer (the pool of one connection) until told to let go. Writers
/// queue on that pool in arrival order, which lets a test order them.
async fn hold_writer(
    store: &Store,
) -> (
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    let (let_go_tx, let_go_rx) = tokio::sync::oneshot::channel::<()>();
    let store = store.clone();
    tokio::spawn(async move {
        let tx = store.begin_write().await.unwrap();
        let _ = got_tx.send(());
        let _ = let_go_rx.await;
        drop(tx);
    });
    (got_rx, let_go_tx)
}

/// An upload re-imports a member onto `new_phone` while two volunteers claim: on
/// PostgreSQL the claims run while the upload's fill is in its (slowed) chunk; on
/// SQLite the writer is held so they run between the member upsert and the fill. Each
/// claim is then dialled. The upload's answer, and (member, number, decision) per dial.
async fn dials_during_a_reimport(
    store: &Store,
    bank: common::bank::Bank,
    reimport: String,
    new_phone: &str,
) -> (common::app::Reply, Vec<(i64, String, DialDecision)>) {
    let app = TestApp::new(store.clone()).await;
    let upload_app = TestApp {
        router: app.router.clone(),
        store: store.clone(),
        token: app.token.clone(),
    };
    let claim_both = |bank: std::sync::Arc<common::bank::Bank>| async move {
        let mut tasks = Vec::new();
        for v in 0..2 {
            let bank = bank.clone();
            tasks.push(tokio::spawn(async move {
                let req = bank.request(v, t0());
                bank.store.claim(&req).await.unwrap()
            }));
        }
        tasks
    };
    let bank = std::sync::Arc::new(bank);
    let (upload, claims) = match store.backend() {
        Backend::Postgres => {
            slow_fill(store, 3.0).await;
            let upload = tokio::spawn(async move {
                upload_app
                    .raw("POST", "/api/v1/members/import", "text/csv", reimport)
                    .await
            });
            // The import has committed X1's new number; the fill is in its chunk.
            for _ in 0..500 {
                if store.get_member("X1").await.unwrap().phone.as_e164() == new_phone {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let claims = claim_both(bank.clone()).await;
            (upload, claims)
        }
        Backend::Sqlite => {
            // Order the writers: the upload's token stamp, then (held) the member
            // upsert, then the two claims, then the fill.
            let (got1, let_go1) = hold_writer(store).await;
            got1.await.unwrap();
            let upload = tokio::spawn(async move {
                upload_app
                    .raw("POST", "/api/v1/members/import", "text/csv", reimport)
                    .await
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (got2, let_go2) = hold_writer(store).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let_go1.send(()).unwrap();
            got2.await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let claims = claim_both(bank.clone()).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let_go2.send(()).unwrap();
            (upload, claims)
        }
    };
    let mut dials = Vec::new();
    for t in claims {
        if let ClaimOutcome::Claimed(a) = t.await.unwrap() {
            let d = store
                .start_dial(a.id, &CallingHours::default(), t0(), 600_000)
                .await
                .unwrap();
            dials.push((a.member_id, a.phone.as_e164().to_owned(), d));
        }
    }
    slow_fill(store, 0.0).await;
    (upload.await.unwrap(), dials)
}

/// Two volunteers, and members X1 (on P1) and X2 (on P2) queued in an active campaign;
/// returns P2.
async fn x1_and_x2_queued(store: &Store) -> (common::bank::Bank, String) {
    let bank = bank(store.clone(), 0, 2).await;
    let (p1, p2) = (phone_of(100), phone_of(200));
    common::import_members_str(
        store,
        &format!("member_id,name,phone,constituency\nX1,One,{p1},{A}\nX2,Two,{p2},{A}\n"),
    )
    .await;
    assert_eq!(queued(store, bank.campaign_id).await, 2);
    (bank, p2)
}

both_backends! {
    // An upload moves X1 onto X2's number P2: a household line, never on two live calls
    // at once. The queue's copy of X1's number (which the claim's check and
    // `call_queue_leased_phone_idx` use) once trailed the member until the fill reached
    // X1's chunk, and two volunteers claiming in that window were both told to dial P2.
    // Now the upsert moves the waiting queue row in its own transaction, and the dial
    // checks the member's own number.
    async fn reimport_onto_a_shared_number_never_puts_it_on_two_live_calls(store) {
        let (bank, p2) = x1_and_x2_queued(&store).await;
        let reimport = format!("member_id,name,phone,constituency\nX1,One,{p2},{A}\nX3,Three,{},{A}\n", phone_of(300));
        let (r, dials) = dials_during_a_reimport(&store, bank, reimport, &p2).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        let live_on_p2 = dials.iter().filter(|(_, _, d)| matches!(d, DialDecision::Dial(n) if n.as_e164() == p2)).count();
        assert!(
            live_on_p2 <= 1,
            "one household number dialled on two live calls at once: {:?}",
            dials.iter().map(|(m, _, d)| (m, d)).collect::<Vec<_>>()
        );
    }
}

both_backends! {
    // X1 is re-imported onto a number that opted out: the number is never dialled, and
    // X1's queue row is `suppressed` from the upsert on.
    async fn reimport_onto_a_suppressed_number_during_the_fill_is_never_dialled(store) {
        let (bank, _) = x1_and_x2_queued(&store).await;
        // P3 opted out; X1 is re-imported onto it. The queue still has X1 on P1.
        let p3 = phone_of(300);
        store.suppress(&PhoneNumber::from_e164(&p3).unwrap(), "STOP", "sms", "member").await.unwrap();
        let reimport = format!("member_id,name,phone,constituency\nX1,One,{p3},{A}\nX3,Three,{},{A}\n", phone_of(400));
        let campaign_id = bank.campaign_id;
        let (r, dials) = dials_during_a_reimport(&store, bank, reimport, &p3).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        let dialled_p3: Vec<_> = dials.iter().filter(|(_, _, d)| matches!(d, DialDecision::Dial(n) if n.as_e164() == p3)).collect();
        assert!(dialled_p3.is_empty(), "an opted-out number was dialled: {dialled_p3:?}");
        // The upsert moved X1's waiting queue row to the new number, opted out, in its
        // own transaction: no window in which a claim could lease it.
        assert_eq!(queue_state(&store, campaign_id, &p3).await, ["suppressed"]);
    }
}

// ---------------------------------------------------------------------------------------
// In-memory SQLite: one connection for reads and writes
// ---------------------------------------------------------------------------------------

/// Everything at once on `sqlite::memory:`: a 12,000-member upload into a running
/// campaign (in-request fill, then the background fill), eight volunteers claiming and
/// finishing, organiser reads, opt-outs and the sweeper. No request may wait out the
/// pool's 30 s acquire timeout (a nested acquisition on the one connection would), and
/// everyone ends up queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_url_upload_fill_claims_reads_and_sweeps_concurrently() {
    let store = Store::connect(Some("sqlite::memory:"))
        .await
        .expect("open :memory:");
    let bank = std::sync::Arc::new(bank(store.clone(), 5, 8).await);
    let app = std::sync::Arc::new(TestApp::new(store.clone()).await);
    let c = bank.campaign_id;
    let limit = Duration::from_secs(25);
    let mut tasks: Vec<tokio::task::JoinHandle<Result<(), String>>> = Vec::new();
    {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(120),
                app.raw(
                    "POST",
                    "/api/v1/members/import",
                    "text/csv",
                    members_csv("Q", 0..12_000, B, "full"),
                ),
            )
            .await
            .map_err(|_| "upload hung".to_owned())?;
            (r.status.as_u16() == 200)
                .then_some(())
                .ok_or(format!("upload: {} {}", r.status, r.text))
        }));
    }
    for v in 0..8 {
        let bank = bank.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                let now = t0() + SignedDuration::from_secs(i * 60);
                let req = bank.request(v, now);
                let out = tokio::time::timeout(limit, bank.store.claim(&req))
                    .await
                    .map_err(|_| format!("claim {v}/{i} hung"))?
                    .map_err(|e| format!("claim {v}/{i}: {e:#}"))?;
                if let ClaimOutcome::Claimed(a) = out {
                    let fin = Finish {
                        disposition: None,
                        opt_out: false,
                    };
                    tokio::time::timeout(
                        limit,
                        bank.store
                            .finish_attempt(a.id, fin, &bank.policy, now.as_millisecond()),
                    )
                    .await
                    .map_err(|_| format!("finish {v}/{i} hung"))?
                    .map_err(|e| format!("finish {v}/{i}: {e:#}"))?;
                }
            }
            Ok(())
        }));
    }
    for k in 0..3 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                for path in [
                    "/api/v1/campaigns".to_owned(),
                    format!("/api/v1/campaigns/{c}/report"),
                    format!("/api/v1/campaigns/{c}/report/live"),
                    "/api/v1/volunteers".to_owned(),
                    "/api/v1/suppressions".to_owned(),
                ] {
                    let r = tokio::time::timeout(limit, app.get(&path))
                        .await
                        .map_err(|_| format!("GET {path} hung ({k}/{i})"))?;
                    if r.status.as_u16() != 200 {
                        return Err(format!("GET {path}: {} {}", r.status, r.text));
                    }
                }
                let phone = phone_of(16_000 + k * 100 + i);
                let r = tokio::time::timeout(
                    limit,
                    app.json(
                        "POST",
                        "/api/v1/suppressions",
                        serde_json::json!({"phone": phone, "reason": "test"}),
                    ),
                )
                .await
                .map_err(|_| "POST /suppressions hung".to_owned())?;
                if !r.status.is_success() {
                    return Err(format!("POST /suppressions: {} {}", r.status, r.text));
                }
            }
            Ok(())
        }));
    }
    {
        let state =
            phonebank::http::AppState::new(store.clone(), phonebank::config::Settings::default());
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::timeout(limit, phonebank::sweeper::sweep_once(&state))
                    .await
                    .map_err(|_| "sweeper hung".to_owned())?
                    .map_err(|e| format!("sweeper: {e:#}"))?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(queued_in_the_end(&store, c, 12_020).await, 12_020);
}

/// Requests cancelled at every point (client disconnects) on `sqlite::memory:`. When
/// the pool drops its one connection, the database must outlive it (it once did not:
/// the replacement was a new, empty database, every member, campaign and opt-out gone
/// without an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_url_keeps_its_data_through_cancelled_requests() {
    let store = Store::connect(Some("sqlite::memory:"))
        .await
        .expect("open :memory:");
    let bank = std::sync::Arc::new(bank(store.clone(), 20, 4).await);
    let app = TestApp::new(store.clone()).await;
    let keep = PhoneNumber::from_e164(&phone_of(18_999)).unwrap();
    store
        .suppress(&keep, "STOP", "sms", "member")
        .await
        .unwrap();
    for i in 0..150u64 {
        let us = (i * 997) % 40_000;
        let d = Duration::from_micros(us);
        let _ = tokio::time::timeout(
            d,
            app.raw(
                "POST",
                "/api/v1/members/import",
                "text/csv",
                members_csv("K", 0..3_000, B, "full"),
            ),
        )
        .await;
        let _ =
            tokio::time::timeout(d, bank.store.claim(&bank.request((i % 4) as usize, t0()))).await;
        let _ = tokio::time::timeout(
            d,
            store.suppress(
                &PhoneNumber::from_e164(&phone_of(17_000 + i as usize)).unwrap(),
                "x",
                "sms",
                "m",
            ),
        )
        .await;
        let _ = tokio::time::timeout(
            d,
            app.get(&format!("/api/v1/campaigns/{}/report", bank.campaign_id)),
        )
        .await;
    }
    let alive = tokio::time::timeout(Duration::from_secs(20), async {
        (
            store.suppression(&keep).await,
            store.list_campaigns().await.map(|c| c.len()),
            sqlx::query_scalar::<_, i64>(
                "select count(*) from members where external_id like 'M%'",
            )
            .fetch_one(store.pool())
            .await,
        )
    })
    .await
    .expect("the store hung after cancelled requests");
    assert!(
        matches!(alive.0, Ok(Some(_))),
        "the opt-out is gone: {:?}",
        alive.0
    );
    assert_eq!(alive.1.unwrap(), 1, "the campaign is gone");
    assert_eq!(alive.2.unwrap(), 80, "members are gone");
}

// ---------------------------------------------------------------------------------------
// release_attempt's seat wake-up racing claims
// ---------------------------------------------------------------------------------------

/// Rounds of releases (with their seat wake-up outside the transaction) racing claims
/// of the same seats. Returns the errors and, per round, the seats left marked idle
/// although they had members ready.
async fn release_claim_rounds(store: Store) -> (Vec<String>, Vec<(usize, i64)>) {
    let bank = std::sync::Arc::new(bank(store, 3, 16).await);
    let mut now = t0();
    let mut errors = Vec::new();
    let mut lost_wakes = Vec::new();
    for round in 0..15 {
        // Volunteers 0..8 lease; then they release while 8..16 claim.
        let mut held = Vec::new();
        for v in 0..8 {
            if let ClaimOutcome::Claimed(a) = bank.store.claim(&bank.request(v, now)).await.unwrap()
            {
                held.push(a.id);
            }
        }
        let mut tasks = Vec::new();
        for id in held {
            let bank = bank.clone();
            let at = now.as_millisecond();
            tasks.push(tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(20), bank.store.release_attempt(id, at))
                    .await
                    .map_err(|_| "release hung".to_owned())?
                    .map(|_| None)
                    .map_err(|e| format!("release: {e:#}"))
            }));
        }
        for v in 8..16 {
            let bank = bank.clone();
            tasks.push(tokio::spawn(async move {
                match tokio::time::timeout(
                    Duration::from_secs(20),
                    bank.store.claim(&bank.request(v, now)),
                )
                .await
                {
                    Err(_) => Err("claim hung".to_owned()),
                    Ok(Err(e)) => Err(format!("claim: {e:#}")),
                    Ok(Ok(ClaimOutcome::Claimed(a))) => Ok(Some(a.id)),
                    Ok(Ok(_)) => Ok(None),
                }
            }));
        }
        let mut claimed = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(Some(id)) => claimed.push(id),
                Ok(None) => {}
                Err(e) => errors.push(format!("round {round}: {e}")),
            }
        }
        let dup = numbers_leased_twice(&bank.store, bank.campaign_id).await;
        assert_eq!(dup, 0, "round {round}: a number leased twice");
        // Whoever came back empty (a release not yet committed) finds someone now:
        // 12 members, at most 8 leased.
        for v in 8 + claimed.len()..16 {
            match bank.store.claim(&bank.request(v, now)).await.unwrap() {
                ClaimOutcome::Claimed(a) => claimed.push(a.id),
                o => panic!("round {round}: volunteer {v} found nobody with members ready: {o:?}"),
            }
        }
        // A seat with members ready left marked idle: a wake-up lost to the claim's
        // own idle mark written after it (a hint only; counted, checked below).
        let idle_ready: i64 = sqlx::query_scalar(
                "select count(*) from seat_schedule ss where ss.campaign_id = $1 and ss.idle_until > $2 \
                 and exists (select 1 from call_queue q where q.campaign_id = ss.campaign_id \
                             and q.seat_id = ss.seat_id and q.state = 'ready')",
            )
            .bind(bank.campaign_id)
            .bind(now.as_millisecond())
            .fetch_one(bank.store.pool())
            .await
            .unwrap();
        if idle_ready > 0 {
            lost_wakes.push((round, idle_ready));
        }
        for id in claimed {
            bank.store
                .release_attempt(id, now.as_millisecond())
                .await
                .unwrap();
        }
        now += SignedDuration::from_secs(5);
    }
    (errors, lost_wakes)
}

both_backends! {
    // No deadlock or other error, no member or number leased twice, and a released
    // member is claimable again at once (the full walk finds them even when idle).
    async fn releases_racing_claims_never_deadlock_or_double_lease(store) {
        let (errors, _) = release_claim_rounds(store).await;
        assert!(errors.is_empty(), "{errors:?}");
    }

    // The wake-up itself: a release whose seat wake-up landed between a racing claim's
    // commit and that claim's `mark_idle` (written after the commit, from what the claim
    // saw) was undone, leaving the seat out of the fast phase for 30 s with members
    // ready. `mark_idle` now skips a seat with a member ready at write time.
    async fn a_release_racing_a_claim_does_not_leave_its_seat_idle(store) {
        let (errors, lost_wakes) = release_claim_rounds(store).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert!(lost_wakes.is_empty(), "seats left idle with members ready (round, seats): {lost_wakes:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: std::sync::OnceLock<LogBuf> = std::sync::OnceLock::new();

fn capture_logs() -> LogBuf {
    LOGS.get_or_init(|| {
        let buf = LogBuf::default();
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || w.clone())
            .with_ansi(false)
            .try_init();
        buf
    })
    .clone()
}

both_backends! {
    // The new paths (upload with a background fill, an opt-out and a re-import during
    // it, claims and releases with the seat wake-up) log at info level and above without
    // a member's number in any spelling.
    async fn no_member_number_in_logs_from_fill_release_and_upload(store) {
        let logs = capture_logs();
        let bank = bank(store.clone(), 2, 2).await;
        let app = TestApp::new(store.clone()).await;
        slow_fill(&store, 2.5).await;
        let r = app.raw("POST", "/api/v1/members/import", "text/csv", members_csv("L", 0..9_000, A, "full")).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        let r = app
            .json("POST", "/api/v1/suppressions", serde_json::json!({"phone": phone_of(8_000), "reason": "asked"}))
            .await;
        assert!(r.status.is_success(), "{}", r.text);
        // A bad row and a re-import onto a new number.
        let r = app
            .raw(
                "POST",
                "/api/v1/members/import",
                "text/csv",
                format!("member_id,name,phone,constituency\nL00001,One,{},{A}\nL99999,Bad,{}9,{A}\n", phone_of(8_500), phone_of(8_600)),
            )
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        slow_fill(&store, 0.0).await;
        queued_in_the_end(&store, bank.campaign_id, 9_008).await;
        for v in 0..2 {
            if let ClaimOutcome::Claimed(a) = store.claim(&bank.request(v, t0())).await.unwrap() {
                store.release_attempt(a.id, t0().as_millisecond()).await.unwrap();
            }
        }
        let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
        let mut leaked = Vec::new();
        for i in (0..9_000).step_by(7).chain([8_000, 8_500, 8_600]) {
            let e164 = phone_of(i);
            let digits = e164.trim_start_matches('+').to_owned();
            let national = format!("0{}", &digits[2..]);
            for form in [digits, national] {
                if text.contains(&form) {
                    leaked.push(form);
                }
            }
        }
        assert!(leaked.is_empty(), "member numbers in the logs: {leaked:?}");
    }
}

both_backends! {
    // Three running campaigns; an upload arrives; while the first campaign's queue is
    // being filled inside the request, the organiser pauses and deletes the second.
    // The upload must still succeed (every member was imported) and the third campaign
    // still get the new members: a failed fill is logged and skipped.
    async fn campaign_deleted_during_an_upload_fill_neither_fails_it_nor_starves_others(store) {
        load_seats(&store).await;
        let c0 = active_campaign(&store).await;
        let c1 = active_campaign(&store).await;
        let c2 = active_campaign(&store).await;
        let app = TestApp::new(store.clone()).await;
        slow_fill(&store, 2.5).await;
        let upload = upload_in_a_task(&app, members_csv("D", 0..6_000, A, "full"));
        wait_for_members(&store, 6_000).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.set_campaign_status(c1, CampaignStatus::Paused).await.unwrap();
        store.delete_campaign(c1).await.unwrap();
        let r = upload.await.unwrap();
        slow_fill(&store, 0.0).await;
        let queued_c0 = queued_in_the_end(&store, c0, 6_000).await;
        // Not the two-minute wait: the fill of c2 either ran by now or never will.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let queued_c2 = queued(&store, c2).await;
        assert_eq!(
            (r.status.as_u16(), queued_c0, queued_c2),
            (200, 6_000, 6_000),
            "upload answered {} {}; the third campaign was left unfilled?",
            r.status,
            r.text
        );
    }
}

/// The same as `memory_url_keeps_its_data_through_cancelled_requests`, one kind of
/// cancelled operation at a time, to find which one loses the database.
async fn memory_survives(kind: &str) -> Result<(), String> {
    let store = Store::connect(Some("sqlite::memory:"))
        .await
        .expect("open :memory:");
    let bank = std::sync::Arc::new(bank(store.clone(), 20, 4).await);
    let app = TestApp::new(store.clone()).await;
    for i in 0..150u64 {
        let d = Duration::from_micros((i * 997) % 40_000);
        match kind {
            "upload" => {
                let _ = tokio::time::timeout(
                    d,
                    app.raw(
                        "POST",
                        "/api/v1/members/import",
                        "text/csv",
                        members_csv("K", 0..3_000, B, "full"),
                    ),
                )
                .await;
            }
            "claim" => {
                let _ = tokio::time::timeout(
                    d,
                    bank.store.claim(&bank.request((i % 4) as usize, t0())),
                )
                .await;
            }
            "suppress" => {
                let _ = tokio::time::timeout(
                    d,
                    store.suppress(
                        &PhoneNumber::from_e164(&phone_of(17_000 + i as usize)).unwrap(),
                        "x",
                        "sms",
                        "m",
                    ),
                )
                .await;
            }
            "report" => {
                let _ = tokio::time::timeout(
                    d,
                    app.get(&format!("/api/v1/campaigns/{}/report", bank.campaign_id)),
                )
                .await;
            }
            _ => unreachable!(),
        }
    }
    let n = tokio::time::timeout(
        Duration::from_secs(20),
        sqlx::query_scalar::<_, i64>("select count(*) from members where external_id like 'M%'")
            .fetch_one(store.pool()),
    )
    .await
    .map_err(|_| format!("{kind}: hung"))?
    .map_err(|e| format!("{kind}: {e}"))?;
    (n == 80)
        .then_some(())
        .ok_or(format!("{kind}: {n} members left of 80"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_url_survives_cancelled_uploads() {
    memory_survives("upload").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_url_survives_cancelled_claims() {
    memory_survives("claim").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_url_survives_cancelled_suppressions() {
    memory_survives("suppress").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_url_survives_cancelled_reports() {
    memory_survives("report").await.unwrap();
}

/// The smallest form: plain reads (`list_campaigns`) given up on at once, as a client
/// disconnect or a request timeout does: the dropped connection's replacement must see
/// the same in-memory database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_url_survives_cancelled_reads() {
    let mut lost = Vec::new();
    for url in [
        "file",
        "sqlite::memory:",
        "sqlite:file:breaker3?mode=memory&cache=shared",
    ] {
        let store = if url == "file" {
            common::sqlite().await
        } else {
            Store::connect(Some(url)).await.expect("open in-memory")
        };
        load_seats(&store).await;
        let c = active_campaign(&store).await;
        // Another request keeps the one connection busy, so the cancelled ones are
        // cancelled while waiting for it, or just after getting it.
        let busy = {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let _ = store.list_campaigns().await;
                    let _ = store.seat_index().await;
                }
            })
        };
        for i in 0..300u64 {
            let _ = tokio::time::timeout(
                Duration::from_micros(500 + (i * 131) % 3_000),
                store.list_campaigns(),
            )
            .await;
        }
        busy.abort();
        let after = tokio::time::timeout(Duration::from_secs(20), store.get_campaign(c)).await;
        if !matches!(after, Ok(Ok(_))) {
            lost.push(format!(
                "{url}: {:?}",
                after.map(|r| r.map(|c| c.id).map_err(|e| format!("{e:#}")))
            ));
        }
    }
    assert!(
        lost.is_empty(),
        "the database is gone after cancelled reads: {lost:?}"
    );
}

both_backends! {
    // The mirror of the opt-out race: a number suppressed before the upload is opted
    // back in (START, audited) while the background fill inserts its member. The
    // member must end up `ready` (on PostgreSQL the chunk once inserted it `suppressed`
    // from its snapshot while `unsuppress` saw only committed rows).
    async fn re_opt_in_during_background_fill_leaves_member_ready(store) {
        load_seats(&store).await;
        let number = PhoneNumber::from_e164(&phone_of(7_000)).unwrap();
        store.suppress(&number, "STOP", "sms", "member").await.unwrap();
        let states = change_during_the_fill(&store, |number| {
            let store = store.clone();
            async move { assert!(store.unsuppress(&number, "sms", "START", "member").await.unwrap()); }
        })
        .await;
        assert_eq!(states, ["ready"], "a re-opt-in made during the fill was lost: the member stays suppressed");
    }
}

both_backends! {
    // An organiser double-clicks "start" (two status requests at once), or two uploads
    // arrive together: two fills of one campaign run side by side from the first chunk.
    // Neither may fail (both insert the seat schedule rows: `ensure_schedule` ignores
    // the loser's conflict; the chunk inserts wait on each other's keys), and everyone
    // is queued once.
    async fn two_fills_of_one_campaign_at_once_both_succeed(store) {
        load_seats(&store).await;
        common::import_members_str(&store, &members_csv("F", 0..12_000, A, "full")).await;
        for round in 0..3 {
            let c = store.create_campaign(&common::bank::spec("Twice")).await.unwrap().id;
            let mut tasks = Vec::new();
            for _ in 0..2 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    store.set_campaign_status(c, CampaignStatus::Active).await.map(|_| ()).map_err(|e| format!("{e:#}"))
                }));
            }
            let mut errors = Vec::new();
            for t in tasks {
                if let Err(e) = t.await.unwrap() {
                    errors.push(e);
                }
            }
            assert!(errors.is_empty(), "round {round}: starting the campaign twice at once failed: {errors:?}");
            assert_eq!(queued_in_the_end(&store, c, 12_000).await, 12_000, "round {round}");
        }
    }
}
