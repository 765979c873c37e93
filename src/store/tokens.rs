//! Organiser API tokens, stored as SHA-256 digests.

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store, StoreError};
use crate::domain::{ApiToken, now_millis};

#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked: bool,
}

impl Store {
    pub async fn create_token(&self, name: &str, token: &ApiToken) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "insert into api_tokens (name, token_hash, created_at) values ($1, $2, $3) returning id",
        )
        .bind(name)
        .bind(token.digest())
        .bind(now_millis())
        .fetch_one(&self.writer)
        .await?;
        self.durable().await?;
        Ok(id)
    }

    /// The token's name if it is known and not revoked.
    pub async fn authenticate(&self, token: &ApiToken) -> Result<Option<String>> {
        let row = sqlx::query(
            "select id, name from api_tokens where token_hash = $1 and revoked_at is null",
        )
        .bind(token.digest())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.try_get("id")?;
        // Coarse last-used stamp (once a minute at most) so audits can spot idle tokens
        // without a write on every request.
        let now = now_millis();
        sqlx::query("update api_tokens set last_used_at = $2 where id = $1 and (last_used_at is null or last_used_at < $3)")
            .bind(id)
            .bind(now)
            .bind(now - 60_000)
            .execute(&self.writer)
            .await?;
        self.durable().await?;
        Ok(Some(row.try_get("name")?))
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "select id, name, created_at, last_used_at, revoked_at from api_tokens order by id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                    revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
                })
            })
            .collect()
    }

    pub async fn revoke_token(&self, id: i64) -> Result<()> {
        let done = sqlx::query(
            "update api_tokens set revoked_at = $2 where id = $1 and revoked_at is null",
        )
        .bind(id)
        .bind(now_millis())
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
