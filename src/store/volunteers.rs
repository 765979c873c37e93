//! Volunteers: who may dial in, with a hashed PIN.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{Result, ResultExt, Store, StoreError, flag};
use crate::domain::{PhoneNumber, now_millis};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Volunteer {
    pub id: i64,
    pub name: String,
    /// The volunteer's own number: how we recognise them and where call-backs go.
    #[schema(value_type = String)]
    pub phone: PhoneNumber,
    pub team: Option<String>,
    pub active: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct VolunteerPatch {
    pub name: Option<String>,
    pub phone: Option<PhoneNumber>,
    /// `Some(None)` clears the team.
    pub team: Option<Option<String>>,
    pub active: Option<bool>,
}

fn volunteer_from_row(r: &AnyRow) -> Result<Volunteer> {
    let phone: String = r.try_get("phone")?;
    Ok(Volunteer {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        phone: PhoneNumber::from_e164(&phone)
            .map_err(|e| anyhow::anyhow!("stored volunteer phone is invalid: {e}"))?,
        team: r.try_get("team")?,
        active: r.try_get::<i64, _>("active")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

const COLUMNS: &str = "id, name, phone, team, active, created_at";

impl Store {
    pub async fn create_volunteer(
        &self,
        name: &str,
        phone: &PhoneNumber,
        team: Option<&str>,
        pin_hash: &str,
    ) -> Result<Volunteer> {
        let now = now_millis();
        let id: i64 = sqlx::query_scalar(
            "insert into volunteers (name, phone, pin_hash, team, active, created_at, updated_at) \
             values ($1, $2, $3, $4, 1, $5, $5) returning id",
        )
        .bind(name)
        .bind(phone.as_e164())
        .bind(pin_hash)
        .bind(team)
        .bind(now)
        .fetch_one(&self.writer)
        .await
        .on_unique("volunteer_phone_taken")?;
        self.durable().await?;
        self.get_volunteer(id).await
    }

    pub async fn get_volunteer(&self, id: i64) -> Result<Volunteer> {
        let sql = format!("select {COLUMNS} from volunteers where id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        volunteer_from_row(&row)
    }

    /// The volunteer registered on a number, with their PIN hash (for the dial-in check).
    pub async fn volunteer_by_phone(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Option<(Volunteer, String)>> {
        let sql = format!("select {COLUMNS}, pin_hash from volunteers where phone = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(phone.as_e164())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((volunteer_from_row(&r)?, r.try_get("pin_hash")?)))
            .transpose()
    }

    /// The stored PIN hash, for checking a PIN keyed on a call.
    pub async fn volunteer_pin_hash(&self, id: i64) -> Result<String> {
        sqlx::query_scalar("select pin_hash from volunteers where id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn list_volunteers(&self) -> Result<Vec<Volunteer>> {
        let sql = format!("select {COLUMNS} from volunteers order by id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(volunteer_from_row).collect()
    }

    pub async fn update_volunteer(&self, id: i64, patch: &VolunteerPatch) -> Result<Volunteer> {
        let (team_set, team) = match &patch.team {
            Some(t) => (1i64, t.clone()),
            None => (0, None),
        };
        let done = sqlx::query(
            "update volunteers set name = coalesce($2, name), phone = coalesce($3, phone), \
             team = case when $4 = 1 then $5 else team end, active = coalesce($6, active), \
             updated_at = $7 where id = $1",
        )
        .bind(id)
        .bind(&patch.name)
        .bind(patch.phone.as_ref().map(|p| p.as_e164().to_owned()))
        .bind(team_set)
        .bind(team)
        .bind(patch.active.map(flag))
        .bind(now_millis())
        .execute(&self.writer)
        .await
        .on_unique("volunteer_phone_taken")?;
        self.durable().await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_volunteer(id).await
    }

    pub async fn set_volunteer_pin(&self, id: i64, pin_hash: &str) -> Result<()> {
        let done =
            sqlx::query("update volunteers set pin_hash = $2, updated_at = $3 where id = $1")
                .bind(id)
                .bind(pin_hash)
                .bind(now_millis())
                .execute(&self.writer)
                .await?;
        self.durable().await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Remove a volunteer who never rang in and was never rung: one with any call
    /// history (a session, even one that ended at the PIN prompt, a call-back request or
    /// an attempt) must be deactivated instead, so that history keeps its volunteer.
    pub async fn delete_volunteer(&self, id: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let calls: i64 = sqlx::query_scalar(
            "select (select count(*) from contact_attempts where volunteer_id = $1) \
                  + (select count(*) from volunteer_sessions where volunteer_id = $1) \
                  + (select count(*) from callback_requests where volunteer_id = $1)",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if calls > 0 {
            return Err(StoreError::Conflict("volunteer_has_calls"));
        }
        let done = sqlx::query("delete from volunteers where id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                // A call that started after the count (PostgreSQL): the same answer.
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                    StoreError::Conflict("volunteer_has_calls")
                }
                _ => e.into(),
            })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }
}
