//! Test support: a fresh database per test on each backend, and a macro that runs one
//! test body against SQLite and PostgreSQL as two named tests (`..::sqlite`,
//! `..::postgres`), so the output shows that both ran.
//!
//! PostgreSQL comes from `TEST_POSTGRES_URL` (a superuser URL such as
//! `postgres://postgres@127.0.0.1/postgres`): each test creates its own database named
//! `pbtest_<run>_<random>` (the run named by `scripts/test.sh`). Without the variable the PostgreSQL tests say so and pass, unless
//! `PHONEBANK_REQUIRE_POSTGRES=1` (set by `.ci/run`), in which case they fail: CI never
//! skips them silently.

#![allow(dead_code)]

pub mod app;
pub mod bank;
pub mod phone;

use phonebank::store::Store;

/// A directory for one test's files that outlives the test (a `Store` may still be
/// open when it ends): under cargo's own `target/tmp`, never the system's /tmp, and
/// removed by `scripts/test.sh` after the run.
pub fn test_dir() -> std::path::PathBuf {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pbtest");
    std::fs::create_dir_all(&base).expect("test dir");
    tempfile::tempdir_in(base).expect("temp dir").keep()
}

pub async fn sqlite() -> Store {
    let path = test_dir().join("test.db");
    Store::connect(Some(&format!("sqlite:{}", path.display())))
        .await
        .expect("open SQLite")
}

pub async fn postgres() -> Option<Store> {
    postgres_url().await.map(|(store, _)| store)
}

/// A fresh PostgreSQL test database and its URL, so a test can open a second `Store`
/// on it (two server instances sharing one database).
pub async fn postgres_url() -> Option<(Store, String)> {
    let (admin_url, name, url) = unused_postgres_database()?;
    let admin = Store::connect_without_migrating(Some(&admin_url))
        .await
        .expect("connect to TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(admin.pool())
        .await
        .expect("create test database");
    admin.close().await;
    let store = Store::connect(Some(&url))
        .await
        .expect("open test database");
    Some((store, url))
}

/// The admin URL, and the name and URL of a PostgreSQL test database not created yet,
/// or `None` when PostgreSQL tests are not run (see the module's header).
pub fn unused_postgres_database() -> Option<(String, String, String)> {
    let Ok(admin_url) = std::env::var("TEST_POSTGRES_URL") else {
        if std::env::var("PHONEBANK_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
            panic!("PHONEBANK_REQUIRE_POSTGRES=1 but TEST_POSTGRES_URL is not set");
        }
        eprintln!("TEST_POSTGRES_URL not set: PostgreSQL leg not run");
        return None;
    };
    // scripts/test.sh names its run, so it drops only its own databases afterwards.
    let name = match std::env::var("PHONEBANK_TEST_RUN") {
        Ok(run) if !run.is_empty() && run.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!("pbtest_{run}_{}", random_suffix())
        }
        _ => format!("pbtest_{}", random_suffix()),
    };
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) if base.contains("://") && base.matches('/').count() >= 2 => {
            format!("{base}/{name}")
        }
        _ => format!("{admin_url}/{name}"),
    };
    Some((admin_url, name, url))
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `both_backends! { async fn name(store) { ... } }` becomes `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($store:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($store: phonebank::store::Store) $body
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run($crate::common::sqlite().await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(store) = $crate::common::postgres().await {
                        run(store).await
                    }
                }
            }
        )*
    };
}

/// The shipped seat file.
pub const SEATS_CSV: &str = include_str!("../../data/uk-constituencies-2024.csv");

pub async fn load_seats(store: &Store) {
    phonebank::import::import_seats(store, std::io::Cursor::new(SEATS_CSV.as_bytes()))
        .await
        .expect("seat import");
}

pub async fn import_members_str(store: &Store, csv: &str) -> phonebank::import::ImportReport {
    phonebank::import::import_members(
        store,
        std::io::Cursor::new(csv.as_bytes().to_vec()),
        phonenumber::country::Id::GB,
        phonebank::import::QueueNew::Now,
    )
    .await
    .expect("member import")
}
