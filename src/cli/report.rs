//! `phonebank report --campaign ID [--weekly]`: per-seat progress, live figures and,
//! with `--weekly`, the same per ISO week, as a table, CSV or JSON.

use std::collections::BTreeSet;
use std::process::ExitCode;

use super::say;
use crate::store::Store;
use crate::store::report::{CampaignReport, ReportOptions, SeatProgress, SeatWeek};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[arg(long)]
    campaign: i64,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Per ISO week (Monday 00:00 Europe/London) instead of the whole campaign; JSON
    /// gets both.
    #[arg(long)]
    weekly: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

type Answers = std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>;

/// Every `question.option` answered anywhere in the report, for stable CSV columns.
fn answer_columns<'a>(all: impl Iterator<Item = &'a Answers>) -> Vec<(String, String)> {
    let mut cols = BTreeSet::new();
    for answers in all {
        for (q, opts) in answers {
            for o in opts.keys() {
                cols.insert((q.clone(), o.clone()));
            }
        }
    }
    cols.into_iter().collect()
}

fn answer_cells(answers: &Answers, cols: &[(String, String)]) -> Vec<String> {
    cols.iter()
        .map(|(q, o)| {
            answers
                .get(q)
                .and_then(|m| m.get(o))
                .copied()
                .unwrap_or(0)
                .to_string()
        })
        .collect()
}

pub async fn run(store: &Store, args: ReportArgs) -> anyhow::Result<ExitCode> {
    let report = store
        .campaign_report_with(
            args.campaign,
            ReportOptions {
                now: jiff::Timestamp::now(),
                weekly: args.weekly,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("campaign {}: {e}", args.campaign))?;
    match (args.format, args.weekly) {
        (Format::Json, _) => say!("{}", serde_json::to_string_pretty(&report)?),
        (Format::Csv, false) => seats_csv(&report)?,
        (Format::Csv, true) => weeks_csv(&report)?,
        (Format::Table, false) => {
            seats_table(&report)?;
            live_table(&report)?;
        }
        (Format::Table, true) => weeks_table(&report)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn seats_csv(report: &CampaignReport) -> anyhow::Result<()> {
    let rows = || report.seats.iter().chain(std::iter::once(&report.totals));
    let cols = answer_columns(rows().map(|s| &s.answers));
    let mut w = csv::Writer::from_writer(std::io::stdout());
    // The first ten columns are the original layout; new ones only ever go at the end.
    let mut header: Vec<String> = [
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
        "contacts",
        "remaining",
        "attempts_last_hour",
        "rate_per_hour",
    ]
    .map(String::from)
    .to_vec();
    header.extend(cols.iter().map(|(q, o)| format!("{q}.{o}")));
    w.write_record(&header)?;
    for s in rows() {
        let mut record = vec![
            s.code.clone(),
            s.name.clone(),
            s.is_target.to_string(),
            s.weight.to_string(),
            s.members.to_string(),
            s.opted_out.to_string(),
            s.attempts.to_string(),
            s.reached.to_string(),
            s.completed.to_string(),
            answers_total(&s.answers).to_string(),
            s.contacts.to_string(),
            s.remaining.to_string(),
            s.attempts_last_hour.to_string(),
            s.rate_per_hour.map(|r| r.to_string()).unwrap_or_default(),
        ];
        record.extend(answer_cells(&s.answers, &cols));
        w.write_record(&record)?;
    }
    w.flush()?;
    Ok(())
}

fn weeks_csv(report: &CampaignReport) -> anyhow::Result<()> {
    let weeks = report.weeks.as_deref().unwrap_or_default();
    let cols = answer_columns(
        weeks
            .iter()
            .flat_map(|w| w.seats.iter().chain(std::iter::once(&w.totals)))
            .map(|s| &s.answers),
    );
    let mut w = csv::Writer::from_writer(std::io::stdout());
    let mut header: Vec<String> = [
        "week",
        "starts_at",
        "code",
        "name",
        "attempts",
        "contacts",
        "reached",
        "answers",
    ]
    .map(String::from)
    .to_vec();
    header.extend(cols.iter().map(|(q, o)| format!("{q}.{o}")));
    w.write_record(&header)?;
    for week in weeks {
        for s in week.seats.iter().chain(std::iter::once(&week.totals)) {
            let mut record = vec![
                week.week.clone(),
                week.starts_at.clone(),
                s.code.clone(),
                s.name.clone(),
                s.attempts.to_string(),
                s.contacts.to_string(),
                s.reached.to_string(),
                answers_total(&s.answers).to_string(),
            ];
            record.extend(answer_cells(&s.answers, &cols));
            w.write_record(&record)?;
        }
    }
    w.flush()?;
    Ok(())
}

fn seats_table(report: &CampaignReport) -> std::io::Result<()> {
    say!(
        "{:<10} {:<32} {:>6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8}",
        "code",
        "seat",
        "target",
        "members",
        "opted out",
        "attempts",
        "contacts",
        "reached",
        "completed",
        "remaining",
        "last hour",
        "answers"
    );
    for s in report.seats.iter().chain(std::iter::once(&report.totals)) {
        say!(
            "{:<10} {:<32} {:>6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8}",
            s.code,
            s.name.chars().take(32).collect::<String>(),
            if s.is_target { "yes" } else { "" },
            s.members,
            s.opted_out,
            s.attempts,
            s.contacts,
            s.reached,
            s.completed,
            s.remaining,
            last_hour(s),
            answers_total(&s.answers)
        );
    }
    answers_block(&report.totals.answers)?;
    Ok(())
}

fn last_hour(s: &SeatProgress) -> String {
    match s.rate_per_hour {
        Some(limit) => format!("{}/{limit}", s.attempts_last_hour),
        None => s.attempts_last_hour.to_string(),
    }
}

fn answers_block(answers: &Answers) -> std::io::Result<()> {
    if answers.is_empty() {
        return Ok(());
    }
    say!("");
    say!("answers (all seats)");
    for (q, opts) in answers {
        let parts: Vec<String> = opts.iter().map(|(o, n)| format!("{o} {n}")).collect();
        say!("  {q}: {}", parts.join(", "));
    }
    Ok(())
}

fn live_table(report: &CampaignReport) -> std::io::Result<()> {
    let live = &report.live;
    let v = &live.volunteers;
    say!("");
    say!("live at {}", live.at);
    say!(
        "  volunteers: {} ({} waiting, {} on a call, {} keying answers)",
        v.total,
        v.waiting,
        v.on_call,
        v.keying
    );
    say!(
        "  calls per minute (last {} min): {:.1}; attempts in the last hour: {}",
        live.window_minutes,
        live.calls_per_minute,
        live.attempts_last_hour
    );
    match live.avg_wait_seconds {
        Some(s) => say!("  average wait between members (last hour): {s:.0} s"),
        None => say!("  average wait between members (last hour): -"),
    }
    Ok(())
}

fn weeks_table(report: &CampaignReport) -> std::io::Result<()> {
    let weeks = report.weeks.as_deref().unwrap_or_default();
    if weeks.is_empty() {
        say!("no calls yet");
        return Ok(());
    }
    for week in weeks {
        say!("{} (from {})", week.week, week.starts_at);
        say!(
            "  {:<10} {:<32} {:>8} {:>8} {:>8} {:>8}",
            "code",
            "seat",
            "attempts",
            "contacts",
            "reached",
            "answers"
        );
        for s in week.seats.iter().chain(std::iter::once(&week.totals)) {
            week_row(s)?;
        }
        say!("");
    }
    Ok(())
}

fn week_row(s: &SeatWeek) -> std::io::Result<()> {
    say!(
        "  {:<10} {:<32} {:>8} {:>8} {:>8} {:>8}",
        s.code,
        s.name.chars().take(32).collect::<String>(),
        s.attempts,
        s.contacts,
        s.reached,
        answers_total(&s.answers)
    );
    Ok(())
}

fn answers_total(answers: &Answers) -> i64 {
    answers.values().flat_map(|o| o.values()).sum()
}
