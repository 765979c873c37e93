//! Races and interruptions: many volunteers claiming at once (nobody leased twice, no
//! claim failing, rate limits never overspent), writes cancelled mid-flight (a client
//! that disconnects) never wedging the SQLite writer, a campaign paused, deleted or
//! imported into while its queue is filled in the background, and the SQLite URL forms.
//! Most of these were found by an adversarial pass over the claim and the writer.

mod common;

use common::app::TestApp;
use common::bank::{
    A, B, Bank, C, D, bank, long_list, members_in, numbers_leased_twice, queued, queued_in_the_end,
    stale_queue_copies, t0, tally, target,
};
use common::{import_members_str, load_seats};
use jiff::{SignedDuration, Timestamp};
use phonebank::domain::targeting::NonTargets;
use phonebank::domain::{CampaignStatus, PhoneNumber};
use phonebank::store::Store;
use phonebank::store::calls::{ClaimOutcome, DialDecision, Finish};
use phonebank::store::seats::SeatPatch;

fn vol_phone(i: usize) -> PhoneNumber {
    PhoneNumber::from_e164(&format!("+44113497{i:04}")).unwrap()
}

/// Many volunteers claim at once: every claim answers (no error, no hang), nobody is
/// leased twice, and exactly min(volunteers, members) are leased.
async fn concurrent_round(
    bank: &std::sync::Arc<Bank>,
    now: Timestamp,
) -> (usize, usize, Vec<String>) {
    let mut tasks = Vec::new();
    for v in 0..bank.volunteers.len() {
        let bank = bank.clone();
        tasks.push(tokio::spawn(async move {
            let req = bank.request(v, now);
            tokio::time::timeout(std::time::Duration::from_secs(20), bank.store.claim(&req)).await
        }));
    }
    let (mut claimed, mut empty, mut errors) = (0, 0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Err(_) => errors.push("timeout".to_owned()),
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Ok(Ok(ClaimOutcome::Claimed(_))) => claimed += 1,
            Ok(Ok(ClaimOutcome::Empty)) => empty += 1,
            Ok(Ok(ClaimOutcome::OutsideHours)) => errors.push("outside hours".into()),
        }
    }
    (claimed, empty, errors)
}

async fn assert_no_double_lease(store: &Store, campaign_id: i64) {
    let dup: i64 = sqlx::query_scalar(
        "select count(*) from (select member_id from contact_attempts where campaign_id = $1 \
         and state in ('leased','dialling','answered') group by member_id having count(*) > 1) d",
    )
    .bind(campaign_id)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(dup, 0, "a member leased twice");
}

both_backends! {
    async fn many_concurrent_claims_lease_each_member_once(store) {
        // 4 seats x 5 members = 20 members, 32 volunteers claiming at once.
        let bank = std::sync::Arc::new(bank(store, 5, 32).await);
        for code in [A, B, C, D] {
            bank.store.update_seat(code, &target(1)).await.unwrap();
        }
        let (claimed, empty, errors) = concurrent_round(&bank, t0()).await;
        assert!(errors.is_empty(), "claims failed: {errors:?}");
        assert_no_double_lease(&bank.store, bank.campaign_id).await;
        assert_eq!((claimed, empty), (20, 12));
    }

    async fn concurrent_claims_on_rate_limited_seats_never_overspend_or_fail(store) {
        // Every seat limited to a burst of 2: at one instant exactly 8 of 24 claims win.
        let bank = std::sync::Arc::new(bank(store, 10, 24).await);
        for code in [A, B, C, D] {
            bank.store
                .update_seat(code, &SeatPatch { rate_per_hour: Some(60), burst: Some(2), ..target(1) })
                .await
                .unwrap();
        }
        let (claimed, empty, errors) = concurrent_round(&bank, t0()).await;
        assert!(errors.is_empty(), "claims failed: {errors:?}");
        assert_no_double_lease(&bank.store, bank.campaign_id).await;
        assert_eq!((claimed, empty), (8, 16));
        let spent: Vec<i64> = sqlx::query_scalar(
            "select count(*) from contact_attempts where campaign_id = $1 group by seat_id",
        )
        .bind(bank.campaign_id)
        .fetch_all(bank.store.pool())
        .await
        .unwrap();
        assert!(spent.iter().all(|&n| n == 2), "per-seat spend {spent:?}");
    }

    async fn start_then_pause_and_delete_during_background_fill(store) {
        let c = long_list(&store, 30_000, A).await;
        store.set_campaign_status(c, CampaignStatus::Active).await.unwrap();
        store.set_campaign_status(c, CampaignStatus::Paused).await.unwrap();
        // Resume and pause again: a second fill runs beside the first.
        store.set_campaign_status(c, CampaignStatus::Active).await.unwrap();
        store.set_campaign_status(c, CampaignStatus::Paused).await.unwrap();
        store.delete_campaign(c).await.unwrap();
        // Long enough for both fills to have reached the end of the list.
        tokio::time::sleep(std::time::Duration::from_secs(8)).await;
        assert_eq!(queued(&store, c).await, 0, "queue rows left for a deleted campaign");
        let sched: i64 = sqlx::query_scalar("select count(*) from seat_schedule where campaign_id = $1")
            .bind(c)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(sched, 0, "seat_schedule rows left for a deleted campaign");
    }

    async fn concurrent_import_during_background_fill_loses_nobody(store) {
        let c = long_list(&store, 20_000, A).await;
        store.set_campaign_status(c, CampaignStatus::Active).await.unwrap();
        // More members while the fill runs; some re-imported onto another seat.
        import_members_str(&store, &members_in(19_000..23_000, B)).await;
        assert_eq!(queued_in_the_end(&store, c, 23_000).await, 23_000);
        let wrong_seat = stale_queue_copies(&store, c).await;
        assert_eq!(wrong_seat, 0, "queue copies out of date with the members");
    }

    async fn an_upload_into_a_running_campaign_queues_every_new_member_in_the_end(store) {
        // The upload answers after a couple of seconds of queueing at most; the rest of
        // a long file is queued in the background.
        let c = long_list(&store, 100, A).await;
        store.set_campaign_status(c, CampaignStatus::Active).await.unwrap();
        let app = TestApp::new(store.clone()).await;
        let r = app.raw("POST", "/api/v1/members/import", "text/csv", members_in(100..12_100, B)).await;
        assert_eq!((r.status.as_u16(), r.body["imported"].as_u64()), (200, Some(12_000)), "{}", r.text);
        assert_eq!(queued_in_the_end(&store, c, 12_100).await, 12_100);
    }

    async fn sequential_shares_hold_after_a_seat_refills_by_release(store) {
        // A (weight 3) and B (weight 1), 8 members each. 12 leases at one instant: A is
        // emptied and then found empty (marked idle) while B is served. A's leases are
        // released (A has 8 members again). Four sequential claims should then go about
        // 3:1 to A, but A is left out of the fast phase for IDLE_RECHECK_MS, so B gets
        // all of them while A waits.
        let bank = bank(store, 8, 13).await;
        bank.store.update_seat(A, &target(3)).await.unwrap();
        bank.store.update_seat(B, &target(1)).await.unwrap();
        bank.targeting(NonTargets::Exclude).await;
        let now = t0();
        let mut leases = Vec::new();
        for v in 0..12 {
            leases.push(bank.lease(v, now).await.unwrap());
        }
        let codes: Vec<&str> = leases.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(codes.iter().filter(|c| **c == A).count(), 8, "{codes:?}");
        for (id, code) in &leases {
            if code == A {
                assert!(bank.store.release_attempt(*id, now.as_millisecond()).await.unwrap());
            }
        }
        let mut got = Vec::new();
        for i in 0..4 {
            got.push(bank.claim_on(&bank.store, 12, now + SignedDuration::from_secs(i + 1)).await);
        }
        let t = tally(&got);
        assert!(t.get(A).copied().unwrap_or(0) >= 2, "after A refilled: {got:?} (leases {codes:?})");
    }
}

/// An in-memory SQLite URL: writes go to the writer pool, reads to the read pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_memory_url_reads_what_it_wrote() {
    let store = Store::connect(Some("sqlite::memory:"))
        .await
        .expect("open :memory:");
    let v = store
        .create_volunteer("V", &vol_phone(1), None, "x")
        .await
        .expect("write then read back on :memory:");
    assert_eq!(store.list_volunteers().await.unwrap().len(), 1, "{v:?}");
}

/// `sqlite://relative/path` and `sqlite:///abs/path` both work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_url_forms() {
    let dir = common::test_dir();
    let rel = dir
        .strip_prefix(std::env::current_dir().unwrap())
        .unwrap()
        .join("rel.db");
    let urls = [
        format!("sqlite://{}", dir.join("abs.db").display()),
        format!("sqlite://{}", rel.display()),
        format!("sqlite:{}?mode=rwc", dir.join("rwc.db").display()),
    ];
    for (i, url) in urls.iter().enumerate() {
        let store = Store::connect(Some(url)).await.expect(url);
        store
            .create_volunteer("V", &vol_phone(2 + i), None, "x")
            .await
            .unwrap();
        assert_eq!(store.list_volunteers().await.unwrap().len(), 1, "{url}");
        store.close().await;
    }
}

/// Writes cancelled at random points (a client that disconnects mid-request drops the
/// handler future) must not wedge the writer: a later write still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_writes_do_not_wedge_sqlite_writer() {
    let store = common::sqlite().await;
    for i in 0..400usize {
        let us = (i as u64 * 37) % 3000;
        let _ = tokio::time::timeout(
            std::time::Duration::from_micros(us),
            store.create_volunteer("V", &vol_phone(100 + i), None, "x"),
        )
        .await;
    }
    let later = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.create_volunteer("Last", &vol_phone(9999), None, "x"),
    )
    .await;
    assert!(later.is_ok(), "a write after cancelled writes hung");
    later.unwrap().unwrap();
}

/// The same with transactions (`begin_write`): suppress runs in a write transaction.
/// A cancelled write must not leave the single writer connection inside a transaction
/// or the group commit waiting for a leader that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_transactions_do_not_wedge_sqlite_writer() {
    let store = common::sqlite().await;
    for i in 0..400usize {
        let us = (i as u64 * 53) % 4000;
        let _ = tokio::time::timeout(
            std::time::Duration::from_micros(us),
            store.suppress(&vol_phone(2000 + i), "test", "test", "test"),
        )
        .await;
    }
    let later = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.suppress(&vol_phone(9998), "test", "test", "test"),
    )
    .await;
    assert!(later.is_ok(), "a write after cancelled transactions hung");
    later.unwrap().unwrap();
}

both_backends! {
    async fn one_volunteer_claiming_ten_times_at_once_holds_one_lease(store) {
        let bank = std::sync::Arc::new(bank(store, 5, 1).await);
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let bank = bank.clone();
            tasks.push(tokio::spawn(async move {
                let req = bank.request(0, t0());
                match bank.store.claim(&req).await {
                    Ok(ClaimOutcome::Claimed(a)) => Ok(a.id),
                    Ok(o) => Err(format!("{o:?}")),
                    Err(e) => Err(format!("{e:#}")),
                }
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        let first = ids[0].clone().unwrap();
        assert!(ids.iter().all(|i| i.as_ref() == Ok(&first)), "{ids:?}");
    }
}

both_backends! {
    async fn rounds_of_concurrent_claims_mixed_limits_shared_phones(store) {
        // Shared numbers across seats, two limited seats and two unlimited, 16
        // volunteers claiming at once, 12 rounds. No claim may fail (deadlock,
        // contention), no number may be leased twice at once, and the limited seats
        // never exceed burst + elapsed / interval.
        load_seats(&store).await;
        let mut csv = String::from("member_id,name,phone,constituency\n");
        for (s, code) in [A, B, C, D].iter().enumerate() {
            for i in 0..40 {
                csv.push_str(&format!("M{s}{i:03},Member,+447700900{:03},{code}\n", i % 12));
            }
        }
        import_members_str(&store, &csv).await;
        let bank = std::sync::Arc::new(bank(store, 0, 16).await);
        for code in [A, B] {
            bank.store
                .update_seat(code, &SeatPatch { rate_per_hour: Some(120), burst: Some(3), ..target(1) })
                .await
                .unwrap();
        }
        for code in [C, D] {
            bank.store.update_seat(code, &target(2)).await.unwrap();
        }
        let mut now = t0();
        let mut errors = Vec::new();
        for _round in 0..12 {
            let mut tasks = Vec::new();
            for v in 0..bank.volunteers.len() {
                let bank = bank.clone();
                tasks.push(tokio::spawn(async move {
                    let req = bank.request(v, now);
                    tokio::time::timeout(std::time::Duration::from_secs(20), bank.store.claim(&req)).await
                }));
            }
            let mut ids = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    Err(_) => errors.push("timeout".to_owned()),
                    Ok(Err(e)) => errors.push(format!("{e:#}")),
                    Ok(Ok(ClaimOutcome::Claimed(a))) => ids.push(a.id),
                    Ok(Ok(_)) => {}
                }
            }
            let dup = numbers_leased_twice(&bank.store, bank.campaign_id).await;
            assert_eq!(dup, 0, "a number leased twice at once");
            for id in ids {
                bank.store
                    .finish_attempt(id, Finish { disposition: None, opt_out: false }, &bank.policy, now.as_millisecond())
                    .await
                    .unwrap();
            }
            now += SignedDuration::from_secs(20);
        }
        assert!(errors.is_empty(), "claims failed: {errors:?}");
        let per_seat: Vec<(String, i64)> = sqlx::query_as(
            "select s.code, count(*) from contact_attempts a join seats s on s.id = a.seat_id \
             where a.campaign_id = $1 group by s.code order by s.code",
        )
        .bind(bank.campaign_id)
        .fetch_all(bank.store.pool())
        .await
        .unwrap();
        // 12 rounds over 220 s at 120/h burst 3: at most 3 + 220/30 = 10 each.
        for (code, n) in &per_seat {
            if code == A || code == B {
                assert!(*n <= 10, "{code} admitted {n}: {per_seat:?}");
            }
        }
    }
}

both_backends! {
    async fn a_number_already_on_a_call_is_never_dialled_again(store) {
        // X1 and X2 are leased on their own numbers; a re-import then gives X1 the
        // number X2 is being dialled on. The leased queue row still has X1's old number
        // (the claim's checks cannot see the clash): the dial must.
        let bank = bank(store.clone(), 0, 2).await;
        let (p1, p2) = ("+447700900101", "+447700900102");
        import_members_str(&store, &format!("member_id,name,phone,constituency\nX1,One,{p1},{A}\nX2,Two,{p2},{A}\n")).await;
        let mut leases = Vec::new();
        for v in 0..2 {
            let ClaimOutcome::Claimed(a) = store.claim(&bank.request(v, t0())).await.unwrap() else {
                panic!("nobody to claim");
            };
            leases.push(a);
        }
        let x1 = leases.iter().find(|a| a.phone.as_e164() == p1).unwrap().id;
        let x2 = leases.iter().find(|a| a.phone.as_e164() == p2).unwrap().id;
        let hours = bank.hours.clone();
        let dial = |id| {
            let store = store.clone();
            let hours = hours.clone();
            async move { store.start_dial(id, &hours, t0(), 600_000).await.unwrap() }
        };
        assert!(matches!(dial(x2).await, DialDecision::Dial(n) if n.as_e164() == p2));
        import_members_str(&store, &format!("member_id,name,phone,constituency\nX1,One,{p2},{A}\n")).await;
        assert_eq!(dial(x1).await, DialDecision::NumberBusy);
        // X1 is back in the queue, on the number they have now.
        let row: (String, String) = sqlx::query_as(
            "select q.state, q.phone from call_queue q join contact_attempts a on a.queue_id = q.id where a.id = $1",
        )
        .bind(x1)
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(row, ("ready".to_owned(), p2.to_owned()));
    }
}
