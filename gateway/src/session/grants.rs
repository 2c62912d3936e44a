//! What a connection's token allows, and which rule says so.
//!
//! Four lists of globs: rooms it may join (`rooms`, else `--default-rooms`),
//! rooms it may publish and signal to (`publish`, else the rooms it may
//! join), users it may message (`send`, else `--default-send`) and users
//! whose presence it may query or watch (`watch`, else `--default-watch`).
//! Each remembers where it came from, so a `forbidden` reply names the rule
//! that refused. Connections whose tokens carry none of these claims share
//! one set, built once.

use std::sync::Arc;

use super::auth::Claims;
use super::glob::Globs;

/// One list and the rule it comes from.
#[derive(Debug, Clone)]
pub struct Grant {
    globs: Arc<Globs>,
    /// E.g. "the token's `send` claim", "--default-send".
    rule: &'static str,
}

impl Grant {
    pub fn new(globs: Arc<Globs>, rule: &'static str) -> Self {
        Self { globs, rule }
    }

    pub fn allows(&self, id: &str) -> bool {
        self.globs.allows(id)
    }

    /// `Ok` if `id` is allowed, else why not: "<rule> does not allow <what> <id>".
    pub fn check(&self, what: &str, id: &str) -> Result<(), String> {
        if self.allows(id) {
            Ok(())
        } else {
            Err(format!("{} does not allow {what} {id}", self.rule))
        }
    }
}

/// Everything a connection may do beyond being connected.
#[derive(Debug, Clone)]
pub struct Grants {
    pub rooms: Grant,
    pub publish: Grant,
    pub send: Grant,
    pub watch: Grant,
}

/// The server's defaults for tokens without a claim.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub rooms: Arc<Globs>,
    pub send: Arc<Globs>,
    pub watch: Arc<Globs>,
}

impl Grants {
    /// What a token without any of the claims gets.
    pub fn defaults(d: &Defaults) -> Arc<Self> {
        let rooms = Grant::new(d.rooms.clone(), "--default-rooms");
        Arc::new(Self {
            publish: Grant::new(d.rooms.clone(), "--default-rooms (the token has no `publish` claim)"),
            rooms,
            send: Grant::new(d.send.clone(), "--default-send"),
            watch: Grant::new(d.watch.clone(), "--default-watch"),
        })
    }

    /// What `claims` grant; `defaults` is the shared set for claim-less tokens.
    pub fn of(claims: &Claims, d: &Defaults, defaults: &Arc<Self>) -> Arc<Self> {
        if claims.rooms.is_none() && claims.publish.is_none() && claims.send.is_none() && claims.watch.is_none() {
            return defaults.clone();
        }
        let claim = |list: &Option<Vec<String>>| list.clone().map(|l| Arc::new(Globs::new(l)));
        let rooms = match claim(&claims.rooms) {
            Some(g) => Grant::new(g, "the token's `rooms` claim"),
            None => defaults.rooms.clone(),
        };
        let publish = match claim(&claims.publish) {
            Some(g) => Grant::new(g, "the token's `publish` claim"),
            None if claims.rooms.is_some() => {
                Grant::new(rooms.globs.clone(), "the token's `rooms` claim (it has no `publish` claim)")
            }
            None => defaults.publish.clone(),
        };
        Arc::new(Self {
            rooms,
            publish,
            send: claim(&claims.send).map_or_else(
                || Grant::new(d.send.clone(), "--default-send"),
                |g| Grant::new(g, "the token's `send` claim"),
            ),
            watch: claim(&claims.watch).map_or_else(
                || Grant::new(d.watch.clone(), "--default-watch"),
                |g| Grant::new(g, "the token's `watch` claim"),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(
        rooms: Option<&[&str]>,
        publish: Option<&[&str]>,
        send: Option<&[&str]>,
        watch: Option<&[&str]>,
    ) -> Claims {
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| s.to_string()).collect());
        Claims {
            sub: "u".into(),
            exp: 0,
            rooms: list(rooms),
            publish: list(publish),
            send: list(send),
            watch: list(watch),
            info: None,
        }
    }

    fn defaults() -> Defaults {
        Defaults {
            rooms: Arc::new(Globs::parse_list("*")),
            send: Arc::new(Globs::parse_list("friend:*")),
            watch: Arc::new(Globs::parse_list("*")),
        }
    }

    #[test]
    fn claims_allow_as_written_and_absent_ones_fall_back_to_the_flags() {
        let d = defaults();
        let shared = Grants::defaults(&d);
        // (claims, kind, id, allowed, the rule named when refused)
        type Case<'a> = (Claims, &'a str, &'a str, bool, &'a str);
        let cases: Vec<Case> = vec![
            (claims(None, None, None, None), "send", "friend:1", true, ""),
            (claims(None, None, None, None), "send", "stranger", false, "--default-send"),
            (claims(None, None, Some(&["*"]), None), "send", "stranger", true, ""),
            (claims(Some(&["chat:*"]), None, None, None), "publish", "chat:1", true, ""),
            (claims(Some(&["chat:*"]), None, None, None), "publish", "news:1", false, "the token's `rooms` claim"),
            (
                claims(Some(&["*"]), Some(&["chat:*"]), None, None),
                "publish",
                "news:1",
                false,
                "the token's `publish` claim",
            ),
            (claims(None, Some(&[]), None, None), "publish", "lobby", false, "the token's `publish` claim"),
            (claims(None, None, None, Some(&["team:*"])), "watch", "team:a", true, ""),
            (claims(None, None, None, Some(&["team:*"])), "watch", "boss", false, "the token's `watch` claim"),
            (claims(None, None, None, None), "watch", "anyone", true, ""),
        ];
        for (c, kind, id, allowed, rule) in cases {
            let g = Grants::of(&c, &d, &shared);
            let grant = match kind {
                "send" => &g.send,
                "publish" => &g.publish,
                _ => &g.watch,
            };
            match grant.check("id", id) {
                Ok(()) => assert!(allowed, "{kind} {id} allowed for {c:?}"),
                Err(why) => {
                    assert!(!allowed, "{kind} {id} refused for {c:?}: {why}");
                    assert!(why.starts_with(rule) && why.ends_with(id), "{why}");
                }
            }
        }
        assert!(Arc::ptr_eq(&Grants::of(&claims(None, None, None, None), &d, &shared), &shared), "shared");
    }
}
