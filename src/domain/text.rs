//! Free text that ends up spoken inside `<Say>` or sent as a text: names, script text,
//! labels. XML 1.0 cannot carry most C0 control characters, not even escaped (a TwiML
//! document holding one is refused by the provider and the caller is dropped), and
//! PostgreSQL cannot store NUL in `text`. So such characters are refused where text
//! enters (API, CSV imports), and the TwiML writer drops them as a last line of defence.

/// Characters an XML 1.0 document cannot contain: C0 controls other than tab, line feed
/// and carriage return, and the non-characters U+FFFE and U+FFFF. (Surrogates cannot
/// occur in a Rust `char`.)
pub fn is_xml_forbidden(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
}

/// For one-line text (a name, a label, a keyword): any C0 control character, tab and
/// line breaks included, and U+FFFE/U+FFFF.
pub fn is_forbidden_in_line(c: char) -> bool {
    c.is_ascii_control() && c != '\u{7F}' || is_xml_forbidden(c)
}

/// The reason `s` is refused, or `None`. `multiline` allows tab and line breaks (a
/// question's text); otherwise they are refused too (a name is one line).
pub fn control_character(s: &str, multiline: bool) -> Option<String> {
    let bad = if multiline {
        s.chars().find(|&c| is_xml_forbidden(c))
    } else {
        s.chars().find(|&c| is_forbidden_in_line(c))
    }?;
    Some(format!(
        "contains the control character U+{:04X}, which cannot be spoken or texted; remove it",
        bad as u32
    ))
}

/// `s` without the characters XML 1.0 cannot carry (for the TwiML writer).
pub fn xml_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(is_xml_forbidden) {
        s.chars()
            .filter(|&c| !is_xml_forbidden(c))
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c0_controls_and_non_characters_are_refused_tab_and_newlines_only_in_multiline_text() {
        for s in [
            "Ann\u{B}Smith",
            "Nu\u{0}l",
            "A\u{1}",
            "x\u{1F}",
            "x\u{FFFE}",
            "x\u{FFFF}",
        ] {
            assert!(control_character(s, true).is_some(), "{s:?}");
            assert!(control_character(s, false).is_some(), "{s:?}");
        }
        for s in ["Line one\nline two", "a\tb", "a\r\nb"] {
            assert_eq!(control_character(s, true), None, "{s:?}");
            assert!(control_character(s, false).is_some(), "{s:?}");
        }
        for s in [
            "Ann Smith",
            "Siân O’Brien",
            "Ynys Môn",
            "yes 👍",
            "\u{7F}\u{85}",
        ] {
            assert_eq!(control_character(s, false), None, "{s:?}");
        }
        assert!(
            control_character("a\u{B}", false)
                .unwrap()
                .contains("U+000B")
        );
    }

    #[test]
    fn xml_safe_drops_only_what_xml_cannot_carry() {
        assert_eq!(xml_safe("Ann\u{B}Smith\u{0}\u{FFFF}"), "AnnSmith");
        assert_eq!(xml_safe("a\tb\nc\rd é"), "a\tb\nc\rd é");
    }
}
