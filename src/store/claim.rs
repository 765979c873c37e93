//! The claim: lease the next eligible member of a campaign to a volunteer, in one
//! transaction.
//!
//! Seats are served in the stride scheduler's order (`domain::targeting`): targets first
//! unless blended, then by next pass. The walk is in two phases, so a claim's cost does
//! not grow with the number of seats:
//!
//! 1. **Fast:** the first few seats in order, leaving out seats recently found with nobody
//!    eligible (`seat_schedule.idle_until`) and seats out of rate budget. Each is tried
//!    in turn for its best member; the budget is spent last (see `serve_seat`). A seat
//!    found empty is marked idle for [`IDLE_RECHECK_MS`].
//! 2. **Full:** only if the fast pages yield nobody, every seat with someone eligible
//!    (one index probe per seat), idle or not.
//!
//! So the claim answers "empty" only when nobody is eligible anywhere; the idle marks
//! change which seat is served first, and only for a seat that refills within
//! [`IDLE_RECHECK_MS`] of being found empty.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::calls::Attempt;
use super::{Backend, Store, StoreError, Tx, json_list_int};
use crate::domain::CallingHours;
use crate::domain::targeting::{STRIDE, SeatLimit, local_day, stride};

#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub campaign_id: i64,
    pub volunteer_id: i64,
    pub session_id: i64,
    pub hours: &'a CallingHours,
    pub now: Timestamp,
    /// How long the lease lasts without activity before the sweeper may take it back.
    pub lease_millis: i64,
    /// Which clock the per-seat rate limits use.
    pub rate_clock: RateClock,
}

/// The clock per-seat rate limits are measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateClock {
    /// The database's own clock on PostgreSQL (one clock for every instance); `now` on
    /// SQLite, where there is one process.
    Database,
    /// The request's `now` (tests and the simulator's manual clock).
    Request,
}

#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// A new lease, or the one this volunteer already held (a repeated "next").
    Claimed(Box<Attempt>),
    /// Nobody can be called now in any time zone the seats use.
    OutsideHours,
    /// The queue has nobody eligible right now.
    Empty,
}

/// Seats read per page of the fast phase.
const SEAT_PAGE: usize = 8;
/// Pages the fast phase reads before falling back to the full walk.
const FAST_PAGES: usize = 4;
/// How long a seat found with nobody eligible stays out of the fast phase.
pub const IDLE_RECHECK_MS: i64 = 30_000;
/// How long the list of the seats' time zones is reused. Seat changes made through this
/// store drop it at once; another instance's show up within this time.
const ZONES_TTL: Duration = Duration::from_secs(5);

/// The distinct time zones of the seats, cached: every claim needs them to know which
/// zones are inside calling hours, and they change only when seats are edited.
#[derive(Debug, Default)]
pub(crate) struct ZoneCache(Mutex<Option<(Instant, Arc<[String]>)>>);

impl ZoneCache {
    pub(crate) fn forget(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Store {
    /// The claim. Idempotent per volunteer: while they hold an open attempt, that attempt
    /// is returned and nothing new is leased.
    pub async fn claim(&self, req: &ClaimRequest<'_>) -> super::Result<ClaimOutcome> {
        // Which of the seats' time zones are inside calling hours right now (DST is the
        // zone's business: the instant is converted, not the clock time shifted).
        let zones = self.seat_zones().await?;
        let allowed: Vec<&String> = zones
            .iter()
            .filter(|z| req.hours.allows_in(req.now, z))
            .collect();
        let now = req.now.as_millisecond();
        // A lost race (the same volunteer twice, or two leases on one shared number on
        // PostgreSQL) is a unique violation: roll back and look again.
        for _ in 0..5 {
            if let Some(open) = self.open_attempt_for_volunteer(req.volunteer_id).await? {
                return Ok(ClaimOutcome::Claimed(Box::new(open)));
            }
            if allowed.is_empty() {
                return Ok(ClaimOutcome::OutsideHours);
            }
            match self.try_claim(req, &allowed, now).await {
                Ok(Some(id)) => {
                    return Ok(ClaimOutcome::Claimed(Box::new(self.attempt(id).await?)));
                }
                Ok(None) => return Ok(ClaimOutcome::Empty),
                Err(ClaimRace::Race) => continue,
                Err(ClaimRace::Failed(e)) => return Err(e),
            }
        }
        Err(StoreError::Conflict("claim_contention"))
    }

    async fn seat_zones(&self) -> super::Result<Arc<[String]>> {
        if let Some((at, zones)) = &*self.zones.0.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < ZONES_TTL
        {
            return Ok(zones.clone());
        }
        let zones: Vec<String> =
            sqlx::query_scalar("select distinct time_zone from seats order by time_zone")
                .fetch_all(&self.pool)
                .await?;
        let zones: Arc<[String]> = zones.into();
        *self.zones.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), zones.clone()));
        Ok(zones)
    }

    async fn try_claim(
        &self,
        req: &ClaimRequest<'_>,
        zones: &[&String],
        now: i64,
    ) -> Result<Option<i64>, ClaimRace> {
        let zones_json = serde_json::to_string(zones).map_err(|e| ClaimRace::Failed(e.into()))?;
        // Rate limits run on the database's clock on PostgreSQL, so instances with
        // skewed clocks still share one budget; a test's manual clock overrides it.
        let db_clock = self.backend == Backend::Postgres && req.rate_clock == RateClock::Database;
        let mut tx = self.begin_write().await?;
        let mut visited: Vec<i64> = Vec::new();
        let mut empty: Vec<i64> = Vec::new();
        let mut served = None;
        'phases: for phase in [Phase::Fast, Phase::Full] {
            let pages = match phase {
                Phase::Fast => FAST_PAGES,
                Phase::Full => 1,
            };
            for _ in 0..pages {
                let seats = sqlx::query(sqlx::AssertSqlSafe(self.seats_sql(phase)))
                    .bind(req.campaign_id)
                    .bind(&zones_json)
                    .bind(now)
                    .bind(if db_clock { -1 } else { now })
                    .bind(serde_json::to_string(&visited).map_err(|e| ClaimRace::Failed(e.into()))?)
                    .fetch_all(&mut *tx)
                    .await?;
                for row in &seats {
                    let seat = SeatRow::read(row)?;
                    visited.push(seat.seat_id);
                    match self.serve_seat(&mut tx, req, &seat, now).await? {
                        Served::Member(id) => {
                            served = Some((id, seat.pass));
                            break 'phases;
                        }
                        Served::Nobody => empty.push(seat.seat_id),
                        Served::Skipped => {}
                    }
                }
                if seats.len() < SEAT_PAGE {
                    break;
                }
            }
        }
        tx.commit().await?;
        self.mark_idle(req.campaign_id, &empty, now, served.map(|(_, pass)| pass))
            .await;
        Ok(served.map(|(id, _)| id))
    }

    /// Seats found empty drop out of the fast phase for a while, and move up to the
    /// served seat's pass so they rejoin at the current pass rather than heading the
    /// order until they have caught up. A hint: done after the claim commits, and on
    /// PostgreSQL only on rows no other claim holds, so it can never deadlock or wait.
    async fn mark_idle(&self, campaign_id: i64, seats: &[i64], now: i64, pass: Option<i64>) {
        if seats.is_empty() {
            return;
        }
        let Ok(ids) = serde_json::to_string(seats) else {
            return;
        };
        if let Err(e) = self.try_mark_idle(campaign_id, &ids, now, pass).await {
            tracing::debug!(error = %e, "marking idle seats skipped");
        }
    }

    /// Written after the claim's commit, and only on seats with nobody ready at write
    /// time, so a member released or queued since the walk looked keeps the seat awake.
    /// On PostgreSQL the rows are locked first (skipping any another claim holds) and
    /// checked in a later statement, whose snapshot sees every release committed before
    /// it; a release committed after it wakes the seat once this commits (its wake-up
    /// waits for the lock). SQLite's single writer orders the one statement with them.
    async fn try_mark_idle(
        &self,
        campaign_id: i64,
        ids: &str,
        now: i64,
        pass: Option<i64>,
    ) -> super::Result<()> {
        let mut tx = self.writer.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "select seat_id from seat_schedule where campaign_id = $1 \
                 and seat_id in ({}) for update skip locked",
                json_list_int(self.backend, "$2")
            )))
            .bind(campaign_id)
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?;
        }
        let lock = match self.backend {
            Backend::Postgres => " for update skip locked",
            Backend::Sqlite => "",
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "update seat_schedule set idle_until = $3, \
               pass = case when pass < $4 then $4 else pass end \
             where campaign_id = $1 and seat_id in ( \
               select seat_id from seat_schedule where campaign_id = $1 \
               and seat_id in ({}){lock}) \
             and not exists (select 1 from call_queue q where q.campaign_id = $1 \
               and q.seat_id = seat_schedule.seat_id and q.state = 'ready' and q.not_before <= $5)",
            json_list_int(self.backend, "$2")
        )))
        .bind(campaign_id)
        .bind(ids)
        .bind(now + IDLE_RECHECK_MS)
        .bind(pass.unwrap_or(i64::MIN))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The candidate seats, in serving order. Both phases leave out seats already looked
    /// at in this claim and seats out of rate budget (the same GCRA test as
    /// `SeatLimit::allows`, which is checked again on the row itself).
    fn seats_sql(&self, phase: Phase) -> String {
        let zone_list = match self.backend {
            Backend::Postgres => "select json_array_elements_text($2::json)",
            Backend::Sqlite => "select value from json_each($2)",
        };
        // $4 is the request's clock, or -1 for the database's.
        let rate_now = match self.backend {
            Backend::Postgres => {
                "(case when $4 >= 0 then $4 \
                 else cast(floor(extract(epoch from clock_timestamp()) * 1000) as bigint) end)"
            }
            Backend::Sqlite => "$4",
        };
        let (filter, limit) = match phase {
            Phase::Fast => (
                "ss.idle_until <= $3".to_owned(),
                format!(" limit {SEAT_PAGE}"),
            ),
            Phase::Full => (
                "exists (select 1 from call_queue q where q.campaign_id = $1 \
                   and q.seat_id = ss.seat_id and q.state = 'ready' and q.not_before <= $3)"
                    .to_owned(),
                String::new(),
            ),
        };
        format!(
            "select ss.seat_id, ss.pass, ss.tat, ss.day, ss.day_count, s.time_zone, s.weight, \
               s.rate_per_hour, s.burst, s.daily_cap, {rate_now} as rate_now \
             from seat_schedule ss join seats s on s.id = ss.seat_id \
             left join campaign_targeting t on t.campaign_id = ss.campaign_id \
             where ss.campaign_id = $1 and s.weight > 0 and s.time_zone in ({zone_list}) \
               and (s.is_target = 1 or coalesce(t.non_targets, 'fallback') <> 'exclude') \
               and ss.seat_id not in ({visited}) \
               and (coalesce(s.rate_per_hour, 0) <= 0 or ss.tat - (3600000 / nullif(s.rate_per_hour, 0)) \
                    * ((case when coalesce(s.burst, 1) > 1 then s.burst else 1 end) - 1) \
                    <= {rate_now}) \
               and {filter} \
             order by case when coalesce(t.non_targets, 'fallback') = 'blend' then 0 \
               else s.is_target end desc, ss.pass + {STRIDE} / s.weight, ss.seat_id{limit}",
            visited = json_list_int(self.backend, "$5"),
        )
    }

    /// Lease the seat's best member if the seat has budget; spend the budget with it.
    async fn serve_seat(
        &self,
        tx: &mut Tx,
        req: &ClaimRequest<'_>,
        seat: &SeatRow,
        now: i64,
    ) -> Result<Served, ClaimRace> {
        let rate_now = seat.rate_now;
        let today = local_day(
            Timestamp::from_millisecond(rate_now).unwrap_or(req.now),
            &seat.time_zone,
        );
        // Out of budget: skipped, not waited on. (The values may be a moment old on
        // PostgreSQL; the update below decides.)
        if !seat.limit.allows(seat.tat, rate_now)
            || seat
                .daily_cap
                .is_some_and(|c| seat.day == today && seat.day_count >= c)
        {
            return Ok(Served::Skipped);
        }
        // The budget is spent with an UPDATE whose WHERE re-checks it against the row as
        // any concurrent claim of the seat left it (it waits for that claim rather than
        // skipping to another seat, which would hand the seat's share to lighter seats
        // whenever volunteers claim at once), so racing claims and instances never
        // overspend. A seat with a limit spends as soon as it has a member: refused, the
        // walk moves on. A seat without one cannot be refused, so it spends last, and
        // its row stays locked (PostgreSQL) only for that statement and the commit.
        let limited = !seat.limit.is_unlimited() || seat.daily_cap.is_some();
        // The seat's best member. SKIP LOCKED on PostgreSQL: concurrent claims walk past
        // each other's rows; on SQLite the single writer is the lock. On PostgreSQL
        // `offset 0` keeps the shared-number check a per-row probe of
        // `call_queue_leased_phone_idx`: without it the planner made it an anti-join
        // reading every leased row of the campaign, dead versions included, at each
        // pick (EXPLAIN in BENCHMARKS.md).
        let (fence, lock) = match self.backend {
            Backend::Postgres => (" offset 0", " for update skip locked"),
            Backend::Sqlite => ("", ""),
        };
        let pick = format!(
            "select q.id, q.member_id from call_queue q \
             where q.campaign_id = $1 and q.seat_id = $2 and q.state = 'ready' \
               and q.not_before <= $3 \
               and not exists (select 1 from suppressions x where x.phone = q.phone) \
               and not exists (select 1 from call_queue o where o.campaign_id = q.campaign_id \
                               and o.phone = q.phone and o.state = 'leased'{fence}) \
             order by q.priority desc, q.not_before, q.id limit 1{lock}"
        );
        let member = sqlx::query(sqlx::AssertSqlSafe(pick))
            .bind(req.campaign_id)
            .bind(seat.seat_id)
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(member) = member else {
            return Ok(Served::Nobody);
        };
        if limited {
            // On PostgreSQL an UPDATE that waited for a concurrent claim and then found
            // the budget gone still leaves the row locked (READ COMMITTED locks the
            // newest version before re-checking it). Kept, this claim would hold that seat
            // while it waits for the next one, and two claims doing so crosswise
            // deadlock. A savepoint gives the lock back with the refusal.
            let pg = self.backend == Backend::Postgres;
            if pg {
                sqlx::query("savepoint spend").execute(&mut **tx).await?;
            }
            if !self.spend(tx, req, seat, today).await? {
                if pg {
                    sqlx::query("rollback to savepoint spend")
                        .execute(&mut **tx)
                        .await?;
                }
                return Ok(Served::Skipped);
            }
        }
        let queue_id: i64 = member.try_get("id")?;
        let member_id: i64 = member.try_get("member_id")?;
        let leased = sqlx::query(
            "update call_queue set state = 'leased', attempts = attempts + 1, updated_at = $2 \
             where id = $1 and state = 'ready'",
        )
        .bind(queue_id)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if leased != 1 {
            return Err(ClaimRace::Race);
        }
        let id: i64 = sqlx::query_scalar(
            "insert into contact_attempts (campaign_id, member_id, volunteer_id, seat_id, \
               state, lease_token, lease_expires_at, created_at, session_id, queue_id) \
             values ($1, $2, $3, $4, 'leased', $5, $6, $7, $8, $9) returning id",
        )
        .bind(req.campaign_id)
        .bind(member_id)
        .bind(req.volunteer_id)
        .bind(seat.seat_id)
        .bind(format!("{:032x}", rand::random::<u128>()))
        .bind(now + req.lease_millis)
        .bind(now)
        .bind(req.session_id)
        .bind(queue_id)
        .fetch_one(&mut **tx)
        .await?;
        if !limited && !self.spend(tx, req, seat, today).await? {
            // Cannot happen without a limit; kept as a fence.
            return Err(ClaimRace::Race);
        }
        Ok(Served::Member(id))
    }

    /// Spend one attempt of the seat's budget and advance its pass; false if the budget
    /// is gone. A seat served is not idle (the full walk may have found it so marked).
    async fn spend(
        &self,
        tx: &mut Tx,
        req: &ClaimRequest<'_>,
        seat: &SeatRow,
        today: i64,
    ) -> Result<bool, ClaimRace> {
        let spent = sqlx::query(
            "update seat_schedule set \
               tat = (case when tat > $3 then tat else $3 end) + $4, \
               pass = pass + $6, \
               day_count = case when day = $7 then day_count + 1 else 1 end, \
               day = $7, idle_until = 0 \
             where campaign_id = $1 and seat_id = $2 and ($4 = 0 or tat - $5 <= $3) \
               and ($8 < 0 or day <> $7 or day_count < $8)",
        )
        .bind(req.campaign_id)
        .bind(seat.seat_id)
        .bind(seat.rate_now)
        .bind(seat.limit.interval_ms)
        .bind(seat.limit.tolerance_ms)
        .bind(stride(seat.weight))
        .bind(today)
        .bind(seat.daily_cap.unwrap_or(-1))
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(spent == 1)
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Fast,
    Full,
}

enum Served {
    Member(i64),
    /// Nobody eligible in the seat right now.
    Nobody,
    /// Out of budget, or being served by another claim.
    Skipped,
}

/// A candidate seat as the walk read it.
struct SeatRow {
    seat_id: i64,
    pass: i64,
    tat: i64,
    day: i64,
    day_count: i64,
    time_zone: String,
    weight: i64,
    daily_cap: Option<i64>,
    limit: SeatLimit,
    rate_now: i64,
}

impl SeatRow {
    fn read(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            seat_id: row.try_get("seat_id")?,
            pass: row.try_get("pass")?,
            tat: row.try_get("tat")?,
            day: row.try_get("day")?,
            day_count: row.try_get("day_count")?,
            time_zone: row.try_get("time_zone")?,
            weight: row.try_get("weight")?,
            daily_cap: row.try_get("daily_cap")?,
            limit: SeatLimit::new(row.try_get("rate_per_hour")?, row.try_get("burst")?),
            rate_now: row.try_get("rate_now")?,
        })
    }
}

pub(crate) enum ClaimRace {
    Race,
    Failed(StoreError),
}

impl From<sqlx::Error> for ClaimRace {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => Self::Race,
            _ => Self::Failed(e.into()),
        }
    }
}

impl From<StoreError> for ClaimRace {
    fn from(e: StoreError) -> Self {
        Self::Failed(e)
    }
}
