//! The `phonebank` command line. Each subcommand is a thin shell over the library.

mod demo;
mod import;
mod report;
mod target;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{DatabaseArgs, PhoneArgs, ServeArgs, Settings};
use crate::http::{self, AppState};
use crate::store::{Store, redact_url};

#[derive(Debug, Parser)]
#[command(
    name = "phonebank",
    version,
    about = "Phone-banking server: volunteers call members one at a time, numbers masked"
)]
struct Cli {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    phone: PhoneArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (organiser API, webhooks, health and metrics).
    Serve(ServeArgs),
    /// Run an evening of simulated volunteers and members against a real server on this
    /// machine (SQLite in a temporary file; no account, no network), then print the
    /// report and the guarantee checks. Exit status 1 if any check fails. It never uses
    /// --database-url / DATABASE_URL: choose its database with --db or --postgres.
    Demo(demo::DemoArgs),
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate,
    /// Import seats or members from CSV.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Create, list and revoke organiser API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Print a campaign's per-seat progress.
    Report(report::ReportArgs),
    /// Target seats (weights, per-seat rate limits) and a campaign's targeting.
    #[command(subcommand)]
    Target(target::TargetCommand),
    /// Print the organiser API's OpenAPI document (the same as /api/v1/openapi.json).
    Openapi,
}

/// glibc serves a large allocation with its own mapping only until the first such block
/// is freed; then it raises the threshold and keeps later ones in its heaps. Each PIN
/// check's argon2 needs a 19 MiB block, so a login storm left the server some 200 MiB
/// larger for good (BENCHMARKS.md). A fixed threshold keeps big blocks mapped on their
/// own, so they go back to the system when freed.
fn return_big_blocks_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Parse the command line, run the command, and turn the outcome into an exit status.
pub fn run() -> ExitCode {
    return_big_blocks_to_the_os();
    let cli = Cli::parse();
    // The demo's servers share the terminal with its progress line: only errors.
    init_tracing(if matches!(cli.command, Command::Demo(_)) {
        "error"
    } else {
        "info,sqlx=warn"
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, as `{:#}` prints them but without a cause that
/// only repeats what is already said (sqlx's errors print their source themselves).
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let url = cli.db.database_url.as_deref();
    // Each command is its own process, so an in-memory database would be gone (tokens,
    // imports) before the next one could use it.
    if url.is_some_and(|u| u.contains(":memory:") || u.contains("mode=memory"))
        && !matches!(cli.command, Command::Demo(_) | Command::Openapi)
    {
        anyhow::bail!(
            "an in-memory SQLite database lasts only as long as one command: \
             use a file (DATABASE_URL=sqlite:phonebank.db) or PostgreSQL"
        );
    }
    match cli.command {
        Command::Serve(args) => serve(url, Settings::new(&args, &cli.phone), args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Migrate => {
            if let Some(u) = url
                && Store::create_postgres_database(u.trim()).await?
            {
                eprintln!("created the database {}", redact_url(u.trim()));
            }
            let store = Store::connect(url).await?;
            eprintln!(
                "migrations applied: the database is up to date ({:?})",
                store.backend()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(cmd) => {
            import::run(&Store::connect(url).await?, cmd, cli.phone.default_region).await
        }
        Command::Token(cmd) => token::run(&Store::connect(url).await?, cmd).await,
        Command::Report(args) => report::run(&Store::connect_existing(url).await?, args).await,
        Command::Target(cmd) => target::run(&Store::connect(url).await?, cmd).await,
        Command::Openapi => {
            out(serde_json::to_string_pretty(&http::openapi_document())?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(url: Option<&str>, settings: Settings, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let shown = url
        .map(redact_url)
        .unwrap_or_else(|| format!("sqlite:{}", crate::store::DEFAULT_SQLITE_FILE));
    let store = Store::connect(url).await?;
    tracing::info!(database = %shown, backend = ?store.backend(), "database ready");
    if store.count_seats().await? == 0 {
        tracing::warn!(
            "no seats loaded yet: run `phonebank import seats` to load the 650 UK seats"
        );
    }
    if store.list_tokens().await?.iter().all(|t| t.revoked) {
        tracing::warn!(
            "no API token yet: run `phonebank token create --name <you>` to reach /api/v1"
        );
    }
    if args.public_url.is_none() {
        tracing::warn!(
            "PHONEBANK_PUBLIC_URL is not set: webhook signatures are checked against http://{}, \
             which only a provider on this machine can reach",
            args.bind
        );
    }
    if settings.auth_token.is_none() {
        tracing::warn!("TWILIO_AUTH_TOKEN is not set: every webhook will be refused (403)");
    }
    // Finish filling any queue a stopped process left half-filled (cheap when full).
    let refill = {
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = store
                .enqueue_active_campaigns(crate::domain::now_millis())
                .await
            {
                tracing::error!(error = %e, "filling the queues of active campaigns failed");
            }
        })
    };
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    let state = AppState::new(store.clone(), settings);
    let sweeper = crate::sweeper::spawn(state.clone(), std::time::Duration::from_secs(30));
    let limits =
        crate::limits::spawn_housekeeping(state.limits.clone(), std::time::Duration::from_secs(60));
    if state.rest.is_none() {
        tracing::warn!(
            "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN not set: calls and survey texts cannot be placed (503)"
        );
    }
    let sms = crate::sms_worker::spawn(
        state.clone(),
        state.settings.sms_per_second,
        std::time::Duration::from_secs(2),
    );
    http::serve(state, listener, http::shutdown_signal()).await?;
    sweeper.abort();
    refill.abort();
    limits.abort();
    sms.abort();
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `println!` that stops quietly when stdout is a closed pipe instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::out(format_args!($($arg)*))?
    };
}
pub(crate) use say;

/// Write a line to stdout. A reader that went away (`| head`) is not an error worth a
/// panic: the output is simply no longer wanted.
pub(crate) fn out(line: impl std::fmt::Display) -> std::io::Result<()> {
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Logs go to stderr (stdout is for `--json` output). `RUST_LOG` filters;
/// `PHONEBANK_LOG_FORMAT=json` gives one JSON object per line for log shippers.
fn init_tracing(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only for a person at a terminal, never into a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let json = std::env::var("PHONEBANK_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_that_repeats_the_message_is_said_once() {
        #[derive(Debug)]
        struct Echo(std::io::Error);
        impl std::fmt::Display for Echo {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "error returned from database: {}", self.0)
            }
        }
        impl std::error::Error for Echo {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Echo(std::io::Error::other("no such database")))
            .context("connecting to x");
        assert_eq!(
            super::error_chain(&e),
            "connecting to x: error returned from database: no such database"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::error_chain(&plain), "outer: inner");
    }
}
