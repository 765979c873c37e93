//! Target seats: weighted shares, per-seat rate limits and daily caps, how non-target
//! seats are served, member ordering by attribute. Through the store's claim, on SQLite
//! and PostgreSQL, with a controlled clock.

mod common;

use common::bank::{A, B, C, D, bank, long_list, queued_in_the_end, t0, tally, target};
use jiff::{SignedDuration, Timestamp};
use phonebank::domain::CampaignStatus;
use phonebank::domain::targeting::{NonTargets, SeatLimit, Targeting};
use phonebank::store::Store;
use phonebank::store::claim::IDLE_RECHECK_MS;
use phonebank::store::seats::SeatPatch;

both_backends! {
    async fn weights_three_two_one_split_six_hundred_claims_exactly(store) {
        let bank = bank(store, 320, 1).await;
        for (code, w) in [(A, 3), (B, 2), (C, 1)] {
            bank.store.update_seat(code, &target(w)).await.unwrap();
        }
        let mut got = Vec::new();
        for i in 0..600 {
            got.push(bank.claim(t0() + SignedDuration::from_secs(i)).await);
        }
        let t = tally(&got);
        assert_eq!((t.get(A), t.get(B), t.get(C), t.get(D)), (Some(&300), Some(&200), Some(&100), None), "{t:?}");
        // Interleaved, not in blocks: every window of six claims has each seat in it.
        for w in got.chunks(6) {
            let t = tally(w);
            assert_eq!((t.get(A), t.get(B), t.get(C)), (Some(&3), Some(&2), Some(&1)), "{w:?}");
        }
    }

    async fn a_seat_out_of_budget_is_skipped_for_another_seat(store) {
        let bank = bank(store, 40, 6).await;
        bank.store
            .update_seat(A, &SeatPatch { rate_per_hour: Some(10), burst: Some(5), ..target(100) })
            .await
            .unwrap();
        bank.store.update_seat(B, &target(1)).await.unwrap();
        // Six volunteers at the same instant: five from A at once, the sixth elsewhere.
        let now = t0();
        let claims: Vec<_> = futures::future::join_all((0..6).map(|v| bank.claim_on(&bank.store, v, now))).await;
        let t = tally(&claims);
        assert_eq!((t.get(A), t.get(B)), (Some(&5), Some(&1)), "{claims:?}");
        // Six minutes later A has budget for one more; then not again until six more.
        let later = now + SignedDuration::from_mins(6);
        assert_eq!(bank.claim(later).await.as_deref(), Some(A));
        assert_eq!(bank.claim(later).await.as_deref(), Some(B));
        assert_eq!(bank.claim(later + SignedDuration::from_mins(6)).await.as_deref(), Some(A));
        // A limit change applies at the next claim: lifting it serves A again at once.
        bank.store.update_seat(A, &SeatPatch { rate_per_hour: Some(0), ..SeatPatch::default() }).await.unwrap();
        assert_eq!(bank.claim(later + SignedDuration::from_mins(7)).await.as_deref(), Some(A));
    }

    async fn a_daily_cap_holds_until_the_next_local_day(store) {
        let bank = bank(store, 20, 1).await;
        bank.store.update_seat(A, &SeatPatch { daily_cap: Some(3), ..target(100) }).await.unwrap();
        bank.store.update_seat(B, &target(1)).await.unwrap();
        let evening: Timestamp = "2026-12-08T19:00:00Z".parse().unwrap();
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(bank.claim(evening + SignedDuration::from_secs(i)).await);
        }
        assert_eq!(tally(&got).get(A), Some(&3), "{got:?}");
        let next_morning: Timestamp = "2026-12-09T10:30:00Z".parse().unwrap();
        assert_eq!(bank.claim(next_morning).await.as_deref(), Some(A));
    }

    async fn non_target_seats_are_excluded_a_fallback_or_blended(store) {
        let bank = bank(store, 4, 1).await;
        bank.store.update_seat(A, &target(1)).await.unwrap();
        // Exclude: A's four members, then nobody, although B, C and D have members.
        bank.targeting(NonTargets::Exclude).await;
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(bank.claim(t0() + SignedDuration::from_secs(i)).await);
        }
        assert_eq!(got.iter().flatten().filter(|c| *c == A).count(), 4);
        assert_eq!(got[4], None, "excluded seats are never served");
        // Fallback: once targets have nobody eligible, the rest are served.
        bank.targeting(NonTargets::Fallback).await;
        let next = bank.claim(t0() + SignedDuration::from_secs(10)).await.unwrap();
        assert!([B, C, D].contains(&next.as_str()), "{next}");
    }

    async fn blended_non_targets_take_their_weighted_share(store) {
        let bank = bank(store, 30, 1).await;
        bank.store.update_seat(A, &target(2)).await.unwrap();
        bank.targeting(NonTargets::Blend).await;
        let mut got = Vec::new();
        for i in 0..50 {
            got.push(bank.claim(t0() + SignedDuration::from_secs(i)).await);
        }
        let t = tally(&got);
        // A weighs 2, each of B, C, D weighs 1: 2/5 of the claims, within one.
        assert!((19..=21).contains(t.get(A).unwrap()), "{t:?}");
        for code in [B, C, D] {
            assert!((9..=11).contains(t.get(code).unwrap()), "{t:?}");
        }
    }

    async fn members_are_ordered_by_attribute_weight_within_a_seat(store) {
        let bank = bank(store, 10, 1).await;
        bank.store.update_seat(A, &target(1)).await.unwrap();
        bank.targeting(NonTargets::Exclude).await;
        let t = Targeting {
            non_targets: NonTargets::Exclude,
            attribute: Some("membership".into()),
            attribute_weights: [("full".to_owned(), 2)].into(),
        };
        bank.store.set_targeting(bank.campaign_id, &t).await.unwrap();
        let mut kinds = Vec::new();
        for i in 0..10 {
            bank.claim(t0() + SignedDuration::from_secs(i)).await.unwrap();
            let kind: String = sqlx::query_scalar(
                "select m.attributes from contact_attempts a join members m on m.id = a.member_id \
                 order by a.id desc limit 1",
            )
            .fetch_one(bank.store.pool())
            .await
            .unwrap();
            kinds.push(kind.contains("\"full\""));
        }
        assert_eq!(kinds, [true, true, true, true, true, false, false, false, false, false]);
    }

    async fn a_seat_found_empty_is_looked_at_again_and_never_hides_a_member(store) {
        let bank = bank(store, 2, 6).await;
        bank.store.update_seat(A, &target(100)).await.unwrap();
        bank.store.update_seat(B, &target(1)).await.unwrap();
        bank.targeting(NonTargets::Exclude).await;
        let now = t0();
        let seat = |l: Option<(i64, String)>| l.map(|(_, code)| code);
        let (first, code) = bank.lease(0, now).await.unwrap();
        assert_eq!(code, A);
        assert_eq!(seat(bank.lease(1, now).await).as_deref(), Some(A));
        // A has nobody left: B is served, and A is marked as found empty.
        assert_eq!(seat(bank.lease(2, now).await).as_deref(), Some(B));
        // A's first member goes back to the queue. Once the recheck time has passed, the
        // heavy seat A is served first again, although B still has someone.
        assert!(bank.store.release_attempt(first, now.as_millisecond()).await.unwrap());
        let later = now + SignedDuration::from_millis(IDLE_RECHECK_MS + 1_000);
        let (again, code) = bank.lease(3, later).await.unwrap();
        assert_eq!(code, A);
        // A is found empty again (B's last member is served); then A's member comes
        // back while B has nobody: the claim still finds it at once, not "nobody".
        assert_eq!(seat(bank.lease(4, later).await).as_deref(), Some(B));
        assert!(bank.store.release_attempt(again, later.as_millisecond()).await.unwrap());
        assert_eq!(seat(bank.lease(5, later).await).as_deref(), Some(A));
    }

    async fn starting_a_long_list_queues_every_member_in_the_end(store) {
        // More than one enqueue chunk: what does not fit in the request's time is queued
        // in the background, and claims serve whoever is queued meanwhile.
        let c = long_list(&store, 12_000, A).await;
        store.set_campaign_status(c, CampaignStatus::Active).await.unwrap();
        assert_eq!(queued_in_the_end(&store, c, 12_000).await, 12_000);
    }

    async fn a_weight_change_applies_at_the_next_claim(store) {
        let bank = bank(store, 60, 1).await;
        bank.store.update_seat(A, &target(1)).await.unwrap();
        bank.store.update_seat(B, &target(1)).await.unwrap();
        for i in 0..10 {
            bank.claim(t0() + SignedDuration::from_secs(i)).await;
        }
        bank.store.update_seat(B, &target(9)).await.unwrap();
        let mut got = Vec::new();
        for i in 0..20 {
            got.push(bank.claim(t0() + SignedDuration::from_secs(100 + i)).await);
        }
        let t = tally(&got);
        assert_eq!((t.get(A), t.get(B)), (Some(&2), Some(&18)), "{t:?}");
    }
}

/// Two servers on one PostgreSQL database claim for one rate-limited seat at random
/// moments: together they admit exactly what one GCRA model admits, never more than
/// burst + elapsed / interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_seat_budget() {
    let Some((first, url)) = common::postgres_url().await else {
        return;
    };
    let second = Store::connect(Some(&url)).await.unwrap();
    let bank = bank(first, 250, 2).await;
    let (rate, burst) = (12, 4);
    bank.store
        .update_seat(
            A,
            &SeatPatch {
                rate_per_hour: Some(rate),
                burst: Some(burst),
                ..target(1)
            },
        )
        .await
        .unwrap();
    let limit = SeatLimit::new(Some(rate), Some(burst));
    let stores = [bank.store.clone(), second];
    let mut rng: u64 = 0x5eed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut now, mut tat, mut admitted) = (t0(), 0i64, Vec::new());
    for step in 0..300 {
        now += SignedDuration::from_secs((next() % 120) as i64);
        let which = (next() % 2) as usize;
        let got = bank.claim_on(&stores[which], which, now).await;
        let expect = limit.allows(tat, now.as_millisecond());
        if expect {
            tat = limit.next_tat(tat, now.as_millisecond());
        }
        assert_eq!(
            got.as_deref() == Some(A),
            expect,
            "step {step} at {now} on instance {which}"
        );
        if expect {
            admitted.push(now.as_millisecond());
        }
    }
    for (i, start) in admitted.iter().enumerate() {
        for (j, end) in admitted.iter().enumerate().skip(i) {
            assert!(((j - i + 1) as i64) <= burst + (end - start) / limit.interval_ms);
        }
    }
    assert!(
        admitted.len() > 20,
        "the test exercised the limit: {}",
        admitted.len()
    );
}
