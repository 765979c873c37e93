//! The seat file: one row per Westminster constituency, in the format of
//! `data/uk-constituencies-2024.csv` (House of Commons Library results).

use std::io::Read;

use super::{Header, ImportError, ImportReport, Rejected, csv_reader, field};
use crate::domain::text::control_character;
use crate::store::Store;
use crate::store::seats::SeatRecord;

const REQUIRED: [&str; 4] = ["code", "name", "nation", "region"];
const NATIONS: [&str; 4] = ["England", "Scotland", "Wales", "Northern Ireland"];

/// Import or refresh seats. Organisers' targeting settings survive a re-import.
pub async fn import_seats<R: Read + Send + 'static>(
    store: &Store,
    input: R,
) -> Result<ImportReport, ImportError> {
    // 650 rows: parsing all of them first is simpler than streaming and costs nothing.
    let (records, rejected) = tokio::task::spawn_blocking(move || parse(input))
        .await
        .map_err(|e| ImportError::Read(format!("parser stopped: {e}")))??;
    let counts = store.upsert_seats(&records).await?;
    Ok(ImportReport {
        imported: counts.imported,
        updated: counts.updated,
        unchanged: counts.unchanged,
        rejected,
        warnings: Vec::new(),
        shared_phone_rows: 0,
    })
}

fn parse<R: Read>(input: R) -> Result<(Vec<SeatRecord>, Vec<Rejected>), ImportError> {
    let (mut reader, lines) = csv_reader(input);
    let header = Header::read(&mut reader)?;
    header.require(&REQUIRED)?;
    let col = |name: &str| header.position(name);
    let mut records: Vec<SeatRecord> = Vec::new();
    let mut first_line = std::collections::HashMap::new();
    let mut rejected = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = lines.of(e.position());
                rejected.push(Rejected {
                    line,
                    reason: format!("unreadable CSV: {e}"),
                });
                continue;
            }
        }
        let line = lines.of(record.position());
        super::strip_boms(&mut record);
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        let row = || -> Result<SeatRecord, String> {
            if record.len() != header.names.len() {
                return Err(format!(
                    "expected {} columns, found {}",
                    header.names.len(),
                    record.len()
                ));
            }
            let text = |name: &str| -> Result<Option<String>, String> {
                match col(name) {
                    Some(i) => {
                        let s = field(&record, i)?;
                        // Seat names are spoken to volunteers ("Alex from Hendon").
                        if let Some(reason) = control_character(s, false) {
                            return Err(format!("{name} {reason}"));
                        }
                        Ok((!s.is_empty()).then(|| s.to_owned()))
                    }
                    None => Ok(None),
                }
            };
            let number = |name: &str| -> Result<Option<i64>, String> {
                text(name)?
                    .map(|s| {
                        s.replace(',', "")
                            .parse::<i64>()
                            .map_err(|_| format!("{name} is not a whole number: {s:?}"))
                    })
                    .transpose()
            };
            let code = text("code")?.ok_or("code is empty")?.to_ascii_uppercase();
            if !is_ons_code(&code) {
                return Err(format!(
                    "code {code:?} is not an ONS constituency code (e.g. E14001234)"
                ));
            }
            let name = text("name")?.ok_or("name is empty")?;
            let nation = text("nation")?.ok_or("nation is empty")?;
            let nation = NATIONS
                .iter()
                .find(|n| n.eq_ignore_ascii_case(&nation))
                .ok_or_else(|| format!("nation {nation:?} is not one of {}", NATIONS.join(", ")))?
                .to_string();
            Ok(SeatRecord {
                code,
                name,
                region: text("region")?.unwrap_or_else(|| nation.clone()),
                nation,
                winner_2024: text("winner_2024")?,
                second_2024: text("second_2024")?,
                majority_2024: number("majority_2024")?,
                electorate_2024: number("electorate_2024")?,
                valid_votes_2024: number("valid_votes_2024")?,
            })
        };
        match row() {
            Ok(seat) => {
                let key = crate::store::seats::name_key(&seat.name);
                if let Some(first) = first_line.get(&seat.code).or_else(|| first_line.get(&key)) {
                    rejected.push(Rejected {
                        line,
                        reason: format!("seat {} already appears on line {first}", seat.code),
                    });
                } else {
                    first_line.insert(seat.code.clone(), line);
                    first_line.insert(key, line);
                    records.push(seat);
                }
            }
            Err(reason) => rejected.push(Rejected { line, reason }),
        }
    }
    Ok((records, rejected))
}

/// `E14001234`: a nation letter, two digits of entity type, six of serial.
fn is_ons_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 9
        && matches!(b[0], b'E' | b'W' | b'S' | b'N')
        && b[1..].iter().all(u8::is_ascii_digit)
}
