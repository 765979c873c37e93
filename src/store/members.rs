//! Members: the people volunteers phone. Written in batches by the importer, read one at a
//! time by organisers.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::seats::UpsertCounts;
use super::{Backend, Result, Store, Tx};
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

        // Each batch travels as one JSON parameter: a statement with thousands of bound
        // parameters costs SQLite quadratic time in name look-ups, and one fixed SQL
        // text keeps a single prepared statement per query.
        let ids = serde_json::to_string(&batch.iter().map(|m| &m.external_id).collect::<Vec<_>>())?;
        let existing = {
            let sql = match self.backend {
                Backend::Sqlite => {
                    "select external_id, name, phone, seat_id, attributes from members \
                     where external_id in (select value from json_each($1))"
                }
                // Lateral with `limit 1` (which stops the planner flattening it into a
                // join): one index probe per id, whatever the planner believes about the
                // table's size. Statistics lag far behind during a large import, and the
                // plain `in (...)` form became a hash join over a full scan per batch.
                Backend::Postgres => {
                    "select m.external_id, m.name, m.phone, m.seat_id, m.attributes \
                     from json_array_elements_text($1::json) as k(id) \
                     cross join lateral (select * from members where external_id = k.id limit 1) m"
                }
            };
            let rows = sqlx::query(sql).bind(&ids).fetch_all(&mut *tx).await?;
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
                Some((_, phone, seat, _)) => {
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
                    if phone != m.phone.as_e164() || *seat != m.seat_id {
                        refresh_queue_copies(&mut tx, &m.external_id, now).await?;
                    }
                    counts.updated += 1;
                }
            }
        }

        if !inserts.is_empty() {
            let rows: Vec<(&str, &str, &str, i64, &str)> = inserts
                .iter()
                .map(|m| {
                    (
                        m.external_id.as_str(),
                        m.name.as_str(),
                        m.phone.as_e164(),
                        m.seat_id,
                        m.attributes.as_str(),
                    )
                })
                .collect();
            let sql = match self.backend {
                Backend::Sqlite => {
                    "insert into members (external_id, name, phone, seat_id, attributes, created_at, updated_at) \
                     select value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, $2, $2 \
                     from json_each($1)"
                }
                Backend::Postgres => {
                    "insert into members (external_id, name, phone, seat_id, attributes, created_at, updated_at) \
                     select e ->> 0, e ->> 1, e ->> 2, (e ->> 3)::bigint, e ->> 4, $2, $2 \
                     from jsonb_array_elements($1::jsonb) as e"
                }
            };
            sqlx::query(sql)
                .bind(serde_json::to_string(&rows)?)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            counts.imported += rows.len() as u64;
        }

        let shared = shared_phones(&mut tx, self.backend, batch).await?;
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

/// Members of `batch` whose number is also held by another member. Each number is
/// probed with `limit 2`, so a number shared by thousands still costs two index entries,
/// and the whole check is one statement per batch.
async fn shared_phones(
    tx: &mut super::Tx,
    backend: Backend,
    batch: &[MemberRecord],
) -> Result<Vec<SharedPhone>> {
    let mut phones: Vec<&str> = batch.iter().map(|m| m.phone.as_e164()).collect();
    phones.sort_unstable();
    phones.dedup();
    let numbers = match backend {
        Backend::Sqlite => "select value from json_each($1)",
        Backend::Postgres => "select json_array_elements_text($1::json)",
    };
    let sql = format!(
        "with p(phone) as ({numbers}) \
         select p.phone from p \
         where (select count(*) from (select 1 from members m where m.phone = p.phone limit 2) t) > 1"
    );
    let shared: std::collections::HashSet<String> =
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
            .bind(serde_json::to_string(&phones)?)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    Ok(batch
        .iter()
        .filter(|m| shared.contains(m.phone.as_e164()))
        .map(|m| SharedPhone {
            external_id: m.external_id.clone(),
        })
        .collect())
}

/// A member's new number or seat reaches their waiting queue rows in the same
/// transaction: the claim's one-call-per-number check and the opt-out state read the
/// queue's copies, which must never trail the member (a leased row is left alone; the
/// dial checks the member's own number).
async fn refresh_queue_copies(tx: &mut Tx, external_id: &str, now: i64) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "{} where member_id = (select id from members where external_id = $1) \
           and state in ('ready', 'suppressed')",
        super::calls::REFRESH_QUEUE_COPIES
    )))
    .bind(external_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
