//! `phonebank target`: the same targeting settings as the API, for organisers at a
//! terminal. Changes take effect at the next claim of every running server.

use std::collections::BTreeMap;
use std::process::ExitCode;

use super::say;
use crate::domain::targeting::{NonTargets, Targeting};
use crate::store::Store;
use crate::store::seats::SeatPatch;

#[derive(Debug, clap::Subcommand)]
pub enum TargetCommand {
    /// Set a seat's targeting (by ONS code). `0` clears a limit.
    Seat {
        code: String,
        /// Make it a target seat.
        #[arg(long, conflicts_with = "off")]
        on: bool,
        /// Stop targeting it.
        #[arg(long)]
        off: bool,
        /// Share of calls relative to other target seats.
        #[arg(long)]
        weight: Option<i64>,
        /// Attempts started per hour, sustained.
        #[arg(long)]
        rate_per_hour: Option<i64>,
        /// Attempts that may start at once before the hourly rate applies.
        #[arg(long)]
        burst: Option<i64>,
        /// Attempts per local day.
        #[arg(long)]
        daily_cap: Option<i64>,
    },
    /// Set how a campaign serves non-target seats and orders members.
    Campaign {
        id: i64,
        #[arg(long, value_parser = ["exclude", "fallback", "blend"])]
        non_targets: Option<String>,
        /// Member attribute that orders members within a seat (e.g. `membership`).
        #[arg(long)]
        attribute: Option<String>,
        /// `VALUE=WEIGHT`, repeatable (e.g. `--weight-of full=2 --weight-of supporter=1`).
        #[arg(long = "weight-of", value_parser = parse_weight)]
        weights: Vec<(String, i64)>,
    },
    /// Print the target seats and, with `--campaign`, the campaign's settings.
    Show {
        #[arg(long)]
        campaign: Option<i64>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_weight(s: &str) -> Result<(String, i64), String> {
    let (v, w) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected VALUE=WEIGHT, got {s:?}"))?;
    let w = w
        .trim()
        .parse()
        .map_err(|_| format!("weight in {s:?} is not a whole number"))?;
    Ok((v.trim().to_owned(), w))
}

fn fields(errors: Vec<crate::domain::FieldError>) -> anyhow::Error {
    let list: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    anyhow::anyhow!("{}", list.join("; "))
}

pub async fn run(store: &Store, cmd: TargetCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TargetCommand::Seat {
            code,
            on,
            off,
            weight,
            rate_per_hour,
            burst,
            daily_cap,
        } => {
            let patch = SeatPatch {
                is_target: if on {
                    Some(true)
                } else if off {
                    Some(false)
                } else {
                    None
                },
                weight,
                rate_per_hour,
                burst,
                daily_cap,
                time_zone: None,
            };
            patch.validate().map_err(fields)?;
            let seat = store
                .update_seat(&code, &patch)
                .await
                .map_err(|e| anyhow::anyhow!("seat {code}: {e}"))?;
            say!("{}", serde_json::to_string(&seat)?);
        }
        TargetCommand::Campaign {
            id,
            non_targets,
            attribute,
            weights,
        } => {
            let mut t = store
                .targeting(id)
                .await
                .map_err(|e| anyhow::anyhow!("campaign {id}: {e}"))?;
            if let Some(m) = non_targets.as_deref().and_then(NonTargets::parse) {
                t.non_targets = m;
            }
            if attribute.is_some() {
                t.attribute = attribute;
            }
            if !weights.is_empty() {
                t.attribute_weights = weights.into_iter().collect::<BTreeMap<_, _>>();
            }
            t.validate().map_err(fields)?;
            let saved = store.set_targeting(id, &t).await?;
            say!("{}", serde_json::to_string(&saved)?);
        }
        TargetCommand::Show { campaign, json } => {
            let seats = store.list_seats(true).await?;
            let t: Option<Targeting> = match campaign {
                Some(id) => Some(store.targeting(id).await?),
                None => None,
            };
            if json {
                say!(
                    "{}",
                    serde_json::json!({"target_seats": seats, "campaign_targeting": t})
                );
            } else {
                say!(
                    "{:<10} {:<40} {:>6} {:>9} {:>6} {:>9}",
                    "code",
                    "seat",
                    "weight",
                    "rate/hour",
                    "burst",
                    "daily cap"
                );
                let opt = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
                for s in &seats {
                    say!(
                        "{:<10} {:<40} {:>6} {:>9} {:>6} {:>9}",
                        s.code,
                        s.name.chars().take(40).collect::<String>(),
                        s.weight,
                        opt(s.rate_per_hour),
                        opt(s.burst),
                        opt(s.daily_cap)
                    );
                }
                if let Some(t) = t {
                    say!("non-target seats: {}", t.non_targets.as_str());
                    if let Some(a) = &t.attribute {
                        say!("members ordered by {a}: {:?}", t.attribute_weights);
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
