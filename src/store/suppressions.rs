//! The suppression list: numbers that must never be called or texted, by anyone, for any
//! campaign. Keyed by the normalised number; every change is audited.

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Result, Store};
use crate::domain::{PhoneNumber, now_millis};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Suppression {
    #[schema(value_type = String)]
    pub phone: PhoneNumber,
    pub reason: String,
    /// Where the opt-out came from: `sms`, `call`, `organiser`, `carrier`.
    pub source: String,
    /// Unix milliseconds, UTC.
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    /// `add` or `remove`.
    pub action: String,
    pub source: String,
    pub note: Option<String>,
    pub actor: String,
    pub created_at: i64,
}

impl Store {
    /// Suppress a number. Idempotent: a number already suppressed keeps its first record
    /// and the call returns `false`.
    pub async fn suppress(
        &self,
        phone: &PhoneNumber,
        reason: &str,
        source: &str,
        actor: &str,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let added = suppress_in(&mut tx, phone, reason, source, actor, now_millis()).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Re-opt a number in. The audit record keeps who did it and why.
    pub async fn unsuppress(
        &self,
        phone: &PhoneNumber,
        source: &str,
        note: &str,
        actor: &str,
    ) -> Result<bool> {
        let now = now_millis();
        let mut tx = self.begin_write().await?;
        let removed = sqlx::query("delete from suppressions where phone = $1")
            .bind(phone.as_e164())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if removed {
            audit(&mut tx, phone, "remove", source, Some(note), actor, now).await?;
            // Back into every campaign's queue it was taken out of.
            sqlx::query(
                "update call_queue set state = 'ready', updated_at = $2 \
                 where phone = $1 and state = 'suppressed'",
            )
            .bind(phone.as_e164())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if removed {
            // The claim may have marked those seats idle (src/store/claim.rs).
            sqlx::query(
                "update seat_schedule set idle_until = 0 where idle_until > 0 and exists ( \
                   select 1 from call_queue q where q.phone = $1 \
                   and q.campaign_id = seat_schedule.campaign_id and q.seat_id = seat_schedule.seat_id)",
            )
            .bind(phone.as_e164())
            .execute(&self.writer)
            .await?;
            self.durable().await?;
        }
        Ok(removed)
    }

    pub async fn suppression(&self, phone: &PhoneNumber) -> Result<Option<Suppression>> {
        let row =
            sqlx::query("select reason, source, created_at from suppressions where phone = $1")
                .bind(phone.as_e164())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(Suppression {
                phone: phone.clone(),
                reason: r.try_get("reason")?,
                source: r.try_get("source")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    /// The list, newest first; `before` pages (unix ms, exclusive).
    pub async fn list_suppressions(
        &self,
        source: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Suppression>> {
        let rows = sqlx::query(
            "select phone, reason, source, created_at from suppressions \
             where ($1 = '' or source = $1) and created_at < $2 \
             order by created_at desc, phone limit $3",
        )
        .bind(source.unwrap_or(""))
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let phone: String = r.try_get("phone")?;
                Ok(Suppression {
                    phone: PhoneNumber::from_e164(&phone)
                        .map_err(|e| anyhow::anyhow!("stored suppressed number is invalid: {e}"))?,
                    reason: r.try_get("reason")?,
                    source: r.try_get("source")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub async fn suppression_audit(&self, phone: &PhoneNumber) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "select action, source, note, actor, created_at from suppression_audit \
             where phone = $1 order by id",
        )
        .bind(phone.as_e164())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    action: r.try_get("action")?,
                    source: r.try_get("source")?,
                    note: r.try_get("note")?,
                    actor: r.try_get("actor")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }
}

/// Suppress inside the caller's transaction (an opt-out key on a call saves the outcome
/// and the suppression together). Also takes the number out of every campaign's queue,
/// so the claim never even considers it; the claim checks the table again regardless.
pub(crate) async fn suppress_in(
    tx: &mut super::Tx,
    phone: &PhoneNumber,
    reason: &str,
    source: &str,
    actor: &str,
    now: i64,
) -> Result<bool> {
    let added = sqlx::query(
        "insert into suppressions (phone, reason, source, created_at) values ($1, $2, $3, $4) \
         on conflict (phone) do nothing",
    )
    .bind(phone.as_e164())
    .bind(reason)
    .bind(source)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if added {
        audit(tx, phone, "add", source, Some(reason), actor, now).await?;
    }
    sqlx::query(
        "update call_queue set state = 'suppressed', updated_at = $2 \
         where phone = $1 and state = 'ready'",
    )
    .bind(phone.as_e164())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(added)
}

async fn audit(
    tx: &mut super::Tx,
    phone: &PhoneNumber,
    action: &str,
    source: &str,
    note: Option<&str>,
    actor: &str,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "insert into suppression_audit (phone, action, source, note, actor, created_at) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(phone.as_e164())
    .bind(action)
    .bind(source)
    .bind(note)
    .bind(actor)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
