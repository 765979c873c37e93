//! `phonebank demo`: one command, no account, no network. It never uses
//! `--database-url`/`DATABASE_URL` (a demo must not write into real data): `--db` and
//! `--postgres` choose its database.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::say;
use crate::demo::{self, DemoDatabase, DemoOptions};
use crate::simulator::Faults;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Synthetic members to generate (Ofcom drama numbers only).
    #[arg(long, default_value_t = 20_000)]
    members: usize,
    /// Simulated volunteers.
    #[arg(long, default_value_t = 50)]
    volunteers: usize,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 60.0)]
    time_scale: f64,
    /// Length of the simulated evening in hours, from 18:00 (calling ends at 20:30).
    #[arg(long, default_value_t = 2.5)]
    hours: f64,
    /// Chance that a dialled member picks up and talks (the rest are busy, voicemail,
    /// early hang-ups and no answer).
    #[arg(long, default_value_t = 0.45)]
    answer_rate: f64,
    /// Seed for the members and the people's behaviour.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Inject carrier faults: duplicated webhooks, reordered status callbacks, 429s
    /// from the REST API, slow REST answers.
    #[arg(long)]
    faults: bool,
    /// Keep the SQLite database in this file (default: a temporary file, removed).
    #[arg(long, conflicts_with = "postgres")]
    db: Option<PathBuf>,
    /// Run against this (empty) PostgreSQL database instead of SQLite.
    #[arg(long)]
    postgres: Option<String>,
    /// Server instances sharing the database (PostgreSQL only), behind one public URL.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// After the evening, leave the server running (Ctrl-C stops it) so you can explore
    /// the API; implies keeping the database.
    #[arg(long)]
    serve: bool,
    /// Where the server listens (with --serve the default is 127.0.0.1:8080).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Print the outcome as one JSON object on stdout instead of the report.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let database = match (&args.postgres, &args.db) {
        (Some(url), _) => DemoDatabase::Postgres(url.clone()),
        (None, Some(path)) => DemoDatabase::Sqlite(path.clone()),
        (None, None) if args.serve => DemoDatabase::Sqlite(PathBuf::from("phonebank-demo.db")),
        (None, None) => DemoDatabase::Temporary,
    };
    let bind = args.bind.unwrap_or_else(|| {
        if args.serve {
            SocketAddr::from(([127, 0, 0, 1], 8080))
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    });
    let behaviour = crate::simulator::Behaviour {
        answer: args.answer_rate,
        ..Default::default()
    };
    anyhow::ensure!(
        (0.0..=0.75).contains(&args.answer_rate),
        "--answer-rate must be between 0 and 0.75 (the rest is busy, voicemail, early hang-ups and no answer)"
    );
    let opts = DemoOptions {
        behaviour,
        database,
        members: args.members,
        volunteers: args.volunteers,
        time_scale: args.time_scale,
        hours: args.hours,
        seed: args.seed,
        faults: if args.faults {
            Faults::all()
        } else {
            Faults::default()
        },
        instances: args.instances,
        bind,
        interactive: !args.json,
        ..DemoOptions::default()
    };
    anyhow::ensure!(args.members > 0, "--members must be at least 1");
    anyhow::ensure!(args.volunteers > 0, "--volunteers must be at least 1");
    anyhow::ensure!(
        args.time_scale > 0.0 && args.time_scale <= 1000.0,
        "--time-scale must be above 0 and at most 1000"
    );
    anyhow::ensure!(
        args.hours > 0.0 && args.hours <= 12.0,
        "--hours must be above 0 and at most 12"
    );
    // Ctrl-C mid-evening: dropping the run removes its temporary database.
    let run = tokio::select! {
        run = demo::run(&opts) => run?,
        () = crate::http::shutdown_signal() => {
            eprintln!("interrupted: nothing kept");
            return Ok(ExitCode::from(130));
        }
    };
    let passed = run.outcome.passed();
    if args.json {
        say!("{}", serde_json::to_string(&run.outcome)?);
    } else {
        say!("{}", demo::render(&run.outcome));
    }
    if args.serve {
        eprintln!(
            "The server is still running at {} on {} (the simulated clock keeps running).\n\
             Try: curl -H 'Authorization: Bearer {}' {}/api/v1/campaigns/{}/report\n\
             Ctrl-C stops it.",
            run.outcome.base_url,
            run.outcome.database,
            run.outcome.api_token,
            run.outcome.base_url,
            run.outcome.campaign_id
        );
        crate::http::shutdown_signal().await;
    }
    run.shut_down().await;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
