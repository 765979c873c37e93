//! The command line as a user runs it: the `phonebank` binary, its exit status and what
//! it prints.

mod common;

use std::process::{Command, Output};

fn phonebank(args: &[&str], database_url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phonebank"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run phonebank")
}

/// `migrate` creates a PostgreSQL database that does not exist yet, as its help says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_a_missing_postgres_database() {
    let Some((_, name, url)) = common::unused_postgres_database() else {
        return;
    };
    let out = phonebank(&["migrate"], &url);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("created the database"), "{stderr}");
    assert!(stderr.contains(&name), "{stderr}");
    // Usable, and a second run leaves it as it is.
    let store = phonebank::store::Store::connect_existing(Some(&url))
        .await
        .unwrap();
    assert_eq!(store.count_seats().await.unwrap(), 0);
    store.close().await;
    let again = phonebank(&["migrate"], &url);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && !stderr.contains("created"),
        "{stderr}"
    );
}

/// Every command is its own process: an in-memory database would lose a token or an
/// import the moment the command ends, so the CLI refuses one and says why.
#[test]
fn commands_refuse_an_in_memory_database() {
    for url in ["sqlite::memory:", "sqlite:file:x?mode=memory&cache=shared"] {
        for args in [
            &["token", "create", "--name", "me"][..],
            &["import", "seats"],
            &["migrate"],
            &["serve", "--bind", "127.0.0.1:0"],
        ] {
            let out = phonebank(args, url);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} on {url}: {stderr}");
            assert!(stderr.contains("in-memory SQLite database"), "{stderr}");
        }
    }
}
