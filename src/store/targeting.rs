//! A campaign's targeting settings and the per-seat schedule rows the claim reads.
//! Seat-level targeting (target flag, weight, limits) lives in `seats`; see
//! `domain::targeting` for why.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Backend, Result, Store, Tx};
use crate::domain::now_millis;
use crate::domain::targeting::{NonTargets, Targeting};

impl Store {
    pub async fn targeting(&self, campaign_id: i64) -> Result<Targeting> {
        self.get_campaign(campaign_id).await?;
        let row = sqlx::query(TARGETING_SELECT)
            .bind(campaign_id)
            .fetch_optional(&self.pool)
            .await?;
        targeting_from(row)
    }

    /// Replace the settings; queued members are re-ordered at once, so the next claim
    /// follows them.
    pub async fn set_targeting(&self, campaign_id: i64, t: &Targeting) -> Result<Targeting> {
        self.get_campaign(campaign_id).await?;
        let mut tx = self.begin_write().await?;
        // A queue fill's chunk holds this row shared while it applies the settings it
        // read (PostgreSQL; SQLite's single writer orders them anyway).
        if self.backend == Backend::Postgres {
            sqlx::query("select id from campaigns where id = $1 for update")
                .bind(campaign_id)
                .fetch_optional(&mut *tx)
                .await?;
        }
        sqlx::query(
            "insert into campaign_targeting (campaign_id, non_targets, attribute, \
               attribute_weights, updated_at) values ($1, $2, $3, $4, $5) \
             on conflict (campaign_id) do update set non_targets = excluded.non_targets, \
               attribute = excluded.attribute, attribute_weights = excluded.attribute_weights, \
               updated_at = excluded.updated_at",
        )
        .bind(campaign_id)
        .bind(t.non_targets.as_str())
        .bind(&t.attribute)
        .bind(serde_json::to_string(&t.attribute_weights)?)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        apply_priorities(&mut tx, self.backend, campaign_id, t, true, None).await?;
        tx.commit().await?;
        self.targeting(campaign_id).await
    }
}

const TARGETING_SELECT: &str = "select non_targets, attribute, attribute_weights \
     from campaign_targeting where campaign_id = $1";

/// The campaign's targeting as this transaction sees it, for a queue fill's chunk:
/// `None` when the campaign is gone. On PostgreSQL the campaign row is held shared until
/// the chunk commits, so a targeting change waits for it and the next chunk reads the
/// change.
pub(crate) async fn targeting_in(
    tx: &mut Tx,
    backend: Backend,
    campaign_id: i64,
) -> Result<Option<Targeting>> {
    let lock = match backend {
        Backend::Postgres => " for share",
        Backend::Sqlite => "",
    };
    let exists = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select id from campaigns where id = $1{lock}"
    )))
    .bind(campaign_id)
    .fetch_optional(&mut **tx)
    .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let row = sqlx::query(TARGETING_SELECT)
        .bind(campaign_id)
        .fetch_optional(&mut **tx)
        .await?;
    targeting_from(row).map(Some)
}

fn targeting_from(row: Option<sqlx::any::AnyRow>) -> Result<Targeting> {
    let Some(row) = row else {
        return Ok(Targeting::default());
    };
    let mode: String = row.try_get("non_targets")?;
    let weights: String = row.try_get("attribute_weights")?;
    Ok(Targeting {
        non_targets: NonTargets::parse(&mode)
            .ok_or_else(|| anyhow::anyhow!("unknown non_targets {mode:?}"))?,
        attribute: row.try_get("attribute")?,
        attribute_weights: serde_json::from_str::<BTreeMap<String, i64>>(&weights)?,
    })
}

/// Set `call_queue.priority` from the member attribute weights. With `reset`, every
/// queued member is recomputed; without, only those still at the default 0 (new arrivals).
pub(crate) async fn apply_priorities(
    tx: &mut Tx,
    backend: Backend,
    campaign_id: i64,
    t: &Targeting,
    reset: bool,
    members: Option<(i64, i64)>,
) -> Result<()> {
    if reset {
        sqlx::query("update call_queue set priority = 0 where campaign_id = $1 and priority <> 0")
            .bind(campaign_id)
            .execute(&mut **tx)
            .await?;
    }
    let Some(attribute) = &t.attribute else {
        return Ok(());
    };
    let value_of = match backend {
        Backend::Sqlite => "json_extract(m.attributes, '$.\"' || $3 || '\"')",
        Backend::Postgres => "(cast(m.attributes as jsonb) ->> $3)",
    };
    // Members with ids in (lo, hi] only, when the queue is filled a chunk at a time. The
    // member is looked up by key for each queue row: an `in (select ...)` read every
    // member's attributes at every chunk, or (with the range in it too, on fresh
    // statistics) was planned as a nested loop of chunk x chunk rows on PostgreSQL.
    let (lo, hi) = members.unwrap_or((i64::MIN, i64::MAX));
    for (value, weight) in t.attribute_weights.iter().filter(|(_, w)| **w != 0) {
        let sql = format!(
            "update call_queue set priority = $2 where campaign_id = $1 and priority = 0 \
             and member_id > $5 and member_id <= $6 \
             and exists (select 1 from members m \
                         where m.id = call_queue.member_id and {value_of} = $4)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(*weight)
            .bind(attribute)
            .bind(value)
            .bind(lo)
            .bind(hi)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Give every seat a schedule row for the campaign. A seat that joins late starts at
/// the lowest pass in use, so it takes its share from now on rather than catching up.
pub(crate) async fn ensure_schedule(tx: &mut Tx, campaign_id: i64) -> Result<()> {
    sqlx::query(
        "insert into seat_schedule (campaign_id, seat_id, pass) \
         select $1, s.id, coalesce((select min(pass) from seat_schedule where campaign_id = $1), 0) \
         from seats s where not exists \
           (select 1 from seat_schedule x where x.campaign_id = $1 and x.seat_id = s.id) \
         on conflict (campaign_id, seat_id) do nothing",
    )
    .bind(campaign_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
