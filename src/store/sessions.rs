//! Volunteer call sessions (one per provider CallSid) and call-back requests.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Waiting for the PIN.
    Pin,
    /// PIN accepted; choosing a campaign.
    Choosing,
    Active,
    Ended,
}

impl SessionState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pin" => Self::Pin,
            "choosing" => Self::Choosing,
            "active" => Self::Active,
            "ended" => Self::Ended,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: i64,
    pub call_sid: String,
    pub volunteer_id: Option<i64>,
    pub campaign_id: Option<i64>,
    pub state: SessionState,
    pub pin_failures: i64,
    pub callback_id: Option<i64>,
}

fn session_from_row(r: &AnyRow) -> Result<Session> {
    let state: String = r.try_get("state")?;
    Ok(Session {
        id: r.try_get("id")?,
        call_sid: r.try_get("call_sid")?,
        volunteer_id: r.try_get("volunteer_id")?,
        campaign_id: r.try_get("campaign_id")?,
        state: SessionState::parse(&state)
            .ok_or_else(|| anyhow::anyhow!("unknown session state {state:?}"))?,
        pin_failures: r.try_get("pin_failures")?,
        callback_id: r.try_get("callback_id")?,
    })
}

const SESSION_COLUMNS: &str =
    "id, call_sid, volunteer_id, campaign_id, state, pin_failures, callback_id";

/// A request to ring a volunteer, as the API reports it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CallbackRequest {
    pub id: i64,
    pub volunteer_id: i64,
    pub campaign_id: Option<i64>,
    /// `pending` (being placed), `placed`, `failed` (the provider refused, or the
    /// volunteer did not answer), or `uncertain` (the provider's answer was lost: the call
    /// may be ringing; it is not retried, so nobody is rung twice).
    pub status: String,
    /// The provider's CallSid once placed.
    pub call_sid: Option<String>,
    /// The provider's error code, when it gave one.
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
}

impl Store {
    /// The session for a volunteer's call, created on the first webhook. A redelivered
    /// first webhook finds the same row.
    pub async fn open_session(
        &self,
        call_sid: &str,
        from_phone: &str,
        volunteer_id: i64,
        callback_id: Option<i64>,
        now: i64,
    ) -> Result<Session> {
        sqlx::query(
            "insert into volunteer_sessions (call_sid, from_phone, volunteer_id, callback_id, \
               created_at, updated_at) values ($1, $2, $3, $4, $5, $5) \
             on conflict (call_sid) do nothing",
        )
        .bind(call_sid)
        .bind(from_phone)
        .bind(volunteer_id)
        .bind(callback_id)
        .bind(now)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        self.session_by_call_sid(call_sid)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn session_by_call_sid(&self, call_sid: &str) -> Result<Option<Session>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {SESSION_COLUMNS} from volunteer_sessions where call_sid = $1"
        )))
        .bind(call_sid)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Count a wrong PIN; returns the session's failures so far.
    pub async fn record_pin_failure(&self, session_id: i64, now: i64) -> Result<i64> {
        let failures = sqlx::query_scalar(
            "update volunteer_sessions set pin_failures = pin_failures + 1, updated_at = $2 \
             where id = $1 returning pin_failures",
        )
        .bind(session_id)
        .bind(now)
        .fetch_one(&self.writer)
        .await?;
        self.durable().await?;
        Ok(failures)
    }

    /// Wrong PINs from this number across all its calls since `since`: the per-number
    /// limit holds across calls and instances.
    pub async fn pin_failures_since(&self, from_phone: &str, since: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "select cast(coalesce(sum(pin_failures), 0) as bigint) from volunteer_sessions \
             where from_phone = $1 and created_at >= $2",
        )
        .bind(from_phone)
        .bind(since)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Move a session forward (`pin` -> `choosing` -> `active`); the campaign is set
    /// when known.
    pub async fn advance_session(
        &self,
        session_id: i64,
        state: SessionState,
        campaign_id: Option<i64>,
        now: i64,
    ) -> Result<()> {
        let state = match state {
            SessionState::Pin => "pin",
            SessionState::Choosing => "choosing",
            SessionState::Active => "active",
            SessionState::Ended => "ended",
        };
        sqlx::query(
            "update volunteer_sessions set state = $2, \
               campaign_id = coalesce($3, campaign_id), updated_at = $4, \
               ended_at = case when $2 = 'ended' then $4 else ended_at end \
             where id = $1 and state <> 'ended'",
        )
        .bind(session_id)
        .bind(state)
        .bind(campaign_id)
        .bind(now)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// Record a request to ring a volunteer. With an idempotency key, a repeated request
    /// returns the first one instead of creating another (and so another call).
    pub async fn create_callback(
        &self,
        volunteer_id: i64,
        campaign_id: Option<i64>,
        idempotency_key: Option<&str>,
        now: i64,
    ) -> Result<(CallbackRequest, bool)> {
        if let Some(key) = idempotency_key
            && let Some(existing) = self.callback_by_key(key).await?
        {
            return Ok((existing, false));
        }
        let id: Option<i64> = sqlx::query_scalar(
            "insert into callback_requests (volunteer_id, campaign_id, idempotency_key, status, \
               created_at, updated_at) values ($1, $2, $3, 'pending', $4, $4) \
             on conflict (idempotency_key) do nothing returning id",
        )
        .bind(volunteer_id)
        .bind(campaign_id)
        .bind(idempotency_key)
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        self.durable().await?;
        match id {
            Some(id) => Ok((self.callback(id).await?, true)),
            // Lost a race with the same key.
            None => {
                let key = idempotency_key.unwrap_or_default();
                Ok((
                    self.callback_by_key(key)
                        .await?
                        .ok_or(StoreError::NotFound)?,
                    false,
                ))
            }
        }
    }

    pub async fn callback(&self, id: i64) -> Result<CallbackRequest> {
        let row = sqlx::query(
            "select id, volunteer_id, campaign_id, status, call_sid, error_code, error_message \
             from callback_requests where id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        callback_from_row(&row)
    }

    async fn callback_by_key(&self, key: &str) -> Result<Option<CallbackRequest>> {
        let row = sqlx::query(
            "select id, volunteer_id, campaign_id, status, call_sid, error_code, error_message \
             from callback_requests where idempotency_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(callback_from_row).transpose()
    }

    pub async fn callback_by_call_sid(&self, call_sid: &str) -> Result<Option<CallbackRequest>> {
        let row = sqlx::query(
            "select id, volunteer_id, campaign_id, status, call_sid, error_code, error_message \
             from callback_requests where call_sid = $1",
        )
        .bind(call_sid)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(callback_from_row).transpose()
    }

    /// Remove a call-back request that was never sent to the provider (still
    /// `pending`), so its idempotency key can be used again.
    pub async fn discard_pending_callback(&self, id: i64) -> Result<()> {
        sqlx::query("delete from callback_requests where id = $1 and status = 'pending'")
            .bind(id)
            .execute(&self.writer)
            .await?;
        self.durable().await?;
        Ok(())
    }

    pub async fn update_callback(
        &self,
        id: i64,
        status: &str,
        call_sid: Option<&str>,
        error_code: Option<i64>,
        error_message: Option<&str>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "update callback_requests set status = $2, call_sid = $3, error_code = $4, \
               error_message = $5, updated_at = $6 where id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(call_sid)
        .bind(error_code)
        .bind(error_message)
        .bind(now)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(())
    }
}

fn callback_from_row(r: &AnyRow) -> Result<CallbackRequest> {
    Ok(CallbackRequest {
        id: r.try_get("id")?,
        volunteer_id: r.try_get("volunteer_id")?,
        campaign_id: r.try_get("campaign_id")?,
        status: r.try_get("status")?,
        call_sid: r.try_get("call_sid")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
    })
}
