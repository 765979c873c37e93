//! Campaigns. The script, calling hours and retry policy are JSON documents validated by
//! `domain::campaign` before they get here.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{Result, Store, StoreError};
use crate::domain::{CallingHours, CampaignStatus, PhoneNumber, RetryPolicy, Script, now_millis};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    /// The number members see (`callerId`) and volunteers dial, E.164.
    #[schema(value_type = String, example = "+442079460000")]
    pub caller_number: PhoneNumber,
    pub status: CampaignStatus,
    pub script: Script,
    pub calling_hours: CallingHours,
    pub retry_policy: RetryPolicy,
    pub created_at: i64,
    pub updated_at: i64,
    /// Each question as a survey text, with its segment count (a curly apostrophe or an
    /// emoji in a question makes every text cost more).
    pub sms: Vec<crate::domain::sms::SmsPreview>,
}

/// A complete, validated campaign definition.
#[derive(Debug, Clone)]
pub struct CampaignSpec {
    pub name: String,
    pub caller_number: PhoneNumber,
    pub script: Script,
    pub calling_hours: CallingHours,
    pub retry_policy: RetryPolicy,
}

fn campaign_from_row(r: &AnyRow) -> Result<Campaign> {
    let status: String = r.try_get("status")?;
    let caller: String = r.try_get("caller_number")?;
    let name: String = r.try_get("name")?;
    let script: Script = serde_json::from_str(&r.try_get::<String, _>("script")?)?;
    Ok(Campaign {
        id: r.try_get("id")?,
        sms: crate::domain::sms::previews(&name, &script),
        name,
        caller_number: PhoneNumber::from_e164(&caller)
            .map_err(|e| anyhow::anyhow!("stored caller number is invalid: {e}"))?,
        status: CampaignStatus::parse(&status)
            .ok_or_else(|| anyhow::anyhow!("unknown campaign status {status:?}"))?,
        script,
        calling_hours: serde_json::from_str(&r.try_get::<String, _>("calling_hours")?)?,
        retry_policy: serde_json::from_str(&r.try_get::<String, _>("retry_policy")?)?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const COLUMNS: &str =
    "id, name, caller_number, status, script, calling_hours, retry_policy, created_at, updated_at";

impl Store {
    pub async fn create_campaign(&self, spec: &CampaignSpec) -> Result<Campaign> {
        let now = now_millis();
        let id: i64 = sqlx::query_scalar(
            "insert into campaigns (name, caller_number, status, script, calling_hours, retry_policy, created_at, updated_at) \
             values ($1, $2, 'draft', $3, $4, $5, $6, $6) returning id",
        )
        .bind(&spec.name)
        .bind(spec.caller_number.as_e164())
        .bind(serde_json::to_string(&spec.script)?)
        .bind(serde_json::to_string(&spec.calling_hours)?)
        .bind(serde_json::to_string(&spec.retry_policy)?)
        .bind(now)
        .fetch_one(&self.writer)
        .await?;
        self.durable().await?;
        self.get_campaign(id).await
    }

    pub async fn get_campaign(&self, id: i64) -> Result<Campaign> {
        let sql = format!("select {COLUMNS} from campaigns where id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        campaign_from_row(&row)
    }

    pub async fn list_campaigns(&self) -> Result<Vec<Campaign>> {
        let sql = format!("select {COLUMNS} from campaigns order by id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(campaign_from_row).collect()
    }

    /// Replace the definition. The script may only change while nobody is calling
    /// (draft or paused), so a volunteer's menu never shifts under them mid-call.
    pub async fn update_campaign(&self, id: i64, spec: &CampaignSpec) -> Result<Campaign> {
        let mut tx = self.begin_write().await?;
        let current = {
            let sql = format!("select {COLUMNS} from campaigns where id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            campaign_from_row(&row)?
        };
        match current.status {
            CampaignStatus::Finished => return Err(StoreError::Conflict("campaign_finished")),
            CampaignStatus::Active if current.script != spec.script => {
                return Err(StoreError::Conflict("campaign_active"));
            }
            _ => {}
        }
        sqlx::query(
            "update campaigns set name = $2, caller_number = $3, script = $4, calling_hours = $5, \
             retry_policy = $6, updated_at = $7 where id = $1",
        )
        .bind(id)
        .bind(&spec.name)
        .bind(spec.caller_number.as_e164())
        .bind(serde_json::to_string(&spec.script)?)
        .bind(serde_json::to_string(&spec.calling_hours)?)
        .bind(serde_json::to_string(&spec.retry_policy)?)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_campaign(id).await
    }

    /// Move between states. Allowed: draft/paused -> active, active -> paused,
    /// anything but finished -> finished. Repeating a move is a no-op, not an error.
    pub async fn set_campaign_status(&self, id: i64, to: CampaignStatus) -> Result<Campaign> {
        let allowed_from: &[&str] = match to {
            CampaignStatus::Active => &["draft", "paused", "active"],
            CampaignStatus::Paused => &["active", "paused"],
            CampaignStatus::Finished => &["draft", "active", "paused", "finished"],
            CampaignStatus::Draft => &["draft"],
        };
        let done = sqlx::query(
            "update campaigns set status = $2, updated_at = $3 \
             where id = $1 and status in ($4, $5, $6, $7)",
        )
        .bind(id)
        .bind(to.as_str())
        .bind(now_millis())
        .bind(allowed_from.first().copied())
        .bind(allowed_from.get(1).copied())
        .bind(allowed_from.get(2).copied())
        .bind(allowed_from.get(3).copied())
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        if done.rows_affected() == 0 {
            // Either it does not exist (404) or the move is not allowed (409).
            self.get_campaign(id).await?;
            return Err(StoreError::Conflict("status_transition"));
        }
        if to == CampaignStatus::Active {
            // Everyone imported so far joins the queue (a big list finishes in the
            // background); later imports join on arrival.
            self.start_queue(id, now_millis()).await?;
        }
        self.get_campaign(id).await
    }

    /// Delete a campaign that never contacted anyone: no call attempt, no text handed to
    /// the provider, no answer, no reply. What starting it created (its queue, seat
    /// schedule, targeting, texts still queued or skipped) goes in the same transaction;
    /// volunteer sessions and call-backs that named it keep their history without it.
    /// A running campaign must be paused first (`campaign_active`): volunteers may be
    /// on the line for it.
    pub async fn delete_campaign(&self, id: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // On PostgreSQL the row lock orders this against a claim or a send inserting
        // rows that point at the campaign (their foreign keys lock the same row).
        let lock = match self.backend {
            super::Backend::Postgres => " for update",
            super::Backend::Sqlite => "",
        };
        let status: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select status from campaigns where id = $1{lock}"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        if status == CampaignStatus::Active.as_str() {
            return Err(StoreError::Conflict("campaign_active"));
        }
        let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(id);
        let attempts = count("select count(*) from contact_attempts where campaign_id = $1")
            .fetch_one(&mut *tx)
            .await?;
        let answers = count("select count(*) from answers where campaign_id = $1")
            .fetch_one(&mut *tx)
            .await?;
        if attempts > 0 || answers > 0 {
            return Err(StoreError::Conflict("campaign_has_attempts"));
        }
        let texts = count(
            "select count(*) from sms_outbox where campaign_id = $1 \
             and state not in ('queued', 'skipped')",
        )
        .fetch_one(&mut *tx)
        .await?;
        let replies = count("select count(*) from sms_replies where campaign_id = $1")
            .fetch_one(&mut *tx)
            .await?;
        if texts > 0 || replies > 0 {
            return Err(StoreError::Conflict("campaign_has_texts"));
        }
        for sql in [
            "delete from sms_outbox where campaign_id = $1",
            "delete from seat_schedule where campaign_id = $1",
            "delete from campaign_targeting where campaign_id = $1",
            "delete from call_queue where campaign_id = $1",
            "update volunteer_sessions set campaign_id = null where campaign_id = $1",
            "update callback_requests set campaign_id = null where campaign_id = $1",
            "delete from campaigns where id = $1",
        ] {
            sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| match &e {
                    // A table added later that points here: refuse, never a 500.
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                        StoreError::Conflict("campaign_has_attempts")
                    }
                    _ => e.into(),
                })?;
        }
        tx.commit().await?;
        Ok(())
    }
}
