//! Texts: what a survey text says, what it costs in segments, and what a member's reply
//! means. Pure functions; the webhook and the sender call them.
//!
//! Segments follow GSM 03.38 / 03.40: a text that fits the GSM-7 alphabet costs one
//! segment up to 160 septets and 153 per segment when concatenated (the 6-byte header
//! takes the rest); the extension characters (`^ { } \ [ ~ ] | €` and form feed) take two
//! septets and an escape is never split across segments. One character outside the
//! alphabet (a curly apostrophe, an emoji) switches the whole text to UCS-2: 70 code units
//! single, 67 per segment, an emoji being two units (a surrogate pair, never split).

use serde::Serialize;
use utoipa::ToSchema;

use super::campaign::Question;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// What a text costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Segments {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    pub segments: usize,
}

/// The GSM 03.38 default alphabet (one septet each).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table (escape + one septet: two each).
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

fn gsm7_cost(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// How many segments `text` costs, and in which encoding.
pub fn segments(text: &str) -> Segments {
    let gsm: Option<Vec<usize>> = text.chars().map(gsm7_cost).collect();
    let (encoding, costs, single, multi) = match gsm {
        Some(costs) => (Encoding::Gsm7, costs, 160, 153),
        None => (
            Encoding::Ucs2,
            text.chars().map(char::len_utf16).collect(),
            70,
            67,
        ),
    };
    let units: usize = costs.iter().sum();
    if units <= single {
        return Segments {
            encoding,
            units,
            segments: 1,
        };
    }
    // Pack greedily; a character's units (an escape pair, a surrogate pair) stay together.
    let mut count = 1;
    let mut used = 0;
    for cost in costs {
        if used + cost > multi {
            count += 1;
            used = 0;
        }
        used += cost;
    }
    Segments {
        encoding,
        units,
        segments: count,
    }
}

/// The text a member receives for `question`: who is asking, the question, how to answer
/// and how to opt out. Options with SMS keywords offer the first keyword; every option
/// can be answered with its digit.
pub fn survey_text(campaign_name: &str, question: &Question) -> String {
    let choices: Vec<String> = question
        .options
        .iter()
        .map(|o| format!("{} for {}", o.digit, o.label.trim()))
        .collect();
    format!(
        "{}: {} Reply {}. Reply STOP to opt out.",
        campaign_name.trim(),
        question.text.trim(),
        choices.join(", ")
    )
}

/// A question as a text, and what it costs: shown to the organiser with the campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SmsPreview {
    /// The question's code.
    pub question: String,
    /// The text a member receives.
    pub text: String,
    pub encoding: Encoding,
    pub characters: usize,
    pub segments: usize,
}

/// Every question of a script as a survey text.
pub fn previews(campaign_name: &str, script: &super::campaign::Script) -> Vec<SmsPreview> {
    script
        .questions
        .iter()
        .map(|q| {
            let text = survey_text(campaign_name, q);
            let s = segments(&text);
            SmsPreview {
                question: q.code.clone(),
                characters: text.chars().count(),
                encoding: s.encoding,
                segments: s.segments,
                text,
            }
        })
        .collect()
}

/// What a reply to a survey text amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyMatch {
    /// Exactly one option: its code.
    Option(String),
    /// It names more than one option, or a number that is not one option's digit
    /// (`1 or 2`, `12`, `1.5`): kept for review, never guessed.
    Ambiguous,
    /// Nothing recognisable: kept for review.
    Unrecognised,
}

fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Match a reply against the question's options. The whole message (spaces, punctuation
/// and emoji around it ignored, any case) must be one option's digit, SMS keyword, label
/// or code; anything that mentions two options or an odd number is ambiguous.
pub fn match_reply(body: &str, question: &Question) -> ReplyMatch {
    let core = normalise(body.trim_matches(|c: char| !c.is_alphanumeric()));
    if core.is_empty() {
        return ReplyMatch::Unrecognised;
    }
    let names = |o: &super::campaign::AnswerOption| -> Vec<String> {
        let mut n = vec![
            o.digit.to_string(),
            normalise(&o.label),
            o.code.replace('_', " "),
        ];
        n.extend(o.sms_keywords.iter().map(|k| normalise(k)));
        n
    };
    let whole: Vec<&str> = question
        .options
        .iter()
        .filter(|o| names(o).contains(&core))
        .map(|o| o.code.as_str())
        .collect();
    match whole.as_slice() {
        [one] => return ReplyMatch::Option((*one).to_owned()),
        [] => {}
        _ => return ReplyMatch::Ambiguous,
    }
    // Not one option as a whole. Numbers and words that point at options make it
    // ambiguous (a person answering, unclearly); otherwise it is something else.
    if core.chars().any(|c| c.is_ascii_digit()) {
        return ReplyMatch::Ambiguous;
    }
    let mentioned = question
        .options
        .iter()
        .filter(|o| {
            let n = names(o);
            core.split(|c: char| !c.is_alphanumeric())
                .any(|w| !w.is_empty() && n.iter().any(|name| name == w))
        })
        .count();
    if mentioned > 0 {
        ReplyMatch::Ambiguous
    } else {
        ReplyMatch::Unrecognised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question() -> Question {
        serde_json::from_value(serde_json::json!(
            {"code": "support", "text": "Can we count on your vote?", "options": [
                {"digit": "1", "code": "yes", "label": "Yes", "sms_keywords": ["y", "yes"]},
                {"digit": "2", "code": "no", "label": "No", "sms_keywords": ["n", "no"]},
                {"digit": "3", "code": "not_sure", "label": "Not sure"}
            ]}
        ))
        .unwrap()
    }

    #[test]
    fn gsm7_limits_are_160_then_153() {
        let s = segments(&"a".repeat(160));
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Gsm7, 160, 1));
        assert_eq!(segments(&"a".repeat(161)).segments, 2);
        assert_eq!(segments(&"a".repeat(306)).segments, 2);
        assert_eq!(segments(&"a".repeat(307)).segments, 3);
        assert_eq!(segments("").segments, 1);
    }

    #[test]
    fn extension_characters_count_double_and_are_not_split() {
        let s = segments(&"€".repeat(80));
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Gsm7, 160, 1));
        assert_eq!(segments(&"€".repeat(81)).segments, 2);
        // 152 plain septets then one escape pair: the pair moves to the next segment.
        let text = format!("{}[{}", "a".repeat(152), "a".repeat(10));
        let s = segments(&text);
        assert_eq!((s.units, s.segments), (164, 2));
        let text = format!("{}{}", "a".repeat(152), "[".repeat(77));
        assert_eq!(segments(&text).segments, 3);
    }

    #[test]
    fn a_curly_apostrophe_or_an_emoji_switches_to_ucs2() {
        let plain = format!("Can't make it{}", "!".repeat(137));
        assert_eq!(segments(&plain).encoding, Encoding::Gsm7);
        assert_eq!(segments(&plain).segments, 1);
        let curly = plain.replace('\'', "\u{2019}");
        let s = segments(&curly);
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Ucs2, 150, 3));
        let s = segments(&"x".repeat(70));
        assert_eq!(s.encoding, Encoding::Gsm7);
        let s = segments(&format!("{}👍", "x".repeat(68)));
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Ucs2, 70, 1));
        let s = segments(&format!("{}👍", "x".repeat(69)));
        assert_eq!((s.units, s.segments), (71, 2));
        assert_eq!(segments(&"é".repeat(161)).encoding, Encoding::Gsm7);
        assert_eq!(
            segments("ç").encoding,
            Encoding::Ucs2,
            "only capital Ç is GSM-7"
        );
        // 66 units then an emoji: the surrogate pair is not split.
        let s = segments(&format!("{}👍{}", "x".repeat(66), "x".repeat(10)));
        assert_eq!((s.units, s.segments), (78, 2));
        assert_eq!(segments(&"ж".repeat(134)).segments, 2);
        assert_eq!(segments(&"ж".repeat(135)).segments, 3);
    }

    #[test]
    fn survey_text_names_the_campaign_and_the_choices() {
        let t = survey_text("Hendon Calls", &question());
        assert_eq!(
            t,
            "Hendon Calls: Can we count on your vote? Reply 1 for Yes, 2 for No, \
             3 for Not sure. Reply STOP to opt out."
        );
        assert_eq!(segments(&t).segments, 1);
    }

    #[test]
    fn clear_replies_are_the_right_option() {
        let q = question();
        for (body, code) in [
            ("Y", "yes"),
            ("yes 👍", "yes"),
            ("YES!!", "yes"),
            (" 1 ", "yes"),
            ("2.", "no"),
            ("(2)", "no"),
            ("No", "no"),
            ("n", "no"),
            ("3", "not_sure"),
            ("not   sure", "not_sure"),
            ("Not sure...", "not_sure"),
            ("👍 yes 👍", "yes"),
        ] {
            assert_eq!(
                match_reply(body, &q),
                ReplyMatch::Option(code.into()),
                "{body:?}"
            );
        }
    }

    #[test]
    fn unclear_replies_are_never_guessed() {
        let q = question();
        for body in [
            "1 or 2",
            "12",
            "1.5",
            "yes no",
            "4",
            "0",
            "yes and no",
            "2 please",
        ] {
            assert_eq!(match_reply(body, &q), ReplyMatch::Ambiguous, "{body:?}");
        }
        for body in ["", "👍", "who is this?", "maybe later", "...", "yesterday"] {
            assert_eq!(match_reply(body, &q), ReplyMatch::Unrecognised, "{body:?}");
        }
    }
}
