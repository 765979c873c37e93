//! Member files: `member_id,name,phone,constituency` plus any extra columns, which are kept
//! as attributes (e.g. `membership` for targeting by member type).

use std::collections::HashMap;
use std::io::Read;

use phonenumber::country::Id as Region;
use tokio::sync::mpsc;

use super::{
    BATCH_SIZE, Header, ImportError, ImportReport, Rejected, Warning, csv_reader, field, strip_boms,
};
use crate::domain::PhoneNumber;
use crate::domain::text::control_character;
use crate::store::Store;
use crate::store::members::MemberRecord;
use crate::store::seats::SeatIndex;

const REQUIRED: [&str; 4] = ["member_id", "name", "phone", "constituency"];

/// Warnings are advisory, so the report keeps the first thousand and counts the rest
/// (`shared_phone_rows`); rejections, which lose data, are always listed in full.
const MAX_WARNINGS: usize = 1_000;

struct Batch {
    records: Vec<MemberRecord>,
    lines: Vec<u64>,
    rejected: Vec<Rejected>,
    warnings: Vec<Warning>,
}

/// What the import tells the organiser about a shared number (see README "Shared
/// numbers"): the number is the unit of contact, not the member.
pub const SHARED_NUMBER_WARNING: &str = "phone number is shared with another member; \
    it is never on two live calls at once, each member on it is still called in turn, \
    an opt-out from it covers them all, and SMS replies from it go to review";

/// How new members join the queues of running campaigns after an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueNew {
    /// Before the import returns: for a command that exits when done.
    Now,
    /// Within a couple of seconds, the rest in the background: for a request to a
    /// running server (a million-row file would otherwise hold the upload for minutes).
    /// Should the server stop first, its next start finishes the job.
    Background,
}

/// Import a member file. Re-importing the same file changes nothing; a member whose row
/// changed is updated in place (matched by `member_id`). New members join every active
/// campaign's queue as `queue` says.
pub async fn import_members<R: Read + Send + 'static>(
    store: &Store,
    input: R,
    region: Region,
    queue: QueueNew,
) -> Result<ImportReport, ImportError> {
    let seats = store.seat_index().await?;
    if seats.is_empty() {
        return Err(ImportError::NoSeats);
    }
    let (tx, mut rx) = mpsc::channel::<Batch>(2);
    let parser = tokio::task::spawn_blocking(move || parse(input, &seats, region, &tx));

    let mut report = ImportReport::default();
    while let Some(batch) = rx.recv().await {
        let (counts, shared) = store.upsert_members(&batch.records).await?;
        report.imported += counts.imported;
        report.updated += counts.updated;
        report.unchanged += counts.unchanged;
        report.rejected.extend(batch.rejected);
        let room = MAX_WARNINGS.saturating_sub(report.warnings.len());
        report
            .warnings
            .extend(batch.warnings.into_iter().take(room));
        report.shared_phone_rows += shared.len() as u64;
        if !shared.is_empty() {
            let line_of: HashMap<&str, u64> = batch
                .records
                .iter()
                .zip(&batch.lines)
                .map(|(r, l)| (r.external_id.as_str(), *l))
                .collect();
            for s in shared {
                if report.warnings.len() >= MAX_WARNINGS {
                    break;
                }
                report.warnings.push(Warning {
                    line: line_of.get(s.external_id.as_str()).copied().unwrap_or(0),
                    warning: SHARED_NUMBER_WARNING.into(),
                });
            }
        }
    }
    parser
        .await
        .map_err(|e| ImportError::Read(format!("parser stopped: {e}")))??;
    report.warnings.sort_by_key(|w| w.line);
    let now = crate::domain::now_millis();
    match queue {
        QueueNew::Now => {
            store.enqueue_active_campaigns(now).await?;
        }
        QueueNew::Background => store.start_active_queues(now).await?,
    }
    Ok(report)
}

/// Runs on a blocking thread: read, validate, and send batches.
fn parse<R: Read>(
    input: R,
    seats: &SeatIndex,
    region: Region,
    tx: &mpsc::Sender<Batch>,
) -> Result<(), ImportError> {
    let (mut reader, lines) = csv_reader(input);
    let header = Header::read(&mut reader)?;
    let cols = header.require(&REQUIRED)?;
    let (id_col, name_col, phone_col, seat_col) = (cols[0], cols[1], cols[2], cols[3]);
    let extra: Vec<(usize, String)> = header
        .names
        .iter()
        .enumerate()
        .filter(|(i, n)| !cols.contains(i) && !n.is_empty())
        .map(|(i, n)| (i, n.clone()))
        .collect();

    // First line each member id was seen on, to reject repeats within the file.
    let mut seen: HashMap<Box<str>, u64> = HashMap::new();
    let mut batch = new_batch();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // A broken quote or similar: report the line and carry on where the
                // reader can resynchronise.
                let line = lines.of(e.position());
                batch.rejected.push(Rejected {
                    line,
                    reason: format!("unreadable CSV: {e}"),
                });
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(ImportError::Read(e.to_string()));
                }
                continue;
            }
        }
        let line = lines.of(record.position());
        strip_boms(&mut record);
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue; // blank line
        }
        if header.is_repeated_by(&record) {
            batch.warnings.push(Warning {
                line,
                warning: "the header line is repeated here (two files joined?); skipped".into(),
            });
            continue;
        }
        match validate(
            &record,
            line,
            &header,
            (id_col, name_col, phone_col, seat_col),
            &extra,
            seats,
            region,
            &mut seen,
        ) {
            Ok(m) => {
                batch.records.push(m);
                batch.lines.push(line);
            }
            Err(reason) => batch.rejected.push(Rejected { line, reason }),
        }
        if batch.records.len() >= BATCH_SIZE {
            let full = std::mem::replace(&mut batch, new_batch());
            if tx.blocking_send(full).is_err() {
                return Ok(()); // the writer failed; it reports why
            }
        }
    }
    let _ = tx.blocking_send(batch);
    Ok(())
}

fn new_batch() -> Batch {
    Batch {
        records: Vec::with_capacity(BATCH_SIZE),
        lines: Vec::with_capacity(BATCH_SIZE),
        rejected: Vec::new(),
        warnings: Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn validate(
    record: &csv::ByteRecord,
    line: u64,
    header: &Header,
    (id_col, name_col, phone_col, seat_col): (usize, usize, usize, usize),
    extra: &[(usize, String)],
    seats: &SeatIndex,
    region: Region,
    seen: &mut HashMap<Box<str>, u64>,
) -> Result<MemberRecord, String> {
    if record.len() != header.names.len() {
        return Err(format!(
            "expected {} columns, found {}",
            header.names.len(),
            record.len()
        ));
    }
    // Names are spoken inside <Say> (XML 1.0 cannot carry most control characters) and
    // PostgreSQL cannot store NUL: refuse the row, not the file.
    let one_line = [id_col, name_col, phone_col, seat_col];
    for i in one_line.into_iter().chain(extra.iter().map(|(i, _)| *i)) {
        let Ok(text) = std::str::from_utf8(record.get(i).unwrap_or_default()) else {
            continue; // reported as not UTF-8 below
        };
        if let Some(reason) = control_character(text.trim(), !one_line.contains(&i)) {
            return Err(format!("{} {reason}", header.names[i]));
        }
    }
    let external_id = field(record, id_col)?;
    if external_id.is_empty() {
        return Err("member_id is empty".into());
    }
    if external_id.chars().count() > 64 {
        return Err("member_id is longer than 64 characters".into());
    }
    let name = field(record, name_col)?;
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.chars().count() > 200 {
        return Err("name is longer than 200 characters".into());
    }
    let phone = PhoneNumber::parse(field(record, phone_col)?, region).map_err(|e| e.to_string())?;
    let constituency = field(record, seat_col)?;
    if constituency.is_empty() {
        return Err("constituency is empty".into());
    }
    let seat_id = seats.find(constituency).ok_or_else(|| {
        format!("unknown constituency {constituency:?} (use the seat's code or exact name)")
    })?;
    let mut attributes = serde_json::Map::new();
    for (i, name) in extra {
        let value = field(record, *i)?;
        if !value.is_empty() {
            attributes.insert(name.clone(), serde_json::Value::String(value.to_owned()));
        }
    }
    // Checked last so that a bad row does not claim the id for a later good one.
    if let Some(first) = seen.get(external_id) {
        return Err(format!(
            "member_id {external_id:?} already appears on line {first}"
        ));
    }
    seen.insert(external_id.into(), line);
    Ok(MemberRecord {
        external_id: external_id.to_owned(),
        name: name.to_owned(),
        phone,
        seat_id,
        attributes: serde_json::Value::Object(attributes).to_string(),
    })
}
