//! Reading the fields load scenarios need from server frames.
//!
//! Both Switchboard and the `ws` peer send the same JSON shapes. Scenario
//! payloads are `{"t": <ns since the run started>, "p": <publisher>, "n":
//! <counter>, "pad": "…"}` so receivers can measure latency and check for
//! loss without a lookup.

use serde::Deserialize;

/// The parts of a server frame scenarios look at.
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub ty: &'a str,
    #[serde(default)]
    pub room: Option<&'a str>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub epoch: Option<&'a str>,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub ok: Option<bool>,
    #[serde(default)]
    pub recovered: Option<bool>,
    #[serde(default)]
    pub data: Option<Payload<'a>>,
    #[serde(default)]
    pub user: Option<&'a str>,
    #[serde(default)]
    pub online: Option<bool>,
    #[serde(default)]
    pub error: Option<ErrorField<'a>>,
    /// A room's member count (join replies, `members_changed`).
    #[serde(default)]
    pub count: Option<u64>,
    /// `members_changed`: its lists are incomplete.
    #[serde(default)]
    pub truncated: Option<bool>,
}

/// A scenario message's payload.
#[derive(Debug, Deserialize)]
pub struct Payload<'a> {
    /// Send time, ns since the run's clock started.
    #[serde(default)]
    pub t: Option<u64>,
    #[serde(default, borrow)]
    pub p: Option<&'a str>,
    #[serde(default)]
    pub n: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorField<'a> {
    #[serde(borrow)]
    pub code: &'a str,
}

impl<'a> Frame<'a> {
    /// Parses a frame; `None` for anything that is not a JSON object.
    pub fn parse(text: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(text).ok()
    }
}

/// The JSON text of a scenario payload of about `size` bytes.
pub fn payload(t: u64, publisher: &str, n: u64, size: usize) -> String {
    let mut s = format!(r#"{{"t":{t},"p":"{publisher}","n":{n}"#);
    if s.len() + 11 < size {
        s.push_str(r#","pad":""#);
        let end = size - 2;
        // Words, as chat text is: what compression meets in real traffic
        // (a run of one letter would compress a hundredfold).
        let mut i = n as usize;
        while s.len() < end {
            i = i.wrapping_mul(31).wrapping_add(17);
            let word = WORDS[i % WORDS.len()];
            s.push_str(&word[..word.len().min(end - s.len())]);
            if s.len() < end {
                s.push(' ');
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

const WORDS: [&str; 48] = [
    "the",
    "meeting",
    "moved",
    "to",
    "three",
    "o'clock",
    "can",
    "you",
    "send",
    "me",
    "latest",
    "draft",
    "before",
    "lunch",
    "I",
    "think",
    "we",
    "should",
    "ship",
    "it",
    "today",
    "thanks",
    "sounds",
    "good",
    "let's",
    "review",
    "numbers",
    "again",
    "tomorrow",
    "morning",
    "who",
    "is",
    "on",
    "call",
    "this",
    "weekend",
    "deploy",
    "went",
    "fine",
    "but",
    "dashboard",
    "looks",
    "slow",
    "please",
    "check",
    "logs",
    "when",
    "free",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_back_and_have_their_size() {
        let p = payload(5, "pub1", 9, 200);
        assert!((195..=205).contains(&p.len()), "{}", p.len());
        let msg = format!(r#"{{"type":"message","room":"r","seq":3,"epoch":"e","from":"u","data":{p},"ts":1}}"#);
        let f = Frame::parse(msg.as_bytes()).unwrap();
        assert_eq!((f.ty, f.room, f.seq), ("message", Some("r"), Some(3)));
        let d = f.data.unwrap();
        assert_eq!((d.t, d.p, d.n), (Some(5), Some("pub1"), Some(9)));
        assert!(Frame::parse(b"[1]").is_none());
    }
}
