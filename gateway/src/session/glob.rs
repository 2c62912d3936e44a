//! Globs over ids: which rooms a connection may join or publish to, which
//! users it may message or watch.
//!
//! A token's `rooms`, `publish`, `send` and `watch` claims (or the server's
//! defaults when a claim is absent) are lists of patterns such as `chat:*`
//! or `game:??:lobby`. The gateway checks ops against them, so matching has
//! to be cheap and must not be something a hostile token can turn into a
//! CPU sink: the matcher below never recurses and never backtracks more
//! than one `*` at a time.
//!
//! Syntax: `*` matches any run of characters (including none), `?` matches
//! exactly one character, every other character matches itself. There is no
//! escaping; room ids cannot contain `*` or `?` anyway.

use std::convert::Infallible;
use std::str::FromStr;

/// Returns true if `name` matches the glob `pattern` as a whole.
///
/// This is the classic two-pointer algorithm: on a mismatch it only ever
/// returns to the most recent `*` and lets it swallow one more character.
/// Earlier stars never need revisiting, because whatever they could absorb
/// the latest star can absorb too. The worst case is therefore
/// O(`pattern.len()` × `name.len()`), with no exponential blow-up however
/// many stars a pattern has, and linear for the usual patterns.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();

    // Position in the pattern and in the name.
    let mut pi = 0;
    let mut ni = 0;
    // The latest `*` seen: where the pattern resumes after it, and where in
    // the name the star's match currently ends.
    let mut star: Option<(usize, usize)> = None;

    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                // Try the empty match first; widen it on a later mismatch.
                pi += 1;
                star = Some((pi, ni));
            }
            Some(b'?') => {
                pi += 1;
                ni += char_len(n[ni]);
            }
            Some(&c) if c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((star_pi, star_ni)) => {
                    // Let the latest star absorb one more character.
                    let next = star_ni + char_len(n[star_ni]);
                    star = Some((star_pi, next));
                    pi = star_pi;
                    ni = next;
                }
                None => return false,
            },
        }
    }

    // The name is used up: what is left of the pattern may only be stars.
    p[pi..].iter().all(|&c| c == b'*')
}

/// Length in bytes of the UTF-8 character that starts with `lead`.
///
/// Room ids are ASCII, so this is always 1 in practice; it keeps `?` and `*`
/// stepping over whole characters should a non-ASCII name ever get here.
fn char_len(lead: u8) -> usize {
    match lead {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

/// A list of id patterns (rooms or users).
///
/// An empty list allows nothing. Build it from a token's `rooms` claim with
/// [`Globs::new`], or from `--default-rooms` with [`Globs::parse_list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Globs(Vec<String>);

impl Globs {
    /// Wraps a list of patterns as they are, e.g. a token's `rooms` claim.
    pub fn new(patterns: Vec<String>) -> Globs {
        Globs(patterns)
    }

    /// Parses a comma-separated list such as `"chat:*, news"`.
    ///
    /// Entries are trimmed and empty ones dropped, so stray or trailing
    /// commas in a command line do no harm.
    pub fn parse_list(s: &str) -> Globs {
        Globs(s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect())
    }

    /// True if any pattern matches `room`.
    pub fn allows(&self, room: &str) -> bool {
        self.0.iter().any(|p| matches(p, room))
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

/// Same as [`Globs::parse_list`]; lets `clap` parse `--default-rooms`.
impl FromStr for Globs {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Globs, Infallible> {
        Ok(Globs::parse_list(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert!(matches("lobby", "lobby"));
        assert!(!matches("lobby", "lobby2"));
        assert!(!matches("lobby2", "lobby"));
        assert!(!matches("Lobby", "lobby"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(!matches("a", ""));
    }

    #[test]
    fn star() {
        assert!(matches("*", ""));
        assert!(matches("*", "anything:at@all"));
        assert!(matches("chat:*", "chat:"));
        assert!(matches("chat:*", "chat:general"));
        assert!(!matches("chat:*", "chats:general"));
        assert!(matches("*:lobby", "game:1:lobby"));
        assert!(!matches("*:lobby", "game:1:lobby2"));
        assert!(matches("a*b*c", "abc"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("**", "x"));
        assert!(matches("a**", "a"));
        // Needs the star to give back characters it first skipped.
        assert!(matches("*ab", "aab"));
        assert!(matches("*aab", "aaab"));
        assert!(matches("a*ba", "abba"));
    }

    #[test]
    fn question_mark() {
        assert!(matches("room-?", "room-1"));
        assert!(!matches("room-?", "room-"));
        assert!(!matches("room-?", "room-12"));
        assert!(matches("??", "ab"));
        assert!(matches("?*", "a"));
        assert!(!matches("?*", ""));
        assert!(matches("*?", "a"));
        assert!(matches("g?m*:?", "game:1"));
        // `?` is one character, not one byte.
        assert!(matches("caf?", "café"));
        assert!(matches("*?", "é"));
        assert!(!matches("??", "é"));
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        // Exponential for a naive recursive matcher; here it is a few
        // thousand steps.
        let name = "a".repeat(10_000);
        let start = std::time::Instant::now();
        assert!(!matches("*a*a*a*a*a*a*a*a*a*a*b", &name));
        assert!(!matches("a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*", &"a".repeat(19)));
        assert!(matches("*a*a*a*a*a*a*a*a*a*a", &name));
        let hostile = format!("{}b", "*a".repeat(200));
        assert!(!matches(&hostile, &name));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn parse_list_trims_and_drops_empty_entries() {
        let globs = Globs::parse_list(" chat:* ,, news ,");
        assert_eq!(globs.patterns(), ["chat:*", "news"]);
        assert!(Globs::parse_list("").patterns().is_empty());
        assert!(Globs::parse_list(" , ").patterns().is_empty());
        assert_eq!("a,b".parse::<Globs>().unwrap().patterns(), ["a", "b"]);
    }

    #[test]
    fn allows_any_matching_pattern() {
        let globs = Globs::parse_list("chat:*,game:??");
        assert!(globs.allows("chat:general"));
        assert!(globs.allows("game:42"));
        assert!(!globs.allows("game:421"));
        assert!(!globs.allows("admin"));

        assert!(Globs::parse_list("*").allows("anything"));
        assert!(!Globs::default().allows("anything"));
        assert!(Globs::new(vec!["a".into()]).allows("a"));
    }
}
