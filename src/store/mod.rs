//! Persistence on SQLite (embedded default) or PostgreSQL (several instances, one database).
//!
//! One [`Store`] over sqlx's `Any` driver. The schema is deliberately portable (bigint
//! ids, unix-millisecond instants, text JSON, 0/1 flags, `$N` placeholders), so almost
//! every statement is the same text on both engines and lives once, next to its purpose,
//! in the submodules below. Where the engines genuinely differ (locking for the claim,
//! transaction modes) the code branches on [`Backend`] at that spot. See
//! `docs/ARCHITECTURE.md` for why this beats two copies of every query.

pub mod calls;
pub mod campaigns;
pub mod claim;
mod durable;
pub mod members;
pub mod report;
pub mod seats;
pub mod sessions;
pub mod sms;
pub mod suppressions;
pub mod targeting;
pub mod tokens;
pub mod volunteers;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The file used when `DATABASE_URL` is unset.
pub const DEFAULT_SQLITE_FILE: &str = "phonebank.db";

/// A write transaction. Its commit returns once the write is durable (see
/// [`durable`](self::durable) for SQLite's group commit).
pub struct Tx {
    inner: sqlx::Transaction<'static, sqlx::Any>,
    wal: Option<std::sync::Arc<durable::WalSync>>,
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Tx {
    pub async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        self.inner.commit().await?;
        match self.wal {
            Some(wal) => wal.durable().await.map_err(sqlx::Error::Io),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors callers act on; everything else is `Other` and becomes a 500 at the HTTP edge.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or foreign-key rule refused the write; the string names the rule.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Self::NotFound,
            e => Self::Other(e.into()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Other(e.into())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Map a unique-violation to [`StoreError::Conflict`] at the call site, as realworld's
/// `on_constraint` does: the caller knows what the constraint means to a user.
pub(crate) trait ResultExt<T> {
    fn on_unique(self, what: &'static str) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn on_unique(self, what: &'static str) -> Result<T> {
        self.map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
            _ => e.into(),
        })
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Where writes go. On SQLite a pool of one connection: writers queue here, in
    /// order, instead of sleeping in SQLite's busy handler (naps of up to 100 ms) while
    /// another connection holds the one write lock. On PostgreSQL the same pool.
    writer: AnyPool,
    /// SQLite's group commit; `None` on PostgreSQL (its own commit waits for the WAL
    /// flush) and for an in-memory database.
    wal: Option<std::sync::Arc<durable::WalSync>>,
    backend: Backend,
    zones: std::sync::Arc<claim::ZoneCache>,
    /// An in-memory database's own connection, never used: it keeps the database alive.
    _keeper: Option<std::sync::Arc<std::sync::Mutex<sqlx::AnyConnection>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

/// Which engine a `DATABASE_URL` names, if either.
fn backend_of(url: &str) -> Option<Backend> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Some(Backend::Sqlite)
    } else {
        None
    }
}

/// A database URL with any password hidden when printed.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        // The last '@': a password may hold an unescaped one.
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:****@{host}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl Store {
    /// Connect and bring the schema up to date. `None` means the default SQLite file in
    /// the working directory, created on first use.
    pub async fn connect(url: Option<&str>) -> anyhow::Result<Self> {
        let store = Self::connect_without_migrating(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn connect_without_migrating(url: Option<&str>) -> anyhow::Result<Self> {
        Self::open(url, true).await
    }

    /// Connect to a database that must already exist (commands that only read): a
    /// missing SQLite file is an error, not a new empty database.
    pub async fn connect_existing(url: Option<&str>) -> anyhow::Result<Self> {
        let store = Self::open(url, false).await?;
        store.migrate().await?;
        Ok(store)
    }

    async fn open(url: Option<&str>, create: bool) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        sqlx::any::install_default_drivers();
        let url = match url {
            Some(u) if !u.trim().is_empty() => u.trim().to_owned(),
            _ => format!("sqlite:{DEFAULT_SQLITE_FILE}"),
        };
        let Some(backend) = backend_of(&url) else {
            anyhow::bail!(
                "DATABASE_URL must start with sqlite: or postgres:// (got {})",
                redact_url(&url)
            );
        };
        let url = match backend {
            // Create the file on first start, unless it must exist.
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                let mode = if create { "rwc" } else { "rw" };
                format!("{url}{sep}mode={mode}")
            }
            // sqlx names `:memory:` afresh for every connection through the Any driver
            // (each would be an empty database of its own): one name for this store.
            Backend::Sqlite if url.contains(":memory:") => format!(
                "sqlite:file:phonebank-memory-{:016x}?mode=memory",
                rand::random::<u64>()
            ),
            _ => url,
        };
        let options = AnyConnectOptions::from_str(&url)
            .with_context(|| format!("parsing DATABASE_URL {}", redact_url(&url)))?;
        let missing = || {
            format!(
                "no database at {}: set DATABASE_URL, or create it with `phonebank import` or `phonebank serve`",
                redact_url(&url)
            )
        };
        let connecting = || {
            if create || backend == Backend::Postgres {
                format!("connecting to {}", redact_url(&url))
            } else {
                missing()
            }
        };
        // SQLite's own answer for the database's file, so every URL form works: group
        // commit syncs that file's WAL. An in-memory database has no file, and lives
        // while any connection to it is open: this one is kept for the life of the
        // store, so a pooled connection dropped mid-request (a client that hangs up)
        // never takes the data with it.
        let mut keeper = None;
        let file = match backend {
            Backend::Sqlite => {
                use sqlx::Connection as _;
                let mut conn = sqlx::AnyConnection::connect_with(&options)
                    .await
                    .with_context(connecting)?;
                let file: Option<String> =
                    sqlx::query_scalar("select file from pragma_database_list where name = 'main'")
                        .fetch_optional(&mut conn)
                        .await?;
                let file = file.filter(|f| !f.is_empty());
                if file.is_some() {
                    conn.close().await?;
                } else {
                    keeper = Some(std::sync::Arc::new(std::sync::Mutex::new(conn)));
                }
                file
            }
            Backend::Postgres => None,
        };
        let (pool, writer, wal) = match (backend, file) {
            (Backend::Postgres, _) => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .with_context(connecting)?;
                (pool.clone(), pool, None)
            }
            (Backend::Sqlite, Some(file)) => {
                let pool = sqlite_pool(false)
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options.clone())
                    .await
                    .with_context(connecting)?;
                let writer = sqlite_pool(true)
                    .max_connections(1)
                    // Writers wait their turn here; a request gives up at its own timeout.
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await
                    .with_context(connecting)?;
                let wal = std::sync::Arc::new(durable::WalSync::new(&file));
                (pool, writer, Some(wal))
            }
            // An in-memory database: one connection does the reads and the writes (a
            // shared cache locks whole tables, so more would fail rather than wait).
            (Backend::Sqlite, None) => {
                let pool = sqlite_pool(false)
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await
                    .with_context(connecting)?;
                (pool.clone(), pool, None)
            }
        };
        Ok(Self {
            pool,
            writer,
            wal,
            backend,
            zones: Default::default(),
            _keeper: keeper,
        })
    }

    /// For `phonebank migrate`: create a PostgreSQL database that does not exist yet
    /// (connecting to the server's maintenance database with the same credentials).
    /// True if it was created. SQLite files are created by [`Store::connect`] anyway.
    pub async fn create_postgres_database(url: &str) -> anyhow::Result<bool> {
        use anyhow::Context as _;
        use sqlx::migrate::MigrateDatabase as _;
        if backend_of(url) != Some(Backend::Postgres) {
            return Ok(false);
        }
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        if sqlx::Any::database_exists(url)
            .await
            .with_context(|| format!("connecting to {shown}"))?
        {
            return Ok(false);
        }
        sqlx::Any::create_database(url)
            .await
            .with_context(|| format!("creating the database {shown}"))?;
        Ok(true)
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator.run(&self.writer).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes fails with
    /// SQLITE_BUSY under contention instead of waiting.
    pub async fn begin_write(&self) -> Result<Tx> {
        let inner = match self.backend {
            Backend::Sqlite => self.writer.begin_with("begin immediate").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx {
            inner,
            wal: self.wal.clone(),
        })
    }

    /// After a write outside a transaction (on `self.writer`): returns once it is
    /// durable. A no-op on PostgreSQL.
    pub(crate) async fn durable(&self) -> Result<()> {
        if let Some(wal) = &self.wal {
            wal.durable()
                .await
                .map_err(|e| StoreError::Other(e.into()))?;
        }
        Ok(())
    }

    /// Cheap round trip for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Connections to SQLite. WAL lets readers run beside the single writer. The writer's
/// `synchronous` is NORMAL when [`durable`] syncs the WAL before a write is
/// acknowledged (group commit), FULL otherwise: either way "no answer lost" holds across
/// a power cut, not just a process crash. The busy timeout covers another process on
/// the same file.
fn sqlite_pool(group_commit: bool) -> AnyPoolOptions {
    AnyPoolOptions::new().after_connect(move |conn, _| {
        Box::pin(async move {
            conn.execute(if group_commit {
                "pragma journal_mode = wal; pragma synchronous = normal; \
                 pragma busy_timeout = 10000; pragma foreign_keys = on;"
            } else {
                "pragma journal_mode = wal; pragma synchronous = full; \
                 pragma busy_timeout = 10000; pragma foreign_keys = on;"
            })
            .await?;
            Ok(())
        })
    })
}

/// A `select` of the integers in a JSON array parameter (`param` is `$N`), for
/// `... in (...)` over a list bound as one value.
pub(crate) fn json_list_int(backend: Backend, param: &str) -> String {
    match backend {
        Backend::Sqlite => format!("select value from json_each({param})"),
        Backend::Postgres => {
            format!("select cast(json_array_elements_text({param}::json) as bigint)")
        }
    }
}

/// Flags are stored as 0/1 on both engines.
pub(crate) fn flag(b: bool) -> i64 {
    i64::from(b)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_password_is_hidden_and_nothing_else_is_invented() {
        assert_eq!(
            redact_url("postgres://pb:s3cret@db.example.org/pb"),
            "postgres://pb:****@db.example.org/pb"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/pb"),
            "postgres://postgres@127.0.0.1:5432/pb"
        );
        assert_eq!(
            redact_url("postgres://pb:p@ss:w/rd@db/pb"),
            "postgres://pb:****@db/pb"
        );
        assert_eq!(redact_url("sqlite:phonebank.db"), "sqlite:phonebank.db");
    }
}
