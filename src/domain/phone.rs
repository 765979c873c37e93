//! Phone numbers, parsed once at the edge into E.164.
//!
//! Policy (see `docs/ARCHITECTURE.md`, "Phone numbers"):
//!
//! * Input may carry the usual human and spreadsheet formatting: spaces (including
//!   non-breaking ones), dots, dashes, slashes, brackets, a `(0)` trunk digit after the
//!   country code, an international `00` prefix, or the country code with no `+`.
//! * Letters, extensions and anything that looks like scientific notation
//!   (`4.47701E+11`, the mark of a number that went through a spreadsheet) are rejected:
//!   the digits they carry are not trustworthy.
//! * The number must then be *valid* by libphonenumber's metadata for its region, with
//!   one exception: the twenty Ofcom drama blocks, which libphonenumber partly calls
//!   invalid but which we need for synthetic data. Everything else libphonenumber rejects
//!   (wrong length, unallocated prefix) cannot be a real line and is rejected.

use std::fmt;
use std::sync::LazyLock;

use phonenumber::country::Id as Region;
use regex::Regex;
use serde::{Serialize, Serializer};

/// The twenty Ofcom blocks reserved for drama (`../shared/data/ofcom-drama-numbers.md`).
static DRAMA: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^\+44(11[3-8]4960|1[2-6]14960|2079460|1914980|2896496|2920180|1632960|7700900|8081570|9098790|3069990)\d{3}$",
    )
    .expect("static regex")
});

/// A phone number in E.164 form (`+447700900123`).
///
/// `Debug` and `Display` mask all but the last three digits so that a number that slips
/// into a log line or an error message does not leak; call [`PhoneNumber::as_e164`] where
/// the full number is genuinely needed (the database, the provider's API).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

/// Why an input could not be read as a phone number. The messages are shown to
/// organisers in import reports and API errors, so they say what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error(
        "phone number looks like spreadsheet scientific notation (e.g. 4.47701E+11); re-export the column as text"
    )]
    ScientificNotation,
    #[error("phone number contains letters or other characters that are not part of a number")]
    Junk,
    #[error("phone numbers with an extension cannot be dialled by the bridge")]
    Extension,
    #[error("phone number has too few or too many digits")]
    Length,
    #[error("phone number is not a valid number for its country")]
    Invalid,
}

impl PhoneNumber {
    /// Parse human input, reading numbers without a country code as numbers of `region`.
    pub fn parse(input: &str, region: Region) -> Result<Self, PhoneError> {
        let cleaned = clean(input)?;
        for candidate in candidates(&cleaned, region) {
            if let Some(number) = validate(&candidate, region)? {
                return Ok(number);
            }
        }
        Err(PhoneError::Invalid)
    }

    /// Accept a number that is already E.164 (from our own database or a provider
    /// webhook). Still validated: the provider is outside our trust boundary.
    pub fn from_e164(input: &str) -> Result<Self, PhoneError> {
        if !input.starts_with('+') {
            return Err(PhoneError::Invalid);
        }
        Self::parse(input, Region::GB)
    }

    pub fn as_e164(&self) -> &str {
        &self.0
    }

    /// Is this one of Ofcom's fictional numbers?
    pub fn is_drama(&self) -> bool {
        DRAMA.is_match(&self.0)
    }

    /// All but the last three digits masked: `+44*******123`.
    pub fn masked(&self) -> String {
        let keep = self.0.len().saturating_sub(3);
        let (head, tail) = self.0.split_at(keep);
        let stars: String = head
            .chars()
            .enumerate()
            .map(|(i, c)| if i < 3 { c } else { '*' })
            .collect();
        format!("{stars}{tail}")
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for PhoneNumber {
    /// Serialised in full: only organiser-facing responses carry phone numbers.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Parse a region code such as `GB` or `us` for configuration.
pub fn parse_region(code: &str) -> Result<Region, String> {
    code.trim()
        .to_ascii_uppercase()
        .parse::<Region>()
        .map_err(|_| format!("unknown region code {code:?}; use an ISO 3166 code such as GB"))
}

/// Strip formatting, keeping `+` only as a leading sign. Rejects what must not be guessed at.
fn clean(input: &str) -> Result<String, PhoneError> {
    let trimmed = input.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if trimmed.is_empty() {
        return Err(PhoneError::Empty);
    }
    let lower = trimmed.to_ascii_lowercase();
    if lower.contains("e+") || lower.contains("e-") || (lower.contains('e') && lower.contains('.'))
    {
        return Err(PhoneError::ScientificNotation);
    }
    if lower.contains("ext") || lower.contains('x') || lower.contains('#') || lower.contains(';') {
        return Err(PhoneError::Extension);
    }
    // "+44 (0)7700 ..." and "(+44) 07700 ...": the trunk 0 after a country code is a
    // national habit, not a digit of the number.
    let trunkless = trimmed.replace("(0)", "");
    let mut out = String::with_capacity(trunkless.len());
    for c in trunkless.chars() {
        match c {
            '0'..='9' => out.push(c),
            '+' if out.is_empty() => out.push(c),
            ' ' | '.' | '-' | '/' | '(' | ')' | '\u{a0}' | '\u{202f}' | '\u{2007}' | '\t' => {}
            c if c.is_whitespace() => {}
            _ => return Err(PhoneError::Junk),
        }
    }
    let digits = out.trim_start_matches('+').len();
    if !(7..=15).contains(&digits) {
        return Err(PhoneError::Length);
    }
    if let Some(rest) = out.strip_prefix("00") {
        out = format!("+{rest}");
    }
    Ok(out)
}

/// Readings to try, most likely first. A bare `447700900123` is either a national number
/// of `region` or an international number that lost its `+`; try both.
fn candidates(cleaned: &str, region: Region) -> Vec<String> {
    let mut out = vec![cleaned.to_owned()];
    if !cleaned.starts_with('+') {
        let code = phonenumber::metadata::DATABASE
            .by_id(region.as_ref())
            .map(|m| m.country_code().to_string());
        if let Some(code) = code
            && cleaned.starts_with(&code)
            && !cleaned.starts_with('0')
        {
            out.push(format!("+{cleaned}"));
        }
    }
    // "+44 07700 900123" (the (+44) 07700 form after cleaning): drop the stray trunk 0.
    if let Some(national) = cleaned.strip_prefix("+440") {
        out.push(format!("+44{national}"));
    }
    out
}

fn validate(candidate: &str, region: Region) -> Result<Option<PhoneNumber>, PhoneError> {
    let Ok(parsed) = phonenumber::parse(Some(region), candidate) else {
        return Ok(None);
    };
    if parsed.extension().is_some() {
        return Err(PhoneError::Extension);
    }
    let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
    let number = PhoneNumber(e164);
    if parsed.is_valid() || number.is_drama() {
        Ok(Some(number))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gb(s: &str) -> Result<String, PhoneError> {
        PhoneNumber::parse(s, Region::GB).map(|p| p.as_e164().to_owned())
    }

    #[test]
    fn every_common_uk_format_normalises_to_the_same_e164() {
        for input in [
            "07700 900123",
            "07700900123",
            "+44 (0)7700 900123",
            "(+44) 07700 900123",
            "0044 7700 900123",
            "447700900123",
            "+447700900123",
            "07700\u{a0}900\u{a0}123",
            "07700.900.123",
            "0770-090-0123",
            "  07700 900123 ",
            "+44 7700 900 123",
        ] {
            assert_eq!(gb(input).as_deref(), Ok("+447700900123"), "input {input:?}");
        }
    }

    #[test]
    fn all_twenty_drama_blocks_are_accepted() {
        for national in [
            "0113 496 0500",
            "0114 496 0500",
            "0115 496 0500",
            "0116 496 0500",
            "0117 496 0500",
            "0118 496 0500",
            "0121 496 0500",
            "0131 496 0500",
            "0141 496 0500",
            "0151 496 0500",
            "0161 496 0500",
            "020 7946 0500",
            "0191 498 0500",
            "028 9649 6500",
            "029 2018 0500",
            "01632 960500",
            "07700 900500",
            "08081 570500",
            "0909 879 0500",
            "03069 990500",
        ] {
            let parsed = PhoneNumber::parse(national, Region::GB).expect(national);
            assert!(parsed.is_drama(), "{national} should be a drama number");
        }
    }

    #[test]
    fn junk_extensions_and_spreadsheet_damage_are_rejected_with_a_reason() {
        assert_eq!(gb("4.47701E+11"), Err(PhoneError::ScientificNotation));
        assert_eq!(gb("4.47701e11"), Err(PhoneError::ScientificNotation));
        assert_eq!(gb("07700 900123 ext 12"), Err(PhoneError::Extension));
        assert_eq!(gb("07700 900123 x12"), Err(PhoneError::Extension));
        assert_eq!(gb("0800 FLOWERS"), Err(PhoneError::Junk));
        assert_eq!(gb("call me"), Err(PhoneError::Junk));
        assert_eq!(gb(""), Err(PhoneError::Empty));
        assert_eq!(gb("   "), Err(PhoneError::Empty));
        assert_eq!(gb("123"), Err(PhoneError::Length));
        assert_eq!(gb("+44 7700 900123 4567 89"), Err(PhoneError::Length));
        assert_eq!(gb("07700 90012"), Err(PhoneError::Invalid));
        // Unallocated UK range (no real number can start 04).
        assert_eq!(gb("0400 000 0000"), Err(PhoneError::Invalid));
    }

    #[test]
    fn foreign_numbers_keep_their_country() {
        assert_eq!(gb("+1 415 555 2671").as_deref(), Ok("+14155552671"));
        let us = PhoneNumber::parse("(415) 555-2671", Region::US).unwrap();
        assert_eq!(us.as_e164(), "+14155552671");
    }

    #[test]
    fn display_and_debug_never_show_the_whole_number() {
        let n = PhoneNumber::parse("07700 900123", Region::GB).unwrap();
        assert_eq!(n.to_string(), "+44*******123");
        assert!(!format!("{n:?}").contains("7700900"));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = PhoneNumber::parse(&s, Region::GB);
        }

        #[test]
        fn e164_round_trips(suffix in 0u32..1000) {
            let n = PhoneNumber::parse(&format!("07700 900{suffix:03}"), Region::GB).unwrap();
            let again = PhoneNumber::from_e164(n.as_e164()).unwrap();
            proptest::prop_assert_eq!(n, again);
        }
    }
}
