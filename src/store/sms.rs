//! Survey texts: the outbox the sender works through, numbers that cannot take a text,
//! inbound replies (answers and the organiser review queue) and delivery statuses.
//!
//! The guarantees are in the schema: one outbox row per (campaign, member, question), so
//! a member is never texted twice for one question however often an organiser asks; one
//! reply row per MessageSid and one answer per reply (`answers.dedupe_key`), so a
//! redelivered webhook stores nothing twice. A row is sent by whoever moved it
//! `queued -> sending` (one statement, `FOR UPDATE SKIP LOCKED` on PostgreSQL, the single
//! writer on SQLite), and a `sending` row is never handed out again: if its worker dies it
//! becomes `uncertain`, not `queued`.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{Backend, Result, Store, StoreError, json_list_int};

/// Who a send goes to.
#[derive(Debug, Clone)]
pub enum Audience {
    /// Every member who has not answered the question yet.
    All,
    /// Members of one seat (ONS code).
    Seat(String),
    /// Members tried by phone at least this many times with no answer recorded.
    Unreached { min_attempts: i64 },
    /// These members (external ids).
    Members(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct NewSend<'a> {
    pub campaign_id: i64,
    pub question_code: &'a str,
    pub body: &'a str,
    pub segments: i64,
    pub audience: &'a Audience,
    pub now: i64,
}

/// What a send request added to the outbox.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SendReport {
    /// New texts waiting for the sender.
    pub queued: i64,
    /// Members of the audience who were already in the outbox for this question (never
    /// texted twice).
    pub already_queued: i64,
    /// Left out now: the number is on the suppression list.
    pub skipped_suppressed: i64,
    /// Left out now: the provider said the number cannot take texts.
    pub skipped_bad_number: i64,
    /// Left out: another member on the same number gets the text (one per number).
    pub skipped_shared_number: i64,
}

/// A text leased to a worker.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub campaign_id: i64,
    pub member_id: i64,
    pub phone: String,
    pub time_zone: String,
    pub body: String,
    pub attempts: i64,
}

/// Counts per state and reason for one campaign's texts.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct OutboxSummary {
    pub queued: i64,
    pub sending: i64,
    pub sent: i64,
    pub skipped: i64,
    pub failed: i64,
    /// The provider may or may not have the text (timeout, 5xx, worker lost): never
    /// resent automatically; settled if the provider reports on it.
    pub uncertain: i64,
    /// Answers that came back by text.
    pub answered: i64,
    /// Segments of the texts handed to the provider.
    pub segments_sent: i64,
    /// `state:reason` -> count, e.g. `skipped:suppressed`, `failed:unsubscribed`.
    #[schema(value_type = Object)]
    pub reasons: std::collections::BTreeMap<String, i64>,
    /// Latest delivery status -> count, from status callbacks.
    #[schema(value_type = Object)]
    pub delivery: std::collections::BTreeMap<String, i64>,
}

/// A member the reply might be from, for the organiser.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Candidate {
    pub member_id: String,
    pub name: String,
}

/// An inbound text an organiser must look at.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewItem {
    pub id: i64,
    /// `ambiguous`, `unrecognised`, `unknown_number`, `shared_number`, `no_open_survey`.
    pub reason: String,
    /// `open`, `resolved` or `dismissed`.
    pub state: String,
    pub body: String,
    #[schema(example = "+447700900123")]
    pub from: String,
    pub to: String,
    pub campaign_id: Option<i64>,
    pub question_code: Option<String>,
    /// Members on the sending number.
    pub candidates: Vec<Candidate>,
    pub received_at: i64,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub note: Option<String>,
    /// The member the reply is attached to (their open survey, or the organiser's
    /// choice when resolved) and the option recorded.
    pub member_id: Option<String>,
    pub option_code: Option<String>,
}

/// An open survey a reply can answer.
#[derive(Debug, Clone)]
pub struct OpenSurvey {
    pub outbox_id: i64,
    pub campaign_id: i64,
    pub member_id: i64,
    pub question_code: String,
}

/// An inbound reply as the webhook saw it.
#[derive(Debug, Clone)]
pub struct Reply<'a> {
    pub message_sid: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub body: &'a str,
    pub now: i64,
}

/// A member's reply was a review item or an answer; `Duplicate` when the MessageSid was
/// stored before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    Duplicate,
}

/// Rank of a message status: a status callback only moves forward (a late `sent` never
/// overwrites `delivered`). Unknown statuses rank lowest.
pub fn delivery_rank(status: &str) -> i64 {
    match status {
        "accepted" | "scheduled" => 1,
        "queued" => 2,
        "sending" => 3,
        "sent" => 4,
        "delivered" | "undelivered" | "failed" | "canceled" | "partially_delivered" => 5,
        "read" => 6,
        _ => 0,
    }
}

fn json_list(backend: Backend, param: &str) -> String {
    match backend {
        Backend::Sqlite => format!("select value from json_each({param})"),
        Backend::Postgres => format!("select json_array_elements_text({param}::json)"),
    }
}

impl Store {
    /// Queue a question's text for an audience. Members already queued for the question
    /// are left alone (the unique key), members who answered it are left out; suppressed
    /// and known-bad numbers go in as `skipped` so the organiser sees why; on a shared
    /// number only the first member (by id) is texted.
    pub async fn queue_texts(&self, send: &NewSend<'_>) -> Result<SendReport> {
        let (filter, bind): (String, Option<AudienceBind>) = match send.audience {
            Audience::All => ("1 = 1".into(), None),
            Audience::Seat(code) => ("s.code = $6".into(), Some(AudienceBind::Text(code.clone()))),
            Audience::Unreached { min_attempts } => (
                "exists (select 1 from call_queue q where q.campaign_id = $1 \
                   and q.member_id = m.id and q.attempts >= $6) \
                 and not exists (select 1 from answers a where a.campaign_id = $1 \
                   and a.member_id = m.id)"
                    .into(),
                Some(AudienceBind::Int(*min_attempts)),
            ),
            Audience::Members(ids) => (
                format!("m.external_id in ({})", json_list(self.backend, "$6")),
                Some(AudienceBind::Text(serde_json::to_string(ids)?)),
            ),
        };
        let audience_sql = format!(
            "from members m join seats s on s.id = m.seat_id \
             where {filter} \
               and not exists (select 1 from answers a where a.campaign_id = $1 \
                               and a.member_id = m.id and a.question_code = $2)"
        );
        let mut tx = self.begin_write().await?;
        let audience_size: i64 = {
            let q = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "select count(*) {}",
                audience_sql.replace("$6", "$3")
            )))
            .bind(send.campaign_id)
            .bind(send.question_code);
            match &bind {
                Some(AudienceBind::Text(t)) => q.bind(t.clone()),
                Some(AudienceBind::Int(i)) => q.bind(*i),
                None => q,
            }
            .fetch_one(&mut *tx)
            .await?
        };
        let sql = format!(
            "insert into sms_outbox (campaign_id, member_id, question_code, phone, time_zone, \
               body, segments, state, reason, created_at, updated_at) \
             select $1, m.id, $2, m.phone, s.time_zone, $3, $4, \
               case when exists (select 1 from suppressions x where x.phone = m.phone) \
                      or exists (select 1 from sms_bad_numbers b where b.phone = m.phone) \
                      or exists (select 1 from members o where o.phone = m.phone and o.id < m.id) \
                    then 'skipped' else 'queued' end, \
               case when exists (select 1 from suppressions x where x.phone = m.phone) \
                      then 'suppressed' \
                    when exists (select 1 from sms_bad_numbers b where b.phone = m.phone) \
                      then 'bad_number' \
                    when exists (select 1 from members o where o.phone = m.phone and o.id < m.id) \
                      then 'shared_number' end, \
               $5, $5 \
             {audience_sql} \
             on conflict (campaign_id, member_id, question_code) do nothing"
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(send.campaign_id)
            .bind(send.question_code)
            .bind(send.body)
            .bind(send.segments)
            .bind(send.now);
        let inserted = match &bind {
            Some(AudienceBind::Text(t)) => q.bind(t.clone()),
            Some(AudienceBind::Int(i)) => q.bind(*i),
            None => q,
        }
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
        let rows = sqlx::query(
            "select state, coalesce(reason, '') as reason, count(*) as n from sms_outbox \
             where campaign_id = $1 and question_code = $2 and created_at = $3 \
             group by state, reason",
        )
        .bind(send.campaign_id)
        .bind(send.question_code)
        .bind(send.now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut report = SendReport {
            already_queued: (audience_size - inserted).max(0),
            ..SendReport::default()
        };
        for r in rows {
            let state: String = r.try_get("state")?;
            let reason: String = r.try_get("reason")?;
            let n: i64 = r.try_get("n")?;
            match (state.as_str(), reason.as_str()) {
                ("queued", _) => report.queued += n,
                (_, "suppressed") => report.skipped_suppressed += n,
                (_, "bad_number") => report.skipped_bad_number += n,
                (_, "shared_number") => report.skipped_shared_number += n,
                _ => {}
            }
        }
        Ok(report)
    }

    /// Campaigns with texts due now, and the time zones those texts wait in.
    pub async fn due_text_zones(&self, now: i64) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "select distinct o.campaign_id, o.time_zone from sms_outbox o \
             join campaigns c on c.id = o.campaign_id \
             where o.state = 'queued' and o.not_before <= $1 and c.status = 'active' \
             order by o.campaign_id, o.time_zone",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("campaign_id")?, r.try_get("time_zone")?)))
            .collect()
    }

    /// Lease up to `limit` due texts of a campaign in the given time zones to the caller,
    /// oldest first. Nobody else can take them; they are sent at most once.
    pub async fn claim_texts(
        &self,
        campaign_id: i64,
        zones: &[String],
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<OutboxItem>> {
        if zones.is_empty() || limit <= 0 {
            return Ok(Vec::new());
        }
        let lock = match self.backend {
            Backend::Postgres => "for update skip locked",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "update sms_outbox set state = 'sending', lease_until = $4, \
               attempts = attempts + 1, updated_at = $3 \
             where id in (select id from sms_outbox \
                          where campaign_id = $1 and state = 'queued' and not_before <= $3 \
                            and time_zone in ({zones}) \
                          order by id limit $5 {lock}) \
             returning id, campaign_id, member_id, phone, time_zone, body, attempts",
            zones = json_list(self.backend, "$2"),
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(serde_json::to_string(zones)?)
            .bind(now)
            .bind(lease_until)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut items: Vec<OutboxItem> = rows
            .iter()
            .map(|r: &AnyRow| {
                Ok(OutboxItem {
                    id: r.try_get("id")?,
                    campaign_id: r.try_get("campaign_id")?,
                    member_id: r.try_get("member_id")?,
                    phone: r.try_get("phone")?,
                    time_zone: r.try_get("time_zone")?,
                    body: r.try_get("body")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect::<Result<_>>()?;
        items.sort_by_key(|i| i.id);
        Ok(items)
    }

    /// Give leased texts back untouched (the pacer ran out, or the provider is busy).
    pub async fn release_texts(&self, ids: &[i64], now: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "update sms_outbox set state = 'queued', lease_until = null, \
               attempts = attempts - 1, updated_at = $2 \
             where state = 'sending' and id in ({})",
            json_list_int(self.backend, "$1")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(serde_json::to_string(ids)?)
            .bind(now)
            .execute(&self.writer)
            .await?;
        self.durable().await?;
        Ok(())
    }

    /// The provider accepted the text.
    pub async fn text_sent(
        &self,
        id: i64,
        sid: &str,
        status: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let status = status.unwrap_or("queued");
        sqlx::query(
            "update sms_outbox set state = 'sent', message_sid = $2, sent_at = $3, \
               lease_until = null, reason = null, updated_at = $3, \
               delivery_status = case when delivery_rank < $5 then $4 else delivery_status end, \
               delivery_rank = case when delivery_rank < $5 then $5 else delivery_rank end \
             where id = $1 and state in ('sending', 'uncertain')",
        )
        .bind(id)
        .bind(sid)
        .bind(now)
        .bind(status)
        .bind(delivery_rank(status))
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// Settle a leased text without sending it: `skipped` (never attempted), `failed`
    /// (the provider refused) or `uncertain` (the provider may have it).
    pub async fn text_settled(
        &self,
        id: i64,
        state: &str,
        reason: &str,
        code: Option<i64>,
        message: Option<&str>,
        now: i64,
    ) -> Result<()> {
        debug_assert!(matches!(state, "skipped" | "failed" | "uncertain"));
        sqlx::query(
            "update sms_outbox set state = $2, reason = $3, error_code = $4, \
               error_message = $5, lease_until = null, updated_at = $6 \
             where id = $1 and state = 'sending'",
        )
        .bind(id)
        .bind(state)
        .bind(reason)
        .bind(code)
        .bind(message)
        .bind(now)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// Back into the queue after a retry-safe failure (429), not before `not_before`.
    pub async fn text_retry_later(
        &self,
        id: i64,
        not_before: i64,
        message: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "update sms_outbox set state = 'queued', not_before = $2, error_message = $3, \
               lease_until = null, updated_at = $4 \
             where id = $1 and state = 'sending'",
        )
        .bind(id)
        .bind(not_before)
        .bind(message)
        .bind(now)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// Housekeeping before each pass: texts whose worker vanished mid-send become
    /// `uncertain` (they may have gone out; never resent), and texts of finished
    /// campaigns are skipped. Returns how many leases were taken back.
    pub async fn sweep_texts(&self, now: i64) -> Result<u64> {
        let lost = sqlx::query(
            "update sms_outbox set state = 'uncertain', reason = 'worker_lost', \
               lease_until = null, updated_at = $1 \
             where state = 'sending' and lease_until < $1",
        )
        .bind(now)
        .execute(&self.writer)
        .await?
        .rows_affected();
        self.durable().await?;
        sqlx::query(
            "update sms_outbox set state = 'skipped', reason = 'campaign_finished', \
               updated_at = $1 \
             where state = 'queued' and campaign_id in \
               (select id from campaigns where status = 'finished')",
        )
        .bind(now)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(lost)
    }

    pub async fn is_suppressed(&self, phone: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("select count(*) from suppressions where phone = $1")
            .bind(phone)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    pub async fn is_bad_number(&self, phone: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("select count(*) from sms_bad_numbers where phone = $1")
            .bind(phone)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// The provider says this number cannot take texts; later sends skip it.
    pub async fn mark_bad_number(
        &self,
        phone: &str,
        code: Option<i64>,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "insert into sms_bad_numbers (phone, code, reason, created_at) \
             values ($1, $2, $3, $4) on conflict (phone) do nothing",
        )
        .bind(phone)
        .bind(code)
        .bind(reason)
        .bind(now)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// A status callback. The outbox id comes from the callback URL, so a text whose
    /// create answer was lost (`uncertain`) is adopted when the provider reports on it.
    /// The status only ever moves up in rank. Returns whether anything changed.
    pub async fn apply_text_status(
        &self,
        outbox_id: Option<i64>,
        sid: &str,
        status: &str,
        error_code: Option<i64>,
        now: i64,
    ) -> Result<bool> {
        let rank = delivery_rank(status);
        let mut tx = self.begin_write().await?;
        let id: Option<i64> =
            sqlx::query_scalar("select id from sms_outbox where message_sid = $1")
                .bind(sid)
                .fetch_optional(&mut *tx)
                .await?;
        let id = match (id, outbox_id) {
            (Some(id), _) => id,
            (None, Some(o)) => {
                // The create answer never reached us (or not yet): adopt the sid.
                let adopted = sqlx::query(
                    "update sms_outbox set message_sid = $2, state = 'sent', \
                       sent_at = coalesce(sent_at, $3), reason = null, lease_until = null, \
                       updated_at = $3 \
                     where id = $1 and message_sid is null and state in ('sending', 'uncertain')",
                )
                .bind(o)
                .bind(sid)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if adopted == 0 {
                    return Ok(false);
                }
                o
            }
            (None, None) => return Ok(false),
        };
        let changed = sqlx::query(
            "update sms_outbox set delivery_status = $2, delivery_rank = $3, \
               error_code = coalesce($4, error_code), updated_at = $5 \
             where id = $1 and delivery_rank < $3",
        )
        .bind(id)
        .bind(status)
        .bind(rank)
        .bind(error_code)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// The phone number of an outbox row (for marking a bad number from a callback).
    pub async fn text_phone(&self, sid: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("select phone from sms_outbox where message_sid = $1")
                .bind(sid)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn text_summary(&self, campaign_id: i64) -> Result<OutboxSummary> {
        let rows = sqlx::query(
            "select state, coalesce(reason, '') as reason, \
               coalesce(delivery_status, '') as delivery, count(*) as n, \
               cast(sum(case when answered_at is not null then 1 else 0 end) as bigint) as answered, \
               cast(sum(case when state = 'sent' then segments else 0 end) as bigint) as segs \
             from sms_outbox where campaign_id = $1 group by state, reason, delivery_status",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        let mut s = OutboxSummary::default();
        for r in rows {
            let state: String = r.try_get("state")?;
            let reason: String = r.try_get("reason")?;
            let delivery: String = r.try_get("delivery")?;
            let n: i64 = r.try_get("n")?;
            s.answered += r.try_get::<i64, _>("answered")?;
            s.segments_sent += r.try_get::<i64, _>("segs")?;
            match state.as_str() {
                "queued" => s.queued += n,
                "sending" => s.sending += n,
                "sent" => s.sent += n,
                "skipped" => s.skipped += n,
                "failed" => s.failed += n,
                "uncertain" => s.uncertain += n,
                _ => {}
            }
            if !reason.is_empty() {
                *s.reasons.entry(format!("{state}:{reason}")).or_default() += n;
            }
            if !delivery.is_empty() {
                *s.delivery.entry(delivery).or_default() += n;
            }
        }
        Ok(s)
    }

    // ---- replies -------------------------------------------------------------------

    /// Members on a number (id, external id, name), up to a few.
    pub async fn members_on(&self, phone: &str) -> Result<Vec<(i64, Candidate)>> {
        let rows = sqlx::query(
            "select id, external_id, name from members where phone = $1 order by id limit 10",
        )
        .bind(phone)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    Candidate {
                        member_id: r.try_get("external_id")?,
                        name: r.try_get("name")?,
                    },
                ))
            })
            .collect()
    }

    /// The most recent unanswered text to this number from this campaign number, sent
    /// since `since`.
    pub async fn open_survey(
        &self,
        phone: &str,
        campaign_number: &str,
        since: i64,
    ) -> Result<Option<OpenSurvey>> {
        let row = sqlx::query(
            "select o.id, o.campaign_id, o.member_id, o.question_code from sms_outbox o \
             join campaigns c on c.id = o.campaign_id \
             where o.phone = $1 and c.caller_number = $2 and o.state = 'sent' \
               and o.answered_at is null and o.sent_at >= $3 \
             order by o.sent_at desc, o.id desc limit 1",
        )
        .bind(phone)
        .bind(campaign_number)
        .bind(since)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(OpenSurvey {
                outbox_id: r.try_get("id")?,
                campaign_id: r.try_get("campaign_id")?,
                member_id: r.try_get("member_id")?,
                question_code: r.try_get("question_code")?,
            })
        })
        .transpose()
    }

    /// The campaign a number belongs to, for review context: the active one, else the
    /// most recent.
    pub async fn campaign_by_number(&self, number: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "select id from campaigns where caller_number = $1 \
             order by case when status = 'active' then 0 else 1 end, id desc limit 1",
        )
        .bind(number)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Store an answer texted back: the reply row, the answer (once per MessageSid) and
    /// the survey marked answered, in one transaction.
    pub async fn record_text_answer(
        &self,
        reply: &Reply<'_>,
        survey: &OpenSurvey,
        option_code: &str,
    ) -> Result<Stored> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "insert into sms_replies (message_sid, from_phone, to_phone, body, campaign_id, \
               member_id, outbox_id, question_code, option_code, outcome, created_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'answered', $10) \
             on conflict (message_sid) do nothing",
        )
        .bind(reply.message_sid)
        .bind(reply.from)
        .bind(reply.to)
        .bind(reply.body)
        .bind(survey.campaign_id)
        .bind(survey.member_id)
        .bind(survey.outbox_id)
        .bind(&survey.question_code)
        .bind(option_code)
        .bind(reply.now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(Stored::Duplicate);
        }
        sqlx::query(
            "insert into answers (campaign_id, member_id, question_code, option_code, source, \
               dedupe_key, created_at) values ($1, $2, $3, $4, 'sms', $5, $6) \
             on conflict (dedupe_key) do nothing",
        )
        .bind(survey.campaign_id)
        .bind(survey.member_id)
        .bind(&survey.question_code)
        .bind(option_code)
        .bind(format!("sms:{}", reply.message_sid))
        .bind(reply.now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "update sms_outbox set answered_at = $2, updated_at = $2 \
             where id = $1 and answered_at is null",
        )
        .bind(survey.outbox_id)
        .bind(reply.now)
        .execute(&mut *tx)
        .await?;
        // An unclear reply to this survey that the member has now cleared up.
        sqlx::query(
            "update sms_replies set review_state = 'dismissed', resolved_by = 'system', \
               resolved_at = $2, resolution_note = 'answered by a later text' \
             where outbox_id = $1 and outcome = 'review' and review_state = 'open'",
        )
        .bind(survey.outbox_id)
        .bind(reply.now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Stored::New)
    }

    /// Keep a reply for an organiser to look at.
    pub async fn record_text_for_review(
        &self,
        reply: &Reply<'_>,
        reason: &str,
        campaign_id: Option<i64>,
        survey: Option<&OpenSurvey>,
    ) -> Result<Stored> {
        let inserted = sqlx::query(
            "insert into sms_replies (message_sid, from_phone, to_phone, body, campaign_id, \
               member_id, outbox_id, question_code, outcome, review_reason, review_state, \
               created_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, 'review', $9, 'open', $10) \
             on conflict (message_sid) do nothing",
        )
        .bind(reply.message_sid)
        .bind(reply.from)
        .bind(reply.to)
        .bind(reply.body)
        .bind(survey.map(|s| s.campaign_id).or(campaign_id))
        .bind(survey.map(|s| s.member_id))
        .bind(survey.map(|s| s.outbox_id))
        .bind(survey.map(|s| s.question_code.clone()))
        .bind(reason)
        .bind(reply.now)
        .execute(&self.writer)
        .await?
        .rows_affected();
        self.durable().await?;
        Ok(if inserted == 1 {
            Stored::New
        } else {
            Stored::Duplicate
        })
    }

    /// Review items, oldest first, after `after` (an id; for paging).
    pub async fn list_reviews(
        &self,
        state: &str,
        campaign_id: Option<i64>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ReviewItem>> {
        let rows = sqlx::query(
            "select r.id, r.review_reason, r.review_state, r.body, r.from_phone, r.to_phone, \
               r.campaign_id, r.question_code, r.created_at, r.resolved_by, r.resolved_at, \
               r.resolution_note, r.option_code, m.external_id \
             from sms_replies r left join members m on m.id = r.member_id \
             where r.outcome = 'review' and r.review_state = $1 and r.id > $2 \
               and ($3 = 0 or r.campaign_id = $3) \
             order by r.id limit $4",
        )
        .bind(state)
        .bind(after)
        .bind(campaign_id.unwrap_or(0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let from: String = r.try_get("from_phone")?;
            let state: String = r.try_get("review_state")?;
            out.push(ReviewItem {
                id: r.try_get("id")?,
                reason: r.try_get("review_reason")?,
                candidates: self
                    .members_on(&from)
                    .await?
                    .into_iter()
                    .map(|(_, c)| c)
                    .collect(),
                state,
                body: r.try_get("body")?,
                from,
                to: r.try_get("to_phone")?,
                campaign_id: r.try_get("campaign_id")?,
                question_code: r.try_get("question_code")?,
                received_at: r.try_get("created_at")?,
                resolved_by: r.try_get("resolved_by")?,
                resolved_at: r.try_get("resolved_at")?,
                note: r.try_get("resolution_note")?,
                member_id: r.try_get("external_id")?,
                option_code: r.try_get("option_code")?,
            });
        }
        Ok(out)
    }

    pub async fn review(&self, id: i64) -> Result<ReviewItem> {
        let row = sqlx::query(
            "select review_state from sms_replies where id = $1 and outcome = 'review'",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let state: String = row.try_get("review_state")?;
        self.list_reviews(&state, None, id - 1, 1)
            .await?
            .into_iter()
            .next()
            .ok_or(StoreError::NotFound)
    }

    /// An organiser settles a review item: the answer they read in it is stored for the
    /// member they chose (once: the item can be resolved only while open).
    #[allow(clippy::too_many_arguments)]
    pub async fn resolve_review(
        &self,
        id: i64,
        campaign_id: i64,
        member_external_id: &str,
        question_code: &str,
        option_code: &str,
        actor: &str,
        note: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let member_id: i64 = sqlx::query_scalar("select id from members where external_id = $1")
            .bind(member_external_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::Conflict("unknown_member"))?;
        let done = sqlx::query(
            "update sms_replies set review_state = 'resolved', campaign_id = $2, member_id = $3, \
               question_code = $4, option_code = $5, resolved_by = $6, resolved_at = $7, \
               resolution_note = $8 \
             where id = $1 and outcome = 'review' and review_state = 'open'",
        )
        .bind(id)
        .bind(campaign_id)
        .bind(member_id)
        .bind(question_code)
        .bind(option_code)
        .bind(actor)
        .bind(now)
        .bind(note)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Err(self.review_missing(&mut tx, id).await);
        }
        sqlx::query(
            "insert into answers (campaign_id, member_id, question_code, option_code, source, \
               dedupe_key, created_at) values ($1, $2, $3, $4, 'organiser', $5, $6) \
             on conflict (dedupe_key) do nothing",
        )
        .bind(campaign_id)
        .bind(member_id)
        .bind(question_code)
        .bind(option_code)
        .bind(format!("review:{id}"))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "update sms_outbox set answered_at = $4, updated_at = $4 \
             where campaign_id = $1 and member_id = $2 and question_code = $3 \
               and state = 'sent' and answered_at is null",
        )
        .bind(campaign_id)
        .bind(member_id)
        .bind(question_code)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn dismiss_review(
        &self,
        id: i64,
        actor: &str,
        note: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "update sms_replies set review_state = 'dismissed', resolved_by = $2, \
               resolved_at = $3, resolution_note = $4 \
             where id = $1 and outcome = 'review' and review_state = 'open'",
        )
        .bind(id)
        .bind(actor)
        .bind(now)
        .bind(note)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Err(self.review_missing(&mut tx, id).await);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn review_missing(&self, tx: &mut super::Tx, id: i64) -> StoreError {
        let exists: std::result::Result<Option<i64>, _> =
            sqlx::query_scalar("select id from sms_replies where id = $1 and outcome = 'review'")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await;
        match exists {
            Ok(Some(_)) => StoreError::Conflict("review_closed"),
            Ok(None) => StoreError::NotFound,
            Err(e) => e.into(),
        }
    }
}

enum AudienceBind {
    Text(String),
    Int(i64),
}
