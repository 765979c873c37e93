//! CSV imports of seats and members, shared by the CLI and the HTTP upload.
//!
//! Files are streamed: a blocking thread reads and validates rows and hands batches over
//! a small bounded channel to the async writer, which commits one transaction per batch.
//! Memory stays bounded by the batch size (plus one small entry per member id, to spot
//! a member listed twice in the same file), whatever the file's length. Every rejected
//! row is reported with its line number (the header is line 1) and a reason; good rows
//! are imported regardless.

pub mod members;
pub mod seats;

/// The 650 Westminster seats of 2024, shipped with the binary (House of Commons Library,
/// Open Parliament Licence v3.0; see `data/SOURCES.md`).
pub const BUNDLED_SEATS: &str = include_str!("../../data/uk-constituencies-2024.csv");

use std::io::Read;

use serde::Serialize;
use utoipa::ToSchema;

pub use members::{QueueNew, import_members};
pub use seats::import_seats;

/// The summary printed by `--json` and returned by the upload endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImportReport {
    pub imported: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: Vec<Rejected>,
    /// Rows that were imported but need an organiser's eye (e.g. a shared number);
    /// at most the first 1,000.
    pub warnings: Vec<Warning>,
    /// Imported rows whose number another member also has (all of them, not capped).
    pub shared_phone_rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Rejected {
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Warning {
    pub line: u64,
    pub warning: String,
}

/// Problems with the file as a whole; nothing is imported when one of these occurs
/// before the first batch.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file is empty")]
    Empty,
    #[error("the header is missing required column(s): {0}")]
    MissingColumns(String),
    #[error("the header names column {0:?} twice")]
    DuplicateColumn(String),
    #[error("no seats are loaded yet: run `phonebank import seats` first")]
    NoSeats,
    #[error("could not read the file: {0}")]
    Read(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Rows per transaction: large enough to amortise the commit, small enough that a
/// batch of parsed rows is a few hundred kilobytes.
pub const BATCH_SIZE: usize = 2_000;

/// Column positions by header name (trimmed, case-insensitive, BOM stripped).
pub(crate) struct Header {
    pub names: Vec<String>,
}

impl Header {
    pub(crate) fn read<R: Read>(reader: &mut csv::Reader<R>) -> Result<Self, ImportError> {
        let record = reader
            .byte_headers()
            .map_err(|e| ImportError::Read(e.to_string()))?
            .clone();
        if record.is_empty() || record.iter().all(|f| f.is_empty()) {
            return Err(ImportError::Empty);
        }
        let mut names = Vec::with_capacity(record.len());
        for field in record.iter() {
            let name = String::from_utf8_lossy(field).replace(BOM_CHAR, "");
            let name = name.trim().to_lowercase();
            if !name.is_empty() && names.contains(&name) {
                return Err(ImportError::DuplicateColumn(name));
            }
            names.push(name);
        }
        Ok(Self { names })
    }

    /// Is this row the header again (after BOMs are stripped)? Two exports joined into
    /// one file repeat it mid-file.
    pub(crate) fn is_repeated_by(&self, record: &csv::ByteRecord) -> bool {
        record.len() == self.names.len()
            && record.iter().zip(&self.names).all(|(f, n)| {
                std::str::from_utf8(f).is_ok_and(|f| f.trim().eq_ignore_ascii_case(n))
            })
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub(crate) fn require(&self, required: &[&str]) -> Result<Vec<usize>, ImportError> {
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|r| self.position(r).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(ImportError::MissingColumns(missing.join(", ")));
        }
        Ok(required.iter().filter_map(|r| self.position(r)).collect())
    }
}

/// A CSV reader over `input`, and the means to give its records true line numbers.
pub(crate) fn csv_reader<R: Read>(input: R) -> (csv::Reader<LineCounter<R>>, Lines) {
    let lines = Lines::default();
    let counter = LineCounter {
        inner: input,
        offset: 0,
        line: 1,
        at_line_start: true,
        starts: lines.clone(),
    };
    let reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(counter);
    (reader, lines)
}

/// Line numbers as an editor shows them. The csv crate's own line count skips blank
/// lines and miscounts CRLF endings, and its record offsets point at the terminator that
/// ended the previous record. A report that names the wrong line is worse than none, so
/// the reader below notes where each non-blank line starts; a record is on the first
/// such line at or after its offset. Only line starts not yet passed are kept, so memory
/// is bounded by the CSV reader's read-ahead.
#[derive(Clone, Default)]
pub(crate) struct Lines(std::rc::Rc<std::cell::RefCell<std::collections::VecDeque<(u64, u64)>>>);

impl Lines {
    /// The 1-based line of the first non-blank line starting at or after `offset`.
    /// Offsets must not go backwards.
    pub(crate) fn line_at(&self, offset: u64) -> u64 {
        let mut starts = self.0.borrow_mut();
        while starts.len() > 1 && starts.front().is_some_and(|&(at, _)| at < offset) {
            starts.pop_front();
        }
        starts.front().map(|&(_, line)| line).unwrap_or(0)
    }

    pub(crate) fn of(&self, position: Option<&csv::Position>) -> u64 {
        position.map(|p| self.line_at(p.byte())).unwrap_or(0)
    }
}

pub(crate) struct LineCounter<R> {
    inner: R,
    offset: u64,
    line: u64,
    at_line_start: bool,
    starts: Lines,
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut starts = self.starts.0.borrow_mut();
        for (i, b) in buf[..n].iter().enumerate() {
            match b {
                b'\n' => {
                    self.line += 1;
                    self.at_line_start = true;
                }
                b'\r' => {}
                _ if self.at_line_start => {
                    starts.push_back((self.offset + i as u64, self.line));
                    self.at_line_start = false;
                }
                _ => {}
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Reports read progress to a progress bar by counting bytes.
pub struct Progress<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R> Progress<R> {
    pub fn new(inner: R, bar: indicatif::ProgressBar) -> Self {
        Self { inner, bar }
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

const BOM_CHAR: char = '\u{feff}';
const BOM: &[u8] = "\u{feff}".as_bytes();

/// Remove U+FEFF from every field. At the start of a file it is a byte-order mark (the
/// header reader drops it); anywhere else it is one from a second export joined onto the
/// first, or a zero-width no-break space nobody can see. Either way it is never part of
/// a value: left in, `\u{feff}A2` would be a different member id from `A2`.
pub(crate) fn strip_boms(record: &mut csv::ByteRecord) {
    let has_bom = |f: &[u8]| f.windows(BOM.len()).any(|w| w == BOM);
    if !has_bom(record.as_slice()) {
        return;
    }
    let mut clean = csv::ByteRecord::with_capacity(record.as_slice().len(), record.len());
    let mut buf = Vec::new();
    for f in record.iter() {
        buf.clear();
        let mut rest = f;
        while let Some(at) = rest.windows(BOM.len()).position(|w| w == BOM) {
            buf.extend_from_slice(&rest[..at]);
            rest = &rest[at + BOM.len()..];
        }
        buf.extend_from_slice(rest);
        clean.push_field(&buf);
    }
    clean.set_position(record.position().cloned());
    *record = clean;
}

/// A field as trimmed UTF-8, or the reason it is not.
pub(crate) fn field(record: &csv::ByteRecord, i: usize) -> Result<&str, String> {
    let bytes = record.get(i).unwrap_or_default();
    std::str::from_utf8(bytes).map(str::trim).map_err(|_| {
        format!(
            "column {} is not valid UTF-8 (save the file as UTF-8)",
            i + 1
        )
    })
}
