//! Reading TwiML as the carrier does: a `<Response>` and its verbs, with attributes and
//! text unescaped. The server writes TwiML with `telephony::twiml`; this is the other
//! side, kept separate so a bug in one cannot hide in the other.

use quick_xml::events::{BytesStart, Event};

/// One element of a TwiML document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every `<Say>` text in this subtree, in document order.
    pub fn says(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.name == "Say" {
            out.push(self.text.clone());
        }
        for c in &self.children {
            out.extend(c.says());
        }
        out
    }

    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// A parsed `<Response>` and the raw text it came from.
#[derive(Debug, Clone)]
pub struct Doc {
    pub raw: String,
    pub verbs: Vec<Node>,
}

impl Doc {
    /// Parse a TwiML document; an error says what was wrong with it.
    pub fn parse(raw: &str) -> Result<Doc, String> {
        let mut reader = quick_xml::Reader::from_str(raw);
        let mut stack: Vec<Node> = vec![Node::default()];
        loop {
            let event = reader
                .read_event()
                .map_err(|e| format!("malformed TwiML: {e}"))?;
            match event {
                Event::Start(e) => stack.push(node(&e)?),
                Event::Empty(e) => {
                    let n = node(&e)?;
                    top(&mut stack)?.children.push(n);
                }
                Event::Text(t) => {
                    let text = t.decode().map_err(|e| format!("bad text: {e}"))?;
                    let text = quick_xml::escape::unescape(&text)
                        .map_err(|e| format!("bad escape: {e}"))?
                        .into_owned();
                    top(&mut stack)?.text.push_str(&text);
                }
                Event::GeneralRef(r) => {
                    let name = r.decode().map_err(|e| format!("bad entity: {e}"))?;
                    let text = quick_xml::escape::unescape(&format!("&{name};"))
                        .map_err(|e| format!("bad entity: {e}"))?
                        .into_owned();
                    top(&mut stack)?.text.push_str(&text);
                }
                Event::End(_) => {
                    if stack.len() < 2 {
                        return Err("unbalanced end tag".into());
                    }
                    let n = stack.pop().unwrap_or_default();
                    top(&mut stack)?.children.push(n);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if stack.len() != 1 {
            return Err("unclosed element".into());
        }
        let root = stack.pop().unwrap_or_default();
        let response = root
            .children
            .into_iter()
            .find(|n| n.name == "Response")
            .ok_or("no <Response> element")?;
        Ok(Doc {
            raw: raw.to_owned(),
            verbs: response.children,
        })
    }

    pub fn verb(&self, name: &str) -> Option<&Node> {
        self.verbs.iter().find(|v| v.name == name)
    }

    /// The raw document with every `<Number>...</Number>` cut out: what a volunteer can
    /// hear or be shown. The dialled number belongs to the carrier, not the caller.
    pub fn outside_numbers(&self) -> String {
        let mut outside = self.raw.clone();
        while let Some(start) = outside.find("<Number") {
            let end = outside[start..]
                .find("</Number>")
                .map(|e| start + e + "</Number>".len())
                .unwrap_or(outside.len());
            outside.replace_range(start..end, "");
        }
        outside
    }
}

fn top(stack: &mut [Node]) -> Result<&mut Node, String> {
    stack.last_mut().ok_or_else(|| "unbalanced document".into())
}

fn node(e: &BytesStart<'_>) -> Result<Node, String> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| format!("bad attribute: {e}"))?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Explicit1_0)
            .map_err(|e| format!("bad attribute value: {e}"))?
            .into_owned();
        attrs.push((String::from_utf8_lossy(a.key.as_ref()).into_owned(), value));
    }
    Ok(Node {
        name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
        attrs,
        ..Node::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_libraries_output() {
        let raw = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Gather action="/gather?x=1&amp;y=2" numDigits="1" timeout="5"><Say>Press 1 for "yes" &amp; &lt;2&gt; for no</Say></Gather><Redirect>/voice</Redirect></Response>"#;
        let doc = Doc::parse(raw).unwrap();
        let g = doc.verb("Gather").unwrap();
        assert_eq!(g.attr("action"), Some("/gather?x=1&y=2"));
        assert_eq!(g.says(), vec![r#"Press 1 for "yes" & <2> for no"#]);
        assert_eq!(doc.verb("Redirect").unwrap().text, "/voice");
    }

    #[test]
    fn numbers_are_cut_from_what_a_volunteer_sees() {
        let raw = "<Response><Say>Hi</Say><Dial callerId=\"+442079460000\"><Number statusCallback=\"/s\">+447700900123</Number></Dial></Response>";
        let doc = Doc::parse(raw).unwrap();
        assert!(!doc.outside_numbers().contains("+447700900123"));
        assert!(doc.outside_numbers().contains("+442079460000"));
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        assert!(Doc::parse("<Response><Say>").is_err());
        assert!(Doc::parse("hello").is_err());
        assert!(Doc::parse("<Response></Say></Response>").is_err());
    }
}
