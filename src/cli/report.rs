//! `phonebank report --campaign ID`: per-seat progress as a table, CSV or JSON.

use std::process::ExitCode;

use super::say;
use crate::store::Store;
use crate::store::report::SeatProgress;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[arg(long)]
    campaign: i64,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

pub async fn run(store: &Store, args: ReportArgs) -> anyhow::Result<ExitCode> {
    let report = store
        .campaign_report(args.campaign)
        .await
        .map_err(|e| anyhow::anyhow!("campaign {}: {e}", args.campaign))?;
    match args.format {
        Format::Json => say!("{}", serde_json::to_string_pretty(&report)?),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(std::io::stdout());
            w.write_record([
                "code",
                "name",
                "target",
                "weight",
                "members",
                "opted_out",
                "attempts",
                "reached",
                "completed",
                "answers",
            ])?;
            for s in report.seats.iter().chain(std::iter::once(&report.totals)) {
                w.write_record([
                    s.code.clone(),
                    s.name.clone(),
                    s.is_target.to_string(),
                    s.weight.to_string(),
                    s.members.to_string(),
                    s.opted_out.to_string(),
                    s.attempts.to_string(),
                    s.reached.to_string(),
                    s.completed.to_string(),
                    answers_total(s).to_string(),
                ])?;
            }
            w.flush()?;
        }
        Format::Table => {
            say!(
                "{:<10} {:<40} {:>6} {:>8} {:>9} {:>8} {:>8} {:>9} {:>8}",
                "code",
                "seat",
                "target",
                "members",
                "opted out",
                "attempts",
                "reached",
                "completed",
                "answers"
            );
            for s in report.seats.iter().chain(std::iter::once(&report.totals)) {
                say!(
                    "{:<10} {:<40} {:>6} {:>8} {:>9} {:>8} {:>8} {:>9} {:>8}",
                    s.code,
                    s.name.chars().take(40).collect::<String>(),
                    if s.is_target { "yes" } else { "" },
                    s.members,
                    s.opted_out,
                    s.attempts,
                    s.reached,
                    s.completed,
                    answers_total(s)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn answers_total(s: &SeatProgress) -> i64 {
    s.answers.values().flat_map(|o| o.values()).sum()
}
