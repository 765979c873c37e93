//! `phonebank import seats|members FILE`.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use phonenumber::country::Id as Region;

use super::say;
use crate::import::{
    BUNDLED_SEATS, ImportReport, Progress, QueueNew, import_members, import_seats,
};
use crate::store::Store;

/// Exit status when the file was read but some rows were rejected, so scripts can tell
/// "all good" from "look at the report".
const SOME_REJECTED: u8 = 3;

#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// Seats in the format of data/uk-constituencies-2024.csv. Without FILE, loads the
    /// bundled 2024 seat list. Targeting settings survive a re-import.
    Seats {
        file: Option<PathBuf>,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Members: member_id,name,phone,constituency (+ extra columns kept as attributes).
    /// Exit status 3 when some rows were rejected.
    Members {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(store: &Store, cmd: ImportCommand, region: Region) -> anyhow::Result<ExitCode> {
    let (report, json) = match cmd {
        ImportCommand::Seats { file: None, json } => (
            import_seats(store, std::io::Cursor::new(BUNDLED_SEATS.as_bytes())).await?,
            json,
        ),
        ImportCommand::Seats {
            file: Some(path),
            json,
        } => {
            let (reader, bar) = open(&path)?;
            let report = import_seats(store, reader).await?;
            bar.finish_and_clear();
            (report, json)
        }
        ImportCommand::Members { file, json } => {
            let (reader, bar) = open(&file)?;
            let report = import_members(store, reader, region, QueueNew::Now).await?;
            bar.finish_and_clear();
            (report, json)
        }
    };
    print(&report, json)?;
    Ok(if report.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(SOME_REJECTED)
    })
}

/// The file behind a progress bar that draws only on a terminal.
fn open(path: &PathBuf) -> anyhow::Result<(impl Read + Send + 'static, ProgressBar)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} [{bar:40}] {eta} left")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        )
    } else {
        ProgressBar::hidden()
    };
    Ok((
        Progress::new(
            std::io::BufReader::with_capacity(1 << 16, file),
            bar.clone(),
        ),
        bar,
    ))
}

fn print(report: &ImportReport, json: bool) -> anyhow::Result<()> {
    if json {
        say!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    say!(
        "imported {}, updated {}, unchanged {}, rejected {}",
        report.imported,
        report.updated,
        report.unchanged,
        report.rejected.len()
    );
    for r in &report.rejected {
        say!("  line {}: {}", r.line, r.reason);
    }
    for w in &report.warnings {
        say!("  line {} (imported): {}", w.line, w.warning);
    }
    Ok(())
}
