//! Members: the people volunteers phone. Written in batches by the importer, read one at a
//! time by organisers.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::seats::UpsertCounts;
use super::{Result, Store};
use crate::domain::{PhoneNumber, now_millis};

/// A validated row from a member file.
#[derive(Debug, Clone)]
pub struct MemberRecord {
    pub external_id: String,
    pub name: String,
    pub phone: PhoneNumber,
    pub seat_id: i64,
    /// JSON object of the file's extra columns.
    pub attributes: String,
}

/// A member as an organiser sees it (volunteers never get this shape).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Member {
    pub member_id: String,
    pub name: String,
    #[schema(value_type = String, example = "+447700900123")]
    pub phone: PhoneNumber,
    pub seat_code: String,
    pub seat_name: String,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// The number is on the suppression list: nobody will call or text it.
    pub opted_out: bool,
    /// Another member has the same number (a shared household line, say).
    pub shares_phone_with: Vec<String>,
}

/// A member of the batch whose number another member already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPhone {
    pub external_id: String,
    /// How many other members hold the number.
    pub others: u64,
}

impl Store {
    /// Upsert one batch in one transaction. Rows that are byte-for-byte what is stored
    /// count as unchanged and are not written, so re-importing a file changes nothing.
    /// `external_id`s must be unique within the batch (the importer guarantees it).
    pub async fn upsert_members(
        &self,
        batch: &[MemberRecord],
    ) -> Result<(UpsertCounts, Vec<SharedPhone>)> {
        let mut counts = UpsertCounts::default();
        if batch.is_empty() {
            return Ok((counts, Vec::new()));
        }
        let now = now_millis();
        let mut tx = self.begin_write().await?;

        let existing = {
            let sql = format!(
                "select external_id, name, phone, seat_id, attributes from members \
                 where external_id in ({})",
                placeholders(1, batch.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for m in batch {
                q = q.bind(&m.external_id);
            }
            let rows = q.fetch_all(&mut *tx).await?;
            let mut map = HashMap::with_capacity(rows.len());
            for r in rows {
                let key: String = r.try_get("external_id")?;
                let current: (String, String, i64, String) = (
                    r.try_get("name")?,
                    r.try_get("phone")?,
                    r.try_get("seat_id")?,
                    r.try_get("attributes")?,
                );
                map.insert(key, current);
            }
            map
        };

        let mut inserts = Vec::new();
        for m in batch {
            match existing.get(&m.external_id) {
                None => inserts.push(m),
                Some((name, phone, seat, attrs))
                    if *name == m.name
                        && phone == m.phone.as_e164()
                        && *seat == m.seat_id
                        && *attrs == m.attributes =>
                {
                    counts.unchanged += 1;
                }
                Some(_) => {
                    sqlx::query(
                        "update members set name = $2, phone = $3, seat_id = $4, \
                         attributes = $5, updated_at = $6 where external_id = $1",
                    )
                    .bind(&m.external_id)
                    .bind(&m.name)
                    .bind(m.phone.as_e164())
                    .bind(m.seat_id)
                    .bind(&m.attributes)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    counts.updated += 1;
                }
            }
        }

        // Multi-row inserts: one round trip per chunk instead of per row.
        for chunk in inserts.chunks(500) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let b = i * 6;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 6
                    )
                })
                .collect();
            let sql = format!(
                "insert into members (external_id, name, phone, seat_id, attributes, created_at, updated_at) \
                 values {}",
                values.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for m in chunk {
                q = q
                    .bind(&m.external_id)
                    .bind(&m.name)
                    .bind(m.phone.as_e164())
                    .bind(m.seat_id)
                    .bind(&m.attributes)
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
            counts.imported += chunk.len() as u64;
        }

        let shared = shared_phones(&mut tx, batch).await?;
        tx.commit().await?;
        Ok((counts, shared))
    }

    pub async fn get_member(&self, external_id: &str) -> Result<Member> {
        let row = sqlx::query(MEMBER_SELECT_BY_ID)
            .bind(external_id)
            .fetch_one(&self.pool)
            .await?;
        self.member_from_row(&row).await
    }

    /// Every member on a number, for organisers answering "who is this?".
    pub async fn members_by_phone(&self, phone: &PhoneNumber) -> Result<Vec<Member>> {
        let rows = sqlx::query(MEMBER_SELECT_BY_PHONE)
            .bind(phone.as_e164())
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.member_from_row(r).await?);
        }
        Ok(out)
    }

    pub async fn count_members(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("select count(*) from members")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn member_from_row(&self, r: &AnyRow) -> Result<Member> {
        let phone_text: String = r.try_get("phone")?;
        let external_id: String = r.try_get("external_id")?;
        let phone = PhoneNumber::from_e164(&phone_text).map_err(|e| {
            anyhow::anyhow!("stored phone for member {external_id} is invalid: {e}")
        })?;
        let others: Vec<String> = sqlx::query_scalar(
            "select external_id from members where phone = $1 and external_id <> $2 order by external_id",
        )
        .bind(phone.as_e164())
        .bind(&external_id)
        .fetch_all(&self.pool)
        .await?;
        let attributes: String = r.try_get("attributes")?;
        Ok(Member {
            member_id: external_id,
            name: r.try_get("name")?,
            phone,
            seat_code: r.try_get("seat_code")?,
            seat_name: r.try_get("seat_name")?,
            attributes: serde_json::from_str(&attributes)?,
            opted_out: r.try_get::<i64, _>("opted_out")? != 0,
            shares_phone_with: others,
        })
    }
}

const MEMBER_SELECT_BY_ID: &str = "select m.external_id, m.name, m.phone, m.attributes, \
     s.code as seat_code, s.name as seat_name, \
     case when exists (select 1 from suppressions x where x.phone = m.phone) then 1 else 0 end as opted_out \
     from members m join seats s on s.id = m.seat_id where m.external_id = $1";

const MEMBER_SELECT_BY_PHONE: &str = "select m.external_id, m.name, m.phone, m.attributes, \
     s.code as seat_code, s.name as seat_name, \
     case when exists (select 1 from suppressions x where x.phone = m.phone) then 1 else 0 end as opted_out \
     from members m join seats s on s.id = m.seat_id where m.phone = $1 order by m.external_id";

/// Members of `batch` whose number is also held by another member, with how many
/// others. One grouped query, so a number shared by thousands costs one row, not
/// thousands.
async fn shared_phones(tx: &mut super::Tx, batch: &[MemberRecord]) -> Result<Vec<SharedPhone>> {
    let sql = format!(
        "select phone, count(*) as holders from members where phone in ({}) \
         group by phone having count(*) > 1",
        placeholders(1, batch.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for m in batch {
        q = q.bind(m.phone.as_e164());
    }
    let mut holders: HashMap<String, i64> = HashMap::new();
    for r in q.fetch_all(&mut **tx).await? {
        holders.insert(r.try_get("phone")?, r.try_get("holders")?);
    }
    Ok(batch
        .iter()
        .filter_map(|m| {
            let n = holders.get(m.phone.as_e164())?;
            Some(SharedPhone {
                external_id: m.external_id.clone(),
                others: (n - 1) as u64,
            })
        })
        .collect())
}

/// `$from, $from+1, ...` for `n` parameters.
pub(crate) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
