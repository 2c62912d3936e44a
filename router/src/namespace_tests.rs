//! Tests of [`super`] (namespace.rs).

use super::*;

fn flags() -> HistoryConfig {
    HistoryConfig { max_len: 100, max_age: Duration::from_secs(120), max_bytes: 1 << 20 }
}

fn parse(text: &str) -> Result<Namespaces, String> {
    Namespaces::parse(text, "ns.toml", flags())
}

#[test]
fn the_longest_prefix_wins_and_the_default_takes_the_rest() {
    let ns = parse(
        r#"
        [[namespace]]
        prefix = "news:"
        publish = "none"

        [[namespace]]
        prefix = "news:local:"
        history_size = 5

        [[namespace]]
        prefix = "big:"
        join_leave = "batched"
        join_leave_window = "250ms"
        members = false
        max_members = 10000
        hooks = ["join", "publish"]
        "#,
    )
    .unwrap();
    // (room, prefix of its namespace)
    let cases = [
        ("news:sport", "news:"),
        ("news:local:x", "news:local:"),
        ("big:stage", "big:"),
        ("lobby", ""),
        ("newsroom", ""),
    ];
    for (room, prefix) in cases {
        assert_eq!(ns.of(room).prefix, prefix, "{room}");
    }
    let big = ns.of("big:x");
    assert_eq!(
        (big.join_leave, big.join_leave_window, big.members, big.max_members, big.hooks.clone()),
        (JoinLeave::Batched, Duration::from_millis(250), false, 10_000, vec![Hook::Join, Hook::Publish])
    );
    assert_eq!(ns.of("news:x").publish, Publish::None);
    assert_eq!(ns.of("news:local:x").publish, Publish::Members, "keys are not inherited from shorter prefixes");
    assert_eq!(ns.of("news:local:x").history.max_len, 5);
    assert_eq!(ns.of("lobby").history, flags(), "no default table: the flags");
    assert_eq!(ns.of("lobby").name(), "the default namespace");
    assert_eq!(ns.of("big:x").name(), "namespace \"big:\"");
}

#[test]
fn the_default_namespace_sets_the_history_the_others_inherit() {
    let ns = parse(
        r#"
        [[namespace]]
        prefix = "chat:"

        [[namespace]]
        prefix = ""
        history_size = 20
        history_ttl = "30s"
        "#,
    )
    .unwrap();
    let want = HistoryConfig { max_len: 20, max_age: Duration::from_secs(30), ..flags() };
    assert_eq!(ns.of("lobby").history, want);
    assert_eq!(ns.of("chat:1").history, want, "inherited from the default namespace");
    assert_eq!(Namespaces::default_only(flags()).of("x").history, flags());
}

#[test]
fn bad_files_are_refused_in_one_line_naming_the_key_and_the_file() {
    // (text, what the error must contain)
    let cases = [
        ("[[namespace]]\nprefix = \"a:\"\npublsh = \"none\"", "publsh"),
        ("[[namespace]]\nprefix = \"a:\"\n[[namespace]]\nprefix = \"a:\"", "appears twice"),
        ("[[namespace]]\nprefix = \"a:\"\nhistory_size = -1", "history_size"),
        ("[[namespace]]\nprefix = \"a:\"\nhistory_ttl = \"fast\"", "history_ttl"),
        ("[[namespace]]\nprefix = \"a:\"\njoin_leave_window = \"0ms\"", "join_leave_window"),
        ("[[namespace]]\nprefix = \"a:\"\njoin_leave = \"sometimes\"", "sometimes"),
        ("[[namespace]]\nprefix = \"a.b\"", "prefix"),
        ("[[namespace]]\npublish = \"none\"", "prefix"),
        ("[namespace]\nprefix = \"a:\"", "namespace"),
        ("surprise = 1", "surprise"),
        ("[[namespace]\n", "line"),
    ];
    for (text, needle) in cases {
        let e = parse(text).map(|_| ()).unwrap_err();
        assert!(e.starts_with("ns.toml: ") && e.contains(needle), "{text:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

#[test]
fn the_standalone_example_makes_news_read_only() {
    let ns = Namespaces::parse(STANDALONE_EXAMPLE, "example", flags()).unwrap();
    assert_eq!(ns.of("news:announcements").publish, Publish::None);
    assert_eq!(ns.of("lobby").publish, Publish::Members);
}
