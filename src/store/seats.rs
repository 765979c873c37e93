//! Seats (Westminster constituencies): the public election data plus the organisers'
//! targeting settings.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{Result, Store, StoreError, flag};
use crate::domain::now_millis;

/// A seat as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Seat {
    pub code: String,
    pub name: String,
    pub nation: String,
    pub region: String,
    pub time_zone: String,
    pub is_target: bool,
    pub weight: i64,
    pub rate_per_hour: Option<i64>,
    pub burst: Option<i64>,
    pub daily_cap: Option<i64>,
    pub winner_2024: Option<String>,
    pub second_2024: Option<String>,
    pub majority_2024: Option<i64>,
    pub electorate_2024: Option<i64>,
}

/// A row of the seat file, already validated by the importer.
#[derive(Debug, Clone, PartialEq)]
pub struct SeatRecord {
    pub code: String,
    pub name: String,
    pub nation: String,
    pub region: String,
    pub winner_2024: Option<String>,
    pub second_2024: Option<String>,
    pub majority_2024: Option<i64>,
    pub electorate_2024: Option<i64>,
    pub valid_votes_2024: Option<i64>,
}

/// Targeting changes from an organiser; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeatPatch {
    pub is_target: Option<bool>,
    pub weight: Option<i64>,
    /// Attempts per hour; `0` removes the limit.
    pub rate_per_hour: Option<i64>,
    /// Burst size; `0` removes it.
    pub burst: Option<i64>,
    /// Attempts per local day; `0` removes the cap.
    pub daily_cap: Option<i64>,
    pub time_zone: Option<String>,
}

impl SeatPatch {
    /// Bounds an organiser can reasonably mean; a zone must be a real IANA name.
    pub fn validate(&self) -> std::result::Result<(), Vec<crate::domain::FieldError>> {
        let mut errors = Vec::new();
        for (field, value) in [
            ("weight", self.weight),
            ("rate_per_hour", self.rate_per_hour),
            ("burst", self.burst),
            ("daily_cap", self.daily_cap),
        ] {
            if value.is_some_and(|v| !(0..=1_000_000).contains(&v)) {
                errors.push(crate::domain::FieldError {
                    field: field.into(),
                    message: "must be between 0 and 1000000".into(),
                });
            }
        }
        if let Some(tz) = &self.time_zone
            && jiff::tz::TimeZone::get(tz).is_err()
        {
            errors.push(crate::domain::FieldError {
                field: "time_zone".into(),
                message: format!(
                    "unknown time zone {tz:?} (use an IANA name such as Europe/London)"
                ),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// What matching a member's constituency column needs: code and name to id.
pub struct SeatIndex {
    by_code: std::collections::HashMap<String, i64>,
    by_name: std::collections::HashMap<String, i64>,
}

impl SeatIndex {
    /// Match `ONS code` or name, case- and spacing-insensitively.
    pub fn find(&self, constituency: &str) -> Option<i64> {
        self.by_code
            .get(&constituency.trim().to_ascii_uppercase())
            .or_else(|| self.by_name.get(&name_key(constituency)))
            .copied()
    }

    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }
}

/// The matching form of a seat name: lower case, single spaces, `&` read as `and`.
pub fn name_key(name: &str) -> String {
    name.replace('&', " and ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpsertCounts {
    pub imported: u64,
    pub updated: u64,
    pub unchanged: u64,
}

const SEAT_COLUMNS: &str = "code, name, nation, region, time_zone, is_target, weight, \
    rate_per_hour, burst, daily_cap, winner_2024, second_2024, majority_2024, electorate_2024";

fn seat_from_row(r: &AnyRow) -> std::result::Result<Seat, sqlx::Error> {
    Ok(Seat {
        code: r.try_get("code")?,
        name: r.try_get("name")?,
        nation: r.try_get("nation")?,
        region: r.try_get("region")?,
        time_zone: r.try_get("time_zone")?,
        is_target: r.try_get::<i64, _>("is_target")? != 0,
        weight: r.try_get("weight")?,
        rate_per_hour: r.try_get("rate_per_hour")?,
        burst: r.try_get("burst")?,
        daily_cap: r.try_get("daily_cap")?,
        winner_2024: r.try_get("winner_2024")?,
        second_2024: r.try_get("second_2024")?,
        majority_2024: r.try_get("majority_2024")?,
        electorate_2024: r.try_get("electorate_2024")?,
    })
}

impl Store {
    /// Insert or refresh seats from the public data file. Targeting settings are the
    /// organisers' and are never touched by a re-import.
    pub async fn upsert_seats(&self, seats: &[SeatRecord]) -> Result<UpsertCounts> {
        let mut counts = UpsertCounts::default();
        let now = now_millis();
        let mut tx = self.begin_write().await?;
        for s in seats {
            let existing = sqlx::query(
                "select name, nation, region, winner_2024, second_2024, majority_2024, \
                 electorate_2024, valid_votes_2024 from seats where code = $1",
            )
            .bind(&s.code)
            .fetch_optional(&mut *tx)
            .await?;
            match existing {
                None => {
                    sqlx::query(
                        "insert into seats (code, name, name_key, nation, region, winner_2024, \
                         second_2024, majority_2024, electorate_2024, valid_votes_2024, \
                         created_at, updated_at) \
                         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
                    )
                    .bind(&s.code)
                    .bind(&s.name)
                    .bind(name_key(&s.name))
                    .bind(&s.nation)
                    .bind(&s.region)
                    .bind(&s.winner_2024)
                    .bind(&s.second_2024)
                    .bind(s.majority_2024)
                    .bind(s.electorate_2024)
                    .bind(s.valid_votes_2024)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match &e {
                        sqlx::Error::Database(d) if d.is_unique_violation() => {
                            StoreError::Conflict("another seat already has this name")
                        }
                        _ => e.into(),
                    })?;
                    counts.imported += 1;
                }
                Some(row) => {
                    let current = SeatRecord {
                        code: s.code.clone(),
                        name: row.try_get("name")?,
                        nation: row.try_get("nation")?,
                        region: row.try_get("region")?,
                        winner_2024: row.try_get("winner_2024")?,
                        second_2024: row.try_get("second_2024")?,
                        majority_2024: row.try_get("majority_2024")?,
                        electorate_2024: row.try_get("electorate_2024")?,
                        valid_votes_2024: row.try_get("valid_votes_2024")?,
                    };
                    if current == *s {
                        counts.unchanged += 1;
                        continue;
                    }
                    sqlx::query(
                        "update seats set name = $2, name_key = $3, nation = $4, region = $5, \
                         winner_2024 = $6, second_2024 = $7, majority_2024 = $8, \
                         electorate_2024 = $9, valid_votes_2024 = $10, updated_at = $11 \
                         where code = $1",
                    )
                    .bind(&s.code)
                    .bind(&s.name)
                    .bind(name_key(&s.name))
                    .bind(&s.nation)
                    .bind(&s.region)
                    .bind(&s.winner_2024)
                    .bind(&s.second_2024)
                    .bind(s.majority_2024)
                    .bind(s.electorate_2024)
                    .bind(s.valid_votes_2024)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    counts.updated += 1;
                }
            }
        }
        tx.commit().await?;
        self.zones.forget();
        Ok(counts)
    }

    pub async fn seat_index(&self) -> Result<SeatIndex> {
        let rows = sqlx::query("select id, code, name_key from seats")
            .fetch_all(&self.pool)
            .await?;
        let mut by_code = std::collections::HashMap::with_capacity(rows.len());
        let mut by_name = std::collections::HashMap::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get("id")?;
            by_code.insert(r.try_get::<String, _>("code")?.to_ascii_uppercase(), id);
            by_name.insert(r.try_get::<String, _>("name_key")?, id);
        }
        Ok(SeatIndex { by_code, by_name })
    }

    pub async fn list_seats(&self, only_targets: bool) -> Result<Vec<Seat>> {
        let sql = format!(
            "select {SEAT_COLUMNS} from seats where ($1 = 0 or is_target = 1) order by name"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(flag(only_targets))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(seat_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn get_seat(&self, code: &str) -> Result<Seat> {
        let sql = format!("select {SEAT_COLUMNS} from seats where code = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(code.trim().to_ascii_uppercase())
            .fetch_one(&self.pool)
            .await?;
        Ok(seat_from_row(&row)?)
    }

    /// Apply targeting changes. `0` clears a limit. Takes effect at the next claim: the
    /// claim reads these columns in its own transaction.
    pub async fn update_seat(&self, code: &str, patch: &SeatPatch) -> Result<Seat> {
        let clear_zero = |v: Option<i64>| v.map(|n| if n == 0 { None } else { Some(n) });
        let (rate_set, rate) = split(clear_zero(patch.rate_per_hour));
        let (burst_set, burst) = split(clear_zero(patch.burst));
        let (cap_set, cap) = split(clear_zero(patch.daily_cap));
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "update seats set \
               is_target = coalesce($2, is_target), \
               weight = coalesce($3, weight), \
               rate_per_hour = case when $4 = 1 then $5 else rate_per_hour end, \
               burst = case when $6 = 1 then $7 else burst end, \
               daily_cap = case when $8 = 1 then $9 else daily_cap end, \
               time_zone = coalesce($10, time_zone), \
               updated_at = $11 \
             where code = $1",
        )
        .bind(code.trim().to_ascii_uppercase())
        .bind(patch.is_target.map(flag))
        .bind(patch.weight)
        .bind(rate_set)
        .bind(rate)
        .bind(burst_set)
        .bind(burst)
        .bind(cap_set)
        .bind(cap)
        .bind(&patch.time_zone)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        // Queued members of this seat follow the change at the next claim.
        sqlx::query(
            "update call_queue set \
               time_zone = (select time_zone from seats s where s.id = call_queue.seat_id) \
             where seat_id = (select id from seats where code = $1)",
        )
        .bind(code.trim().to_ascii_uppercase())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.zones.forget();
        self.get_seat(code).await
    }

    pub async fn count_seats(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("select count(*) from seats")
            .fetch_one(&self.pool)
            .await?)
    }
}

/// `Some(x)` (set to x, possibly null) becomes `(1, x)`; `None` (leave alone) `(0, None)`.
fn split(v: Option<Option<i64>>) -> (i64, Option<i64>) {
    match v {
        Some(x) => (1, x),
        None => (0, None),
    }
}
