//! A phone bank for claim tests: four seats of members, an active campaign and
//! volunteers with open sessions, driven through the store's claim with a controlled
//! clock.

use std::collections::HashMap;

use super::app::campaign_body;
use super::{import_members_str, load_seats};
use jiff::Timestamp;
use phonebank::domain::targeting::{NonTargets, Targeting};
use phonebank::domain::{CallingHours, CampaignStatus, PhoneNumber, RetryPolicy};
use phonebank::store::Store;
use phonebank::store::calls::{ClaimOutcome, ClaimRequest, Finish, RateClock};
use phonebank::store::campaigns::CampaignSpec;
use phonebank::store::seats::SeatPatch;

/// Hendon, Finchley, Chipping Barnet; Bristol Central is never a target here.
pub const A: &str = "E14001279";
pub const B: &str = "E14001238";
pub const C: &str = "E14001169";
pub const D: &str = "E14001131";

pub fn t0() -> Timestamp {
    "2026-12-08T11:00:00Z".parse().unwrap()
}

/// `per_seat` members in each of A, B, C and D (`membership` alternating full and
/// supporter), an active campaign, and `volunteers` volunteers with open sessions.
pub struct Bank {
    pub store: Store,
    pub campaign_id: i64,
    pub volunteers: Vec<(i64, i64)>,
    pub hours: CallingHours,
    pub policy: RetryPolicy,
}

pub async fn bank(store: Store, per_seat: usize, volunteers: usize) -> Bank {
    load_seats(&store).await;
    let blocks = ["+447700900", "+442079460", "+441174960", "+441214960"];
    let mut csv = String::from("member_id,name,phone,constituency,membership\n");
    for (s, code) in [A, B, C, D].iter().enumerate() {
        for i in 0..per_seat {
            let kind = if i % 2 == 0 { "supporter" } else { "full" };
            csv.push_str(&format!(
                "M{s}{i:04},Member {s}-{i},{}{i:03},{code},{kind}\n",
                blocks[s]
            ));
        }
    }
    let report = import_members_str(&store, &csv).await;
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let c = store.create_campaign(&spec("Targets")).await.unwrap();
    store
        .set_campaign_status(c.id, CampaignStatus::Active)
        .await
        .unwrap();
    let mut vs = Vec::new();
    for i in 0..volunteers {
        let phone = PhoneNumber::from_e164(&format!("+44113496{i:04}")).unwrap();
        let v = store
            .create_volunteer(&format!("V{i}"), &phone, None, "x")
            .await
            .unwrap();
        let s = store
            .open_session(
                &format!("CA{i:032}"),
                phone.as_e164(),
                v.id,
                None,
                t0().as_millisecond(),
            )
            .await
            .unwrap();
        vs.push((v.id, s.id));
    }
    Bank {
        store,
        campaign_id: c.id,
        volunteers: vs,
        hours: CallingHours::default(),
        policy: RetryPolicy::default(),
    }
}

pub fn target(weight: i64) -> SeatPatch {
    SeatPatch {
        is_target: Some(true),
        weight: Some(weight),
        ..SeatPatch::default()
    }
}

impl Bank {
    /// Volunteer `v`'s claim at `now`, with a ten-minute lease.
    pub fn request(&self, v: usize, now: Timestamp) -> ClaimRequest<'_> {
        let (volunteer_id, session_id) = self.volunteers[v];
        ClaimRequest {
            campaign_id: self.campaign_id,
            volunteer_id,
            session_id,
            hours: &self.hours,
            now,
            lease_millis: 600_000,
            rate_clock: RateClock::Request,
        }
    }

    /// One claim by volunteer `v` at `now` through `store`, finished at once. The seat
    /// code claimed, or `None` when nobody is claimable.
    pub async fn claim_on(&self, store: &Store, v: usize, now: Timestamp) -> Option<String> {
        let req = self.request(v, now);
        let attempt = match store.claim(&req).await.unwrap() {
            ClaimOutcome::Claimed(a) => a,
            ClaimOutcome::Empty => return None,
            ClaimOutcome::OutsideHours => panic!("outside hours at {now}"),
        };
        store
            .finish_attempt(
                attempt.id,
                Finish {
                    disposition: None,
                    opt_out: false,
                },
                &self.policy,
                now.as_millisecond(),
            )
            .await
            .unwrap();
        let code: String = sqlx::query_scalar(
            "select s.code from contact_attempts a join seats s on s.id = a.seat_id where a.id = $1",
        )
        .bind(attempt.id)
        .fetch_one(store.pool())
        .await
        .unwrap();
        Some(code)
    }

    /// A claim by volunteer `v` at `now`, left open: the attempt and its seat code.
    pub async fn lease(&self, v: usize, now: Timestamp) -> Option<(i64, String)> {
        let req = self.request(v, now);
        let ClaimOutcome::Claimed(attempt) = self.store.claim(&req).await.unwrap() else {
            return None;
        };
        let code: String = sqlx::query_scalar(
            "select s.code from contact_attempts a join seats s on s.id = a.seat_id where a.id = $1",
        )
        .bind(attempt.id)
        .fetch_one(self.store.pool())
        .await
        .unwrap();
        Some((attempt.id, code))
    }

    pub async fn claim(&self, now: Timestamp) -> Option<String> {
        self.claim_on(&self.store, 0, now).await
    }

    pub async fn targeting(&self, non_targets: NonTargets) {
        self.store
            .set_targeting(
                self.campaign_id,
                &Targeting {
                    non_targets,
                    ..Targeting::default()
                },
            )
            .await
            .unwrap();
    }
}

pub fn tally(codes: &[Option<String>]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for c in codes.iter().flatten() {
        *m.entry(c.clone()).or_default() += 1;
    }
    m
}

/// A campaign with the test script and default hours and retries.
pub fn spec(name: &str) -> CampaignSpec {
    CampaignSpec {
        name: name.into(),
        caller_number: PhoneNumber::from_e164("+442079460999").unwrap(),
        script: serde_json::from_value(campaign_body("x")["script"].clone()).unwrap(),
        calling_hours: CallingHours::default(),
        retry_policy: RetryPolicy::default(),
    }
}

/// The seats, `n` members in seat `seat` (ids `M00000`.., on 1,000 numbers), and a
/// campaign not yet started: a list longer than one enqueue chunk.
pub async fn long_list(store: &Store, n: usize, seat: &str) -> i64 {
    load_seats(store).await;
    import_members_str(store, &members_in(0..n, seat)).await;
    store.create_campaign(&spec("Long list")).await.unwrap().id
}

/// A member file of ids `M{i:05}` for `ids`, all in `seat`.
pub fn members_in(ids: std::ops::Range<usize>, seat: &str) -> String {
    let mut csv = String::from("member_id,name,phone,constituency\n");
    for i in ids {
        csv.push_str(&format!(
            "M{i:05},Member {i},+447700900{:03},{seat}\n",
            i % 1000
        ));
    }
    csv
}

/// Rows in the campaign's queue.
pub async fn queued(store: &Store, campaign_id: i64) -> i64 {
    sqlx::query_scalar("select count(*) from call_queue where campaign_id = $1")
        .bind(campaign_id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Waits up to two minutes for the queue to reach `n` rows (a background fill), then for
/// any straggler: the count it settles at.
pub async fn queued_in_the_end(store: &Store, campaign_id: i64, n: i64) -> i64 {
    for _ in 0..600 {
        if queued(store, campaign_id).await >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    queued(store, campaign_id).await
}

/// Queue rows whose copy of the member's number or seat is out of date.
pub async fn stale_queue_copies(store: &Store, campaign_id: i64) -> i64 {
    sqlx::query_scalar(
        "select count(*) from call_queue q join members m on m.id = q.member_id \
         where q.campaign_id = $1 and (q.seat_id <> m.seat_id or q.phone <> m.phone)",
    )
    .bind(campaign_id)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Numbers on more than one live lease in the campaign's queue (must be 0).
pub async fn numbers_leased_twice(store: &Store, campaign_id: i64) -> i64 {
    sqlx::query_scalar(
        "select count(*) from (select phone from call_queue where campaign_id = $1 \
         and state = 'leased' group by phone having count(*) > 1) d",
    )
    .bind(campaign_id)
    .fetch_one(store.pool())
    .await
    .unwrap()
}
