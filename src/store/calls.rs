//! The call queue and contact attempts: enqueueing a campaign's members, the claim, and
//! every transition of an attempt until its outcome is saved.
//!
//! Guarantees live in the schema as much as in this code: one open attempt per member
//! per campaign and one per volunteer (partial unique indexes on `contact_attempts`),
//! never two live leases on one number (`call_queue_leased_phone_idx`). Every transition
//! is fenced on the state it expects, so a duplicated or late webhook changes nothing.

use jiff::Timestamp;
use sqlx::Row;
use sqlx::any::AnyRow;

pub use super::claim::{ClaimOutcome, ClaimRequest, RateClock};
use super::{Backend, Result, Store, StoreError, Tx};
use crate::domain::{CallingHours, Disposition, PhoneNumber, RetryPolicy};

/// Attempt states. Open ones hold the member (and the volunteer) until they end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// Claimed; the volunteer has heard who is next but nothing is dialled yet.
    Leased,
    /// The member is being dialled or is on the line.
    Dialling,
    /// The member leg has ended; the volunteer is keying the outcome.
    Answered,
    /// The volunteer vanished while the member leg may still be live: waits for the
    /// member leg's final status instead of going straight back to the queue.
    Reconcile,
    Completed,
    /// Given back before anything was dialled.
    Released,
}

impl AttemptState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "leased" => Self::Leased,
            "dialling" => Self::Dialling,
            "answered" => Self::Answered,
            "reconcile" => Self::Reconcile,
            "completed" => Self::Completed,
            "released" => Self::Released,
            _ => return None,
        })
    }

    pub fn is_open(self) -> bool {
        matches!(
            self,
            Self::Leased | Self::Dialling | Self::Answered | Self::Reconcile
        )
    }
}

/// An attempt with what the volunteer loop needs to talk about it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: i64,
    pub campaign_id: i64,
    pub member_id: i64,
    pub volunteer_id: Option<i64>,
    pub session_id: Option<i64>,
    pub state: AttemptState,
    pub disposition: Option<String>,
    /// Answers keyed so far, in order: (question code, option code).
    pub keyed: Vec<(String, String)>,
    pub dial_status: Option<String>,
    pub member_status: Option<String>,
    pub dial_seconds: Option<i64>,
    pub member_name: String,
    pub seat_name: String,
    /// The member's number: for `<Number>` only, never spoken.
    pub phone: PhoneNumber,
}

/// How an attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    /// `None`: the member was reached and the survey ended.
    pub disposition: Option<Disposition>,
    /// The member asked never to be contacted again.
    pub opt_out: bool,
}

const ATTEMPT_SELECT: &str = "select a.id, a.campaign_id, a.member_id, a.volunteer_id, \
     a.session_id, a.state, a.disposition, a.keyed, a.dial_status, a.member_status, \
     a.dial_seconds, m.name as member_name, m.phone, s.name as seat_name \
     from contact_attempts a join members m on m.id = a.member_id \
     join seats s on s.id = a.seat_id";

fn attempt_from_row(r: &AnyRow) -> Result<Attempt> {
    let state: String = r.try_get("state")?;
    let keyed: String = r.try_get("keyed")?;
    let phone: String = r.try_get("phone")?;
    Ok(Attempt {
        id: r.try_get("id")?,
        campaign_id: r.try_get("campaign_id")?,
        member_id: r.try_get("member_id")?,
        volunteer_id: r.try_get("volunteer_id")?,
        session_id: r.try_get("session_id")?,
        state: AttemptState::parse(&state)
            .ok_or_else(|| anyhow::anyhow!("unknown attempt state {state:?}"))?,
        disposition: r.try_get("disposition")?,
        keyed: serde_json::from_str(&keyed)?,
        dial_status: r.try_get("dial_status")?,
        member_status: r.try_get("member_status")?,
        dial_seconds: r.try_get("dial_seconds")?,
        member_name: r.try_get("member_name")?,
        seat_name: r.try_get("seat_name")?,
        phone: PhoneNumber::from_e164(&phone)
            .map_err(|e| anyhow::anyhow!("stored member number is invalid: {e}"))?,
    })
}

/// Final dial results of the member leg, from `DialCallStatus` or the leg's callbacks.
fn status_rank(status: &str) -> u8 {
    match status {
        "queued" => 1,
        "initiated" => 2,
        "ringing" => 3,
        "in-progress" | "answered" => 4,
        // completed, busy, no-answer, failed, canceled and anything unknown are final
        _ => 5,
    }
}

pub fn is_final_status(status: &str) -> bool {
    status_rank(status) == 5
}

/// Brings queue rows' copies of their member (number, seat, time zone, opt-out state)
/// up to date; `$2` is now. The caller adds which rows.
pub(crate) const REFRESH_QUEUE_COPIES: &str = "update call_queue set \
       phone = (select m.phone from members m where m.id = call_queue.member_id), \
       seat_id = (select m.seat_id from members m where m.id = call_queue.member_id), \
       time_zone = (select s.time_zone from members m join seats s on s.id = m.seat_id \
                    where m.id = call_queue.member_id), \
       state = case when exists (select 1 from members m join suppressions x \
                                 on x.phone = m.phone where m.id = call_queue.member_id) \
                    then 'suppressed' else 'ready' end, \
       updated_at = $2";

/// Members queued per transaction.
const ENQUEUE_CHUNK: i64 = 5_000;
/// How long starting a campaign spends filling its queue before it answers.
pub const ENQUEUE_IN_REQUEST: std::time::Duration = std::time::Duration::from_secs(2);

impl Store {
    /// Put every member not yet queued for this campaign into its queue. Suppressed
    /// numbers go in as `suppressed`, so a later re-opt-in brings them back. Cheap to
    /// repeat: members already queued are skipped by the unique key.
    pub async fn enqueue_campaign(&self, campaign_id: i64, now: i64) -> Result<u64> {
        self.enqueue_from(campaign_id, now, None).await
    }

    /// Start a campaign's queue within a request: see [`Store::start_queues`].
    pub async fn start_queue(&self, campaign_id: i64, now: i64) -> Result<()> {
        match self.start_queues(&[campaign_id], now, true).await.pop() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// After a member import through the API: [`Store::start_queues`] for every active
    /// campaign. A campaign whose fill fails (deleted meanwhile, say) is logged and
    /// skipped: the members are imported, and the other campaigns still get them.
    pub async fn start_active_queues(&self, now: i64) -> Result<()> {
        let ids: Vec<i64> = sqlx::query_scalar("select id from campaigns where status = 'active'")
            .fetch_all(&self.pool)
            .await?;
        for (campaign_id, e) in self.start_queues(&ids, now, false).await {
            tracing::warn!(campaign_id, error = %e, "queueing the new members failed");
        }
        Ok(())
    }

    /// Fill these campaigns' queues in background tasks, and wait for them for up to
    /// [`ENQUEUE_IN_REQUEST`] in all (with `first_chunks`, always for each one's first
    /// chunk, so a small campaign is queued in full when a start answers). The tasks
    /// carry on when the wait ends, or when the request that started them is cancelled;
    /// claims serve whoever is queued meanwhile. Should the process stop first, the next
    /// `serve` finishes the job ([`Store::enqueue_active_campaigns`] is cheap to
    /// repeat). Returns the fills that failed within the wait.
    pub async fn start_queues(
        &self,
        campaign_ids: &[i64],
        now: i64,
        first_chunks: bool,
    ) -> Vec<(i64, StoreError)> {
        let deadline = tokio::time::Instant::now() + ENQUEUE_IN_REQUEST;
        let fills: Vec<_> = campaign_ids
            .iter()
            .map(|&campaign_id| {
                let store = self.clone();
                let (first, first_done) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(async move {
                    let filled = store.enqueue_from(campaign_id, now, Some(first)).await;
                    match &filled {
                        Ok(queued) => tracing::info!(campaign_id, queued, "queue filled"),
                        Err(StoreError::NotFound) => {
                            tracing::info!(campaign_id, "campaign deleted while its queue filled")
                        }
                        Err(e) => tracing::error!(
                            campaign_id, error = %e,
                            "filling the queue failed; the next start of the server resumes it"
                        ),
                    }
                    filled
                });
                (campaign_id, first_done, task)
            })
            .collect();
        let mut failed = Vec::new();
        for (campaign_id, first_done, task) in fills {
            if first_chunks {
                let _ = first_done.await;
            }
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => failed.push((campaign_id, e)),
                Ok(Err(join)) => failed.push((campaign_id, StoreError::Other(join.into()))),
                Err(_) => tracing::info!(
                    campaign_id,
                    "queue still filling, continuing in the background"
                ),
            }
        }
        failed
    }

    /// Queue every member not yet queued, a chunk per transaction; `first` hears when
    /// the first chunk is in. Returns how many were added; `NotFound` if the campaign
    /// was deleted on the way.
    async fn enqueue_from(
        &self,
        campaign_id: i64,
        now: i64,
        mut first: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<u64> {
        let max_id: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from members")
            .fetch_one(&self.pool)
            .await?;
        let mut tx = self.begin_write().await?;
        if super::targeting::targeting_in(&mut tx, self.backend, campaign_id)
            .await?
            .is_none()
        {
            return Err(StoreError::NotFound);
        }
        super::targeting::ensure_schedule(&mut tx, campaign_id).await?;
        tx.commit().await?;
        // A chunk of members per transaction: on SQLite a write transaction holds the
        // one write lock, and live webhooks must not wait behind a million-row insert.
        let mut added = 0;
        let mut lo = 0;
        while lo < max_id {
            let hi = lo + ENQUEUE_CHUNK;
            let mut tx = self.begin_write().await?;
            // Read inside the chunk's transaction: a targeting change made during the
            // fill applies to the chunks after it.
            let Some(targeting) =
                super::targeting::targeting_in(&mut tx, self.backend, campaign_id).await?
            else {
                return Err(StoreError::NotFound);
            };
            added += sqlx::query(
                "insert into call_queue (campaign_id, member_id, seat_id, phone, time_zone, \
                   priority, state, queued_at, updated_at) \
                 select $1, m.id, m.seat_id, m.phone, s.time_zone, 0, \
                   case when exists (select 1 from suppressions x where x.phone = m.phone) \
                        then 'suppressed' else 'ready' end, $2, $2 \
                 from members m join seats s on s.id = m.seat_id \
                 where m.id > $3 and m.id <= $4 and not exists (select 1 from call_queue q \
                                   where q.campaign_id = $1 and q.member_id = m.id) \
                 on conflict (campaign_id, member_id) do nothing",
            )
            .bind(campaign_id)
            .bind(now)
            .bind(lo)
            .bind(hi)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // A re-import may have changed a queued member's number or seat: the queue's
            // copies follow (and the opt-out state of the new number), so suppression and
            // shared-number checks always see the real number.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "{REFRESH_QUEUE_COPIES} \
                 where campaign_id = $1 and member_id > $3 and member_id <= $4 \
                   and state in ('ready', 'suppressed') and exists ( \
                   select 1 from members m where m.id = call_queue.member_id \
                   and (m.phone <> call_queue.phone or m.seat_id <> call_queue.seat_id))",
            )))
            .bind(campaign_id)
            .bind(now)
            .bind(lo)
            .bind(hi)
            .execute(&mut *tx)
            .await?;
            super::targeting::apply_priorities(
                &mut tx,
                self.backend,
                campaign_id,
                &targeting,
                false,
                Some((lo, hi)),
            )
            .await?;
            tx.commit().await?;
            if self.backend == Backend::Postgres {
                self.settle_opt_outs(campaign_id, now, lo, hi).await?;
            }
            lo = hi;
            if let Some(first) = first.take() {
                self.wake_seats(campaign_id).await?;
                let _ = first.send(());
            }
        }
        self.wake_seats(campaign_id).await?;
        Ok(added)
    }

    /// On PostgreSQL an opt-out (or re-opt-in) that commits while a chunk is being
    /// queued misses the chunk's rows, and the chunk read the list before it: after the
    /// commit, rows whose state disagrees with the list follow it. Rows another
    /// transaction holds are skipped (never waited for, so no deadlock): the holder is
    /// the opt-out setting them, or a claim or a finish, which re-check the list.
    async fn settle_opt_outs(&self, campaign_id: i64, now: i64, lo: i64, hi: i64) -> Result<()> {
        sqlx::query(
            "update call_queue set updated_at = $2, \
               state = case when state = 'ready' then 'suppressed' else 'ready' end \
             where id in (select id from call_queue q where q.campaign_id = $1 \
               and q.member_id > $3 and q.member_id <= $4 and q.state in ('ready', 'suppressed') \
               and (q.state = 'ready') = exists (select 1 from suppressions x where x.phone = q.phone) \
               for update skip locked)",
        )
        .bind(campaign_id)
        .bind(now)
        .bind(lo)
        .bind(hi)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Seats the claim marked idle may have members now (`src/store/claim.rs`).
    async fn wake_seats(&self, campaign_id: i64) -> Result<()> {
        sqlx::query(
            "update seat_schedule set idle_until = 0 where campaign_id = $1 and idle_until > 0",
        )
        .bind(campaign_id)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// After a member import: queue the new members in every active campaign, before
    /// returning (a command that exits afterwards must not leave the job half done).
    pub async fn enqueue_active_campaigns(&self, now: i64) -> Result<u64> {
        let ids: Vec<i64> = sqlx::query_scalar("select id from campaigns where status = 'active'")
            .fetch_all(&self.pool)
            .await?;
        let mut total = 0;
        for id in ids {
            match self.enqueue_campaign(id, now).await {
                Ok(added) => total += added,
                // Deleted since the list was read: nothing to queue.
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    pub async fn attempt(&self, id: i64) -> Result<Attempt> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{ATTEMPT_SELECT} where a.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        attempt_from_row(&row)
    }

    /// The attempt this volunteer holds open, if any.
    pub async fn open_attempt_for_volunteer(&self, volunteer_id: i64) -> Result<Option<Attempt>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{ATTEMPT_SELECT} where a.volunteer_id = $1 \
             and a.state in ('leased', 'dialling', 'answered')"
        )))
        .bind(volunteer_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(attempt_from_row).transpose()
    }

    /// The volunteer pressed the key to dial. Fenced on `leased`: a repeated request
    /// never dials twice. The opt-out list and calling hours are checked again here,
    /// because either may have changed since the claim.
    pub async fn start_dial(
        &self,
        attempt_id: i64,
        hours: &CallingHours,
        now: Timestamp,
        lease_millis: i64,
    ) -> Result<DialDecision> {
        let mut tx = self.begin_write().await?;
        // Locked on PostgreSQL, so the sweeper (or a duplicate request) cannot release
        // or start the attempt between this read and the update below.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select a.state, m.phone, s.time_zone from contact_attempts a \
             join members m on m.id = a.member_id join seats s on s.id = a.seat_id \
             where a.id = $1{}",
            self.lock_rows("a")
        )))
        .bind(attempt_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let state: String = row.try_get("state")?;
        if state != "leased" {
            return Ok(DialDecision::AlreadyStarted);
        }
        let phone: String = row.try_get("phone")?;
        let number = PhoneNumber::from_e164(&phone)
            .map_err(|e| anyhow::anyhow!("stored member number is invalid: {e}"))?;
        let zone: String = row.try_get("time_zone")?;
        let suppressed: i64 =
            sqlx::query_scalar("select count(*) from suppressions where phone = $1")
                .bind(&phone)
                .fetch_one(&mut *tx)
                .await?;
        let in_hours = hours.allows_in(now, &zone);
        // One live call per number, checked on the member's own number: the queue's copy
        // (which the claim's check and `call_queue_leased_phone_idx` use) trails a
        // re-import until the queue catches up. On PostgreSQL two dials to one number
        // take turns through this check on a lock of the number's own (a transaction
        // lock, not a row lock: an import updating those members cannot deadlock it).
        if self.backend == Backend::Postgres {
            sqlx::query("select pg_advisory_xact_lock(hashtext($1))")
                .bind(&phone)
                .execute(&mut *tx)
                .await?;
        }
        let busy: i64 = sqlx::query_scalar(
            "select count(*) from contact_attempts a join members m on m.id = a.member_id \
             where m.phone = $1 and a.state in ('dialling', 'answered', 'reconcile') \
             and a.id <> $2",
        )
        .bind(&phone)
        .bind(attempt_id)
        .fetch_one(&mut *tx)
        .await?;
        if busy > 0 {
            release_in(&mut tx, attempt_id, now.as_millisecond()).await?;
            // Back in the queue with the number it really has now.
            sqlx::query(
                "update call_queue set phone = $2 \
                 where id = (select queue_id from contact_attempts where id = $1) and state = 'ready'",
            )
            .bind(attempt_id)
            .bind(&phone)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(DialDecision::NumberBusy);
        }
        if suppressed > 0 || !in_hours {
            release_in(&mut tx, attempt_id, now.as_millisecond()).await?;
            if suppressed > 0 {
                sqlx::query(
                    "update call_queue set state = 'suppressed' \
                     where id = (select queue_id from contact_attempts where id = $1)",
                )
                .bind(attempt_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok(if suppressed > 0 {
                DialDecision::OptedOut
            } else {
                DialDecision::OutsideHours
            });
        }
        let started = sqlx::query(
            "update contact_attempts set state = 'dialling', lease_expires_at = $2 \
             where id = $1 and state = 'leased'",
        )
        .bind(attempt_id)
        .bind(now.as_millisecond() + lease_millis)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        // Only the request that moved the attempt to `dialling` may dial.
        Ok(if started == 1 {
            DialDecision::Dial(number)
        } else {
            DialDecision::AlreadyStarted
        })
    }

    /// The `<Dial action>` arrived: the member leg is over. Moves `dialling` to
    /// `answered` (the volunteer now keys the outcome). Returns false for a duplicate.
    pub async fn record_dial_result(
        &self,
        attempt_id: i64,
        dial_status: &str,
        dial_call_sid: Option<&str>,
        seconds: Option<i64>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "update contact_attempts set state = 'answered', dial_status = $2, \
               member_call_sid = coalesce(member_call_sid, $3), dial_seconds = $4 \
             where id = $1 and state = 'dialling'",
        )
        .bind(attempt_id)
        .bind(dial_status)
        .bind(dial_call_sid)
        .bind(seconds)
        .execute(&self.writer)
        .await;
        self.durable().await?;
        match done {
            Ok(d) => Ok(d.rows_affected() == 1),
            // Another attempt already claims that child CallSid: a forged or confused
            // request. Record the status without it.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                let done = sqlx::query(
                    "update contact_attempts set state = 'answered', dial_status = $2, \
                       dial_seconds = $3 where id = $1 and state = 'dialling'",
                )
                .bind(attempt_id)
                .bind(dial_status)
                .bind(seconds)
                .execute(&self.writer)
                .await?
                .rows_affected();
                self.durable().await?;
                Ok(done == 1)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A status callback for the member leg. Deduplicated by (CallSid, status,
    /// sequence); a final status never regresses to an earlier one. Returns whether it
    /// changed anything.
    pub async fn record_member_status(
        &self,
        attempt_id: i64,
        call_sid: &str,
        status: &str,
        sequence: Option<i64>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let key = format!("member:{call_sid}:{status}:{}", sequence.unwrap_or(-1));
        if !first_time(&mut tx, &key, now).await? {
            tx.commit().await?;
            return Ok(false);
        }
        // Locked on PostgreSQL: two callbacks at once must rank against each other.
        let current: Option<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select member_status from contact_attempts where id = $1{}",
            self.lock_rows("contact_attempts")
        )))
        .bind(attempt_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(current) = current else {
            tx.commit().await?;
            return Ok(false);
        };
        let advances = current
            .as_deref()
            .is_none_or(|c| status_rank(status) > status_rank(c));
        if advances {
            sqlx::query(
                "update contact_attempts set member_status = $2, member_seq = $3, \
                   member_call_sid = coalesce(member_call_sid, $4) where id = $1",
            )
            .bind(attempt_id)
            .bind(status)
            .bind(sequence)
            .bind(call_sid)
            .execute(&mut *tx)
            .await
            .or_else(|e| match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => Ok(Default::default()),
                _ => Err(e),
            })?;
        }
        tx.commit().await?;
        Ok(advances)
    }

    /// Replace the keyed answers, fenced on how many there were: a duplicated keypad
    /// webhook (same count) cannot apply twice. Returns false if the fence failed.
    pub async fn set_keyed(
        &self,
        attempt_id: i64,
        expected: &[(String, String)],
        keyed: &[(String, String)],
    ) -> Result<bool> {
        let done = sqlx::query(
            "update contact_attempts set keyed = $3 \
             where id = $1 and keyed = $2 and state = 'answered'",
        )
        .bind(attempt_id)
        .bind(serde_json::to_string(expected)?)
        .bind(serde_json::to_string(keyed)?)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }

    /// End an attempt: store the keyed answers (once, by attempt and question), set
    /// the disposition, and put the member back in the queue or take them out of it by
    /// the retry policy. An opt-out suppresses the number everywhere in the same
    /// transaction. Returns false if the attempt had already ended.
    pub async fn finish_attempt(
        &self,
        attempt_id: i64,
        finish: Finish,
        policy: &RetryPolicy,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let applied = finish_in(&mut tx, self.backend, attempt_id, finish, policy, now).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Give a lease back before anything was dialled (the volunteer ended the session
    /// or hung up). The member keeps their place; the attempt does not count.
    pub async fn release_attempt(&self, attempt_id: i64, now: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let released = release_in(&mut tx, attempt_id, now).await?;
        tx.commit().await?;
        if released {
            // The member is claimable again at once, and the claim may have marked the
            // seat idle meanwhile (src/store/claim.rs). A hint, so a failure is only
            // logged: the seat is looked at again within IDLE_RECHECK_MS regardless.
            let woken = sqlx::query(
                "update seat_schedule set idle_until = 0 where idle_until > 0 \
                 and campaign_id = (select campaign_id from contact_attempts where id = $1) \
                 and seat_id = (select seat_id from contact_attempts where id = $1)",
            )
            .bind(attempt_id)
            .execute(&self.writer)
            .await;
            if let Err(e) = woken {
                tracing::warn!(attempt_id, error = %e, "could not wake a seat after a release");
            }
        }
        Ok(released)
    }

    /// The volunteer's call ended. Whatever they held is settled: an undialled lease is
    /// released; keyed answers are saved; an attempt whose member leg may still be live
    /// waits in `reconcile` for the leg's final status.
    pub async fn settle_volunteer_hangup(
        &self,
        session_id: i64,
        policy_of: impl Fn(i64) -> Option<RetryPolicy>,
        now: i64,
    ) -> Result<()> {
        // A step racing the hang-up (the dial action, a key press) can move an attempt
        // on between the read and the fenced update: read again until nothing is open.
        for _ in 0..5 {
            let open: Vec<(i64, i64, String, String, Option<String>)> = sqlx::query_as(
                "select id, campaign_id, state, keyed, member_status from contact_attempts \
                 where session_id = $1 and state in ('leased', 'dialling', 'answered')",
            )
            .bind(session_id)
            .fetch_all(&self.pool)
            .await?;
            if open.is_empty() {
                break;
            }
            for (id, campaign_id, state, keyed, member_status) in open {
                self.settle_one(
                    id,
                    &state,
                    &keyed,
                    member_status.as_deref(),
                    || policy_of(campaign_id).unwrap_or_default(),
                    now,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn settle_one(
        &self,
        id: i64,
        state: &str,
        keyed: &str,
        member_status: Option<&str>,
        policy: impl FnOnce() -> RetryPolicy,
        now: i64,
    ) -> Result<()> {
        match state {
            "leased" => {
                self.release_attempt(id, now).await?;
            }
            "dialling" if member_status.is_none_or(|s| !is_final_status(s)) => {
                sqlx::query(
                    "update contact_attempts set state = 'reconcile' \
                     where id = $1 and state = 'dialling'",
                )
                .bind(id)
                .execute(&self.writer)
                .await?;
                self.durable().await?;
            }
            _ => {
                // Member leg over. Answers keyed so far are kept; with none, try again
                // later as if they had asked for a call back.
                let finish = Finish {
                    disposition: if keyed == "[]" {
                        Some(dial_disposition(member_status).unwrap_or(Disposition::CallBackLater))
                    } else {
                        None
                    },
                    opt_out: false,
                };
                self.finish_attempt(id, finish, &policy(), now).await?;
            }
        }
        Ok(())
    }

    /// A key the volunteer pressed just before hanging up, delivered after the hang-up
    /// settled the attempt: the answer to the next question (`keyed_before` answers were
    /// stored when the prompt was made). Stored once; a member finished without answers
    /// now counts as surveyed. Returns false when it does not fit (stale or repeated).
    pub async fn late_answer(
        &self,
        attempt_id: i64,
        keyed_before: usize,
        question: &str,
        option: &str,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select state, keyed, campaign_id, member_id, queue_id, disposition \
             from contact_attempts where id = $1{}",
            self.lock_rows("contact_attempts")
        )))
        .bind(attempt_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let state: String = row.try_get("state")?;
        let mut keyed: Vec<(String, String)> =
            serde_json::from_str(&row.try_get::<String, _>("keyed")?)?;
        if state != "completed" || keyed.len() != keyed_before {
            tx.commit().await?;
            return Ok(false);
        }
        let stored = sqlx::query(
            "insert into answers (campaign_id, member_id, attempt_id, question_code, \
               option_code, source, dedupe_key, created_at) \
             values ($1, $2, $3, $4, $5, 'keypad', $6, $7) on conflict (dedupe_key) do nothing",
        )
        .bind(row.try_get::<i64, _>("campaign_id")?)
        .bind(row.try_get::<i64, _>("member_id")?)
        .bind(attempt_id)
        .bind(question)
        .bind(option)
        .bind(format!("attempt:{attempt_id}:{question}"))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if stored {
            keyed.push((question.to_owned(), option.to_owned()));
            sqlx::query("update contact_attempts set keyed = $2, disposition = null where id = $1")
                .bind(attempt_id)
                .bind(serde_json::to_string(&keyed)?)
                .execute(&mut *tx)
                .await?;
            if row.try_get::<Option<String>, _>("disposition")?.is_some() {
                sqlx::query(
                    "update call_queue set state = 'done', updated_at = $2 \
                     where id = $1 and state = 'ready'",
                )
                .bind(row.try_get::<i64, _>("queue_id")?)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The opt-out key for an attempt that has already ended (the hang-up was handled
    /// first). An opt-out is absolute whenever it arrives: the member's number is
    /// suppressed everywhere. Returns false if the attempt is unknown or still open.
    pub async fn late_opt_out(&self, attempt_id: i64, now: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "select a.state, a.queue_id, m.phone from contact_attempts a \
             join members m on m.id = a.member_id where a.id = $1",
        )
        .bind(attempt_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        if AttemptState::parse(&row.try_get::<String, _>("state")?)
            .is_none_or(AttemptState::is_open)
        {
            tx.commit().await?;
            return Ok(false);
        }
        let phone = PhoneNumber::from_e164(&row.try_get::<String, _>("phone")?)
            .map_err(|e| anyhow::anyhow!("stored member number is invalid: {e}"))?;
        super::suppressions::suppress_in(
            &mut tx,
            &phone,
            "asked not to be contacted (keyed by volunteer)",
            "keypad",
            &format!("attempt {attempt_id}"),
            now,
        )
        .await?;
        sqlx::query(
            "update call_queue set state = 'suppressed', updated_at = $2 \
             where id = $1 and state in ('ready', 'done')",
        )
        .bind(row.try_get::<i64, _>("queue_id")?)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// ` for update` on PostgreSQL (row lock for the rest of the transaction); nothing
    /// on SQLite, where `BEGIN IMMEDIATE` already made this the only writer.
    fn lock_rows(&self, table: &str) -> String {
        lock_rows(self.backend, table)
    }

    /// Housekeeping, run periodically by every instance (safe concurrently):
    /// leases idle past their expiry are released; `reconcile` attempts are finished once
    /// the member leg's final status is known, or after an hour without one. A member
    /// who may have picked up to silence is not rung again for 72 hours.
    pub async fn sweep_attempts(
        &self,
        policy_of: impl Fn(i64) -> Option<RetryPolicy>,
        now: i64,
    ) -> Result<u64> {
        let mut settled = 0;
        let expired: Vec<i64> = sqlx::query_scalar(
            "select id from contact_attempts where state = 'leased' and lease_expires_at < $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        for id in expired {
            settled += u64::from(self.release_attempt(id, now).await?);
        }
        // A dialling attempt whose lease ran out lost its volunteer without telling us.
        sqlx::query(
            "update contact_attempts set state = 'reconcile' \
             where state in ('dialling', 'answered') and lease_expires_at < $1",
        )
        .bind(now)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        let reconcile: Vec<(i64, i64, Option<String>, i64, String)> = sqlx::query_as(
            "select id, campaign_id, member_status, coalesce(lease_expires_at, 0), keyed \
             from contact_attempts where state = 'reconcile'",
        )
        .fetch_all(&self.pool)
        .await?;
        for (id, campaign_id, member_status, expires, keyed) in reconcile {
            let policy = policy_of(campaign_id).unwrap_or_default();
            let final_status = member_status.as_deref().filter(|s| is_final_status(s));
            let stale = expires + 3_600_000 < now;
            if final_status.is_none() && !stale {
                continue;
            }
            let mut tx = self.begin_write().await?;
            let disposition = if keyed != "[]" {
                None
            } else {
                Some(dial_disposition(final_status).unwrap_or(Disposition::CallBackLater))
            };
            let applied = finish_in(
                &mut tx,
                self.backend,
                id,
                Finish {
                    disposition,
                    opt_out: false,
                },
                &policy,
                now,
            )
            .await?;
            // Connected (or unknown) with nobody keying: possibly an abandoned call.
            if applied && disposition == Some(Disposition::CallBackLater) {
                sqlx::query(
                    "update call_queue set not_before = $2 \
                     where id = (select queue_id from contact_attempts where id = $1) \
                       and state = 'ready'",
                )
                .bind(id)
                .bind(now + 72 * 3_600_000)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            settled += u64::from(applied);
        }
        Ok(settled)
    }

    /// Keep a lease alive while the volunteer is active.
    pub async fn touch_attempt(&self, attempt_id: i64, until: i64) -> Result<()> {
        sqlx::query(
            "update contact_attempts set lease_expires_at = $2 \
             where id = $1 and state in ('leased', 'dialling', 'answered')",
        )
        .bind(attempt_id)
        .bind(until)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// Has this provider event key been recorded?
    pub async fn was_provider_event(&self, key: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query_scalar("select count(*) from provider_events where dedupe_key = $1")
                .bind(key)
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    /// Record a provider event key; false if it was seen before.
    pub async fn first_provider_event(&self, key: &str, now: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let first = first_time(&mut tx, key, now).await?;
        tx.commit().await?;
        Ok(first)
    }
}

/// The disposition a member leg's final status implies, when it implies one.
pub fn dial_disposition(status: Option<&str>) -> Option<Disposition> {
    match status? {
        "no-answer" => Some(Disposition::NoAnswer),
        "busy" => Some(Disposition::Busy),
        "failed" | "canceled" => Some(Disposition::TechnicalProblem),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialDecision {
    /// Dial this number: the member's number as checked here, which a re-import may
    /// have changed since the attempt was read.
    Dial(PhoneNumber),
    /// The member's number is on another live call (a household line, or a number a
    /// re-import gave to this member mid-claim); the lease was released.
    NumberBusy,
    /// Dialling already started (a repeated request): do not dial again.
    AlreadyStarted,
    /// The number was suppressed since the claim; the lease was released.
    OptedOut,
    /// Calling hours ended since the claim; the lease was released.
    OutsideHours,
}

fn lock_rows(backend: Backend, table: &str) -> String {
    match backend {
        Backend::Postgres => format!(" for update of {table}"),
        Backend::Sqlite => String::new(),
    }
}

async fn first_time(tx: &mut Tx, key: &str, now: i64) -> Result<bool> {
    Ok(sqlx::query(
        "insert into provider_events (dedupe_key, created_at) values ($1, $2) \
         on conflict (dedupe_key) do nothing",
    )
    .bind(key)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

async fn release_in(tx: &mut Tx, attempt_id: i64, now: i64) -> Result<bool> {
    let released = sqlx::query(
        "update contact_attempts set state = 'released', ended_at = $2 \
         where id = $1 and state = 'leased'",
    )
    .bind(attempt_id)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if released {
        sqlx::query(
            "update call_queue set state = 'ready', attempts = attempts - 1, updated_at = $2 \
             where id = (select queue_id from contact_attempts where id = $1) \
               and state = 'leased'",
        )
        .bind(attempt_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(released)
}

async fn finish_in(
    tx: &mut Tx,
    backend: Backend,
    attempt_id: i64,
    finish: Finish,
    policy: &RetryPolicy,
    now: i64,
) -> Result<bool> {
    // The member's own number, as dialled (the queue's copy can be stale after a
    // re-import changed it mid-call). Locked on PostgreSQL against a racing hang-up.
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select a.state, a.keyed, a.campaign_id, a.member_id, a.queue_id, q.attempts, m.phone \
         from contact_attempts a join call_queue q on q.id = a.queue_id \
         join members m on m.id = a.member_id where a.id = $1{}",
        lock_rows(backend, "a")
    )))
    .bind(attempt_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    let state: String = row.try_get("state")?;
    if !AttemptState::parse(&state).is_some_and(AttemptState::is_open) {
        return Ok(false);
    }
    let keyed: Vec<(String, String)> = serde_json::from_str(&row.try_get::<String, _>("keyed")?)?;
    let campaign_id: i64 = row.try_get("campaign_id")?;
    let member_id: i64 = row.try_get("member_id")?;
    let queue_id: i64 = row.try_get("queue_id")?;
    let attempts: i64 = row.try_get("attempts")?;
    let phone: String = row.try_get("phone")?;

    sqlx::query(
        "update contact_attempts set state = 'completed', disposition = $2, ended_at = $3 \
         where id = $1 and state = $4",
    )
    .bind(attempt_id)
    .bind(finish.disposition.map(Disposition::as_str))
    .bind(now)
    .bind(&state)
    .execute(&mut **tx)
    .await?;
    for (question, option) in &keyed {
        sqlx::query(
            "insert into answers (campaign_id, member_id, attempt_id, question_code, \
               option_code, source, dedupe_key, created_at) \
             values ($1, $2, $3, $4, $5, 'keypad', $6, $7) on conflict (dedupe_key) do nothing",
        )
        .bind(campaign_id)
        .bind(member_id)
        .bind(attempt_id)
        .bind(question)
        .bind(option)
        .bind(format!("attempt:{attempt_id}:{question}"))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }

    let (next_state, not_before) = if finish.opt_out {
        ("suppressed", 0)
    } else {
        match finish.disposition {
            None => ("done", 0),
            Some(d) => {
                let rule = policy.rule(d);
                let cap = i64::from(rule.max_attempts.min(policy.max_attempts));
                if attempts >= cap {
                    ("done", 0)
                } else {
                    ("ready", now + i64::from(rule.gap_minutes) * 60_000)
                }
            }
        }
    };
    sqlx::query(
        "update call_queue set state = $2, not_before = $3, updated_at = $4 \
         where id = $1 and state = 'leased'",
    )
    .bind(queue_id)
    .bind(next_state)
    .bind(not_before)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if finish.opt_out {
        let phone = PhoneNumber::from_e164(&phone)
            .map_err(|e| anyhow::anyhow!("stored member number is invalid: {e}"))?;
        super::suppressions::suppress_in(
            tx,
            &phone,
            "asked not to be contacted (keyed by volunteer)",
            "keypad",
            &format!("attempt {attempt_id}"),
            now,
        )
        .await?;
    }
    Ok(true)
}
