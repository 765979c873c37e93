//! TwiML responses, written with quick-xml so every text and attribute is escaped.
//!
//! Only the verbs the server uses. Builders keep call sites short:
//! `Twiml::new().say("Hello").redirect(url)`.

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use crate::domain::text::xml_safe;

/// A TwiML document under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Twiml {
    verbs: Vec<Verb>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    Say(String),
    Pause(u32),
    Gather(Gather),
    Dial(Dial),
    Redirect(String),
    Hangup,
    Reject,
    Message(String),
}

/// `<Gather>` for keypad input. Prompts nested inside are interrupted by the first key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gather {
    pub action: String,
    pub num_digits: Option<u32>,
    pub timeout: u32,
    /// `None` disables the finish key, so `#` and `*` can be gathered as digits.
    pub finish_on_key: Option<char>,
    pub prompts: Vec<Verb>,
}

/// `<Dial>` of one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    pub number: String,
    pub caller_id: String,
    pub action: String,
    pub timeout: u32,
    pub time_limit: u32,
    pub hangup_on_star: bool,
    pub status_callback: String,
}

impl Gather {
    pub fn keys(action: impl Into<String>, num_digits: u32) -> Self {
        Self {
            action: action.into(),
            num_digits: Some(num_digits),
            timeout: 8,
            finish_on_key: Some('#'),
            prompts: Vec::new(),
        }
    }

    pub fn say(mut self, text: impl Into<String>) -> Self {
        self.prompts.push(Verb::Say(text.into()));
        self
    }

    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = seconds;
        self
    }

    pub fn no_finish_key(mut self) -> Self {
        self.finish_on_key = None;
        self
    }
}

impl Twiml {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn say(mut self, text: impl Into<String>) -> Self {
        self.verbs.push(Verb::Say(text.into()));
        self
    }

    pub fn pause(mut self, seconds: u32) -> Self {
        self.verbs.push(Verb::Pause(seconds));
        self
    }

    pub fn gather(mut self, g: Gather) -> Self {
        self.verbs.push(Verb::Gather(g));
        self
    }

    pub fn dial(mut self, d: Dial) -> Self {
        self.verbs.push(Verb::Dial(d));
        self
    }

    pub fn redirect(mut self, url: impl Into<String>) -> Self {
        self.verbs.push(Verb::Redirect(url.into()));
        self
    }

    pub fn hangup(mut self) -> Self {
        self.verbs.push(Verb::Hangup);
        self
    }

    pub fn reject(mut self) -> Self {
        self.verbs.push(Verb::Reject);
        self
    }

    pub fn message(mut self, text: impl Into<String>) -> Self {
        self.verbs.push(Verb::Message(text.into()));
        self
    }

    pub fn verbs(&self) -> &[Verb] {
        &self.verbs
    }

    pub fn render(&self) -> String {
        let mut w = Writer::new(Vec::with_capacity(512));
        // Writing to a Vec cannot fail.
        let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        if self.verbs.is_empty() {
            let _ = w.write_event(Event::Empty(BytesStart::new("Response")));
        } else {
            let _ = w.write_event(Event::Start(BytesStart::new("Response")));
            for v in &self.verbs {
                write_verb(&mut w, v);
            }
            let _ = w.write_event(Event::End(BytesEnd::new("Response")));
        }
        String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
    }
}

/// Escaping is not enough for XML 1.0: most C0 control characters may not appear even
/// as character references, and a provider drops the call on such a document. Input is
/// checked where it enters; this drops whatever still gets here (text and attributes).
fn text_element(w: &mut Writer<Vec<u8>>, start: BytesStart<'_>, text: &str) {
    let name = start.name().as_ref().to_vec();
    let _ = w.write_event(Event::Start(start));
    let _ = w.write_event(Event::Text(BytesText::new(&xml_safe(text))));
    let _ = w.write_event(Event::End(BytesEnd::new(
        String::from_utf8_lossy(&name).into_owned(),
    )));
}

fn write_verb(w: &mut Writer<Vec<u8>>, verb: &Verb) {
    match verb {
        Verb::Say(text) => {
            let mut s = BytesStart::new("Say");
            s.push_attribute(("language", "en-GB"));
            text_element(w, s, text);
        }
        Verb::Pause(n) => {
            let mut s = BytesStart::new("Pause");
            s.push_attribute(("length", n.to_string().as_str()));
            let _ = w.write_event(Event::Empty(s));
        }
        Verb::Gather(g) => {
            let mut s = BytesStart::new("Gather");
            s.push_attribute(("action", xml_safe(g.action.as_str()).as_ref()));
            s.push_attribute(("method", "POST"));
            s.push_attribute(("input", "dtmf"));
            if let Some(n) = g.num_digits {
                s.push_attribute(("numDigits", n.to_string().as_str()));
            }
            s.push_attribute(("timeout", g.timeout.to_string().as_str()));
            let finish = g.finish_on_key.map(String::from).unwrap_or_default();
            s.push_attribute(("finishOnKey", finish.as_str()));
            if g.prompts.is_empty() {
                let _ = w.write_event(Event::Empty(s));
            } else {
                let _ = w.write_event(Event::Start(s));
                for p in &g.prompts {
                    write_verb(w, p);
                }
                let _ = w.write_event(Event::End(BytesEnd::new("Gather")));
            }
        }
        Verb::Dial(d) => {
            let mut s = BytesStart::new("Dial");
            s.push_attribute(("action", xml_safe(d.action.as_str()).as_ref()));
            s.push_attribute(("method", "POST"));
            s.push_attribute(("callerId", xml_safe(d.caller_id.as_str()).as_ref()));
            s.push_attribute(("timeout", d.timeout.to_string().as_str()));
            s.push_attribute(("timeLimit", d.time_limit.to_string().as_str()));
            s.push_attribute((
                "hangupOnStar",
                if d.hangup_on_star { "true" } else { "false" },
            ));
            // The volunteer keeps hearing ringback until the member picks up.
            s.push_attribute(("answerOnBridge", "true"));
            let _ = w.write_event(Event::Start(s));
            let mut n = BytesStart::new("Number");
            n.push_attribute((
                "statusCallback",
                xml_safe(d.status_callback.as_str()).as_ref(),
            ));
            n.push_attribute(("statusCallbackMethod", "POST"));
            n.push_attribute((
                "statusCallbackEvent",
                "initiated ringing answered completed",
            ));
            text_element(w, n, &d.number);
            let _ = w.write_event(Event::End(BytesEnd::new("Dial")));
        }
        Verb::Redirect(url) => {
            let mut s = BytesStart::new("Redirect");
            s.push_attribute(("method", "POST"));
            text_element(w, s, url);
        }
        Verb::Hangup => {
            let _ = w.write_event(Event::Empty(BytesStart::new("Hangup")));
        }
        Verb::Reject => {
            let mut s = BytesStart::new("Reject");
            s.push_attribute(("reason", "rejected"));
            let _ = w.write_event(Event::Empty(s));
        }
        Verb::Message(text) => text_element(w, BytesStart::new("Message"), text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_and_attributes() {
        let doc = Twiml::new()
            .gather(Gather::keys("/g?x=1&y=2", 1).say("Press 1 for \"yes\" & <2> for no"))
            .say("We didn't get that.")
            .redirect("/voice")
            .render();
        assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>"));
        assert!(doc.contains("action=\"/g?x=1&amp;y=2\""), "{doc}");
        assert!(doc.contains("&amp; &lt;2&gt; for no"), "{doc}");
        assert!(!doc.contains("<2>"));
    }

    #[test]
    fn characters_xml_cannot_carry_are_dropped_from_text_and_attributes() {
        let doc = Twiml::new()
            .gather(Gather::keys("/g?a=1\u{1}", 1).say("Next: Ann\u{B}Smith\u{0} from Hendon"))
            .message("Hi\u{FFFF}\u{1F}!")
            .render();
        assert!(doc.contains(">Next: AnnSmith from Hendon</Say>"), "{doc}");
        assert!(doc.contains(">Hi!</Message>"), "{doc}");
        assert!(doc.contains("action=\"/g?a=1\""), "{doc}");
        let bad: Vec<char> = doc
            .chars()
            .filter(|&c| crate::domain::text::is_xml_forbidden(c))
            .collect();
        assert!(bad.is_empty(), "{bad:?} in {doc}");
    }

    #[test]
    fn empty_response_and_dial_shape() {
        assert_eq!(
            Twiml::new().render(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>"
        );
        let doc = Twiml::new()
            .dial(Dial {
                number: "+447700900123".into(),
                caller_id: "+442079460000".into(),
                action: "/webhooks/voice/dialed?a=1".into(),
                timeout: 25,
                time_limit: 3600,
                hangup_on_star: true,
                status_callback: "/webhooks/voice/member-status?a=1".into(),
            })
            .render();
        assert!(doc.contains("<Number statusCallback="), "{doc}");
        assert!(doc.contains(">+447700900123</Number></Dial>"), "{doc}");
        assert!(doc.contains("callerId=\"+442079460000\""));
        assert!(doc.contains("hangupOnStar=\"true\""));
    }
}
