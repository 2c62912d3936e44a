//! Namespaces: policy per room prefix, from `--config`.
//!
//! A TOML file of `[[namespace]]` tables, read by gateways and routers alike
//! so that both apply the same rules: the gateway refuses what a namespace
//! forbids before any network hop (a client's publish, `members`), and the
//! room's owner applies the rest (history, join/leave events, the member
//! cap). The longest matching `prefix` wins; `prefix = ""` is the default
//! namespace, whose history comes from `--history-size`/`--history-ttl`
//! unless it sets its own, and the other namespaces default to its values.
//! An unknown key, a duplicate prefix or a bad value is refused with one line
//! naming the key and the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::history::{HistoryConfig, HistoryFlags};

/// Who may publish (and signal) into a namespace's rooms from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Publish {
    /// Members of the room (the default).
    Members,
    /// Nobody: the server API and hooks only.
    None,
}

/// How a namespace's rooms tell members about joins and leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinLeave {
    /// `joined` and `left` for every user's first and last connection.
    All,
    /// At most one `members_changed` per room per window.
    Batched,
    /// None.
    Off,
}

/// The backend hooks a namespace's rooms call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Join,
    Publish,
}

/// The policy of the rooms whose id starts with `prefix`.
#[derive(Debug, Clone, PartialEq)]
pub struct Namespace {
    pub prefix: String,
    pub publish: Publish,
    pub join_leave: JoinLeave,
    pub join_leave_window: Duration,
    /// Whether clients may ask `members`.
    pub members: bool,
    pub history: HistoryConfig,
    /// Users a room may hold (0: no cap); past it a join gets `room_full`.
    pub max_members: u32,
    pub hooks: Vec<Hook>,
}

impl Namespace {
    /// How the namespace is named in messages: its prefix, or "default".
    pub fn name(&self) -> String {
        if self.prefix.is_empty() {
            "the default namespace".into()
        } else {
            format!("namespace \"{}\"", self.prefix)
        }
    }
}

/// Every namespace, longest prefix first; the default one last.
#[derive(Debug, Clone)]
pub struct Namespaces {
    list: Vec<Arc<Namespace>>,
}

/// A `[[namespace]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    prefix: String,
    publish: Option<Publish>,
    join_leave: Option<JoinLeave>,
    join_leave_window: Option<String>,
    members: Option<bool>,
    history_size: Option<usize>,
    history_ttl: Option<String>,
    max_members: Option<u32>,
    hooks: Option<Vec<Hook>>,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    namespace: Vec<Raw>,
}

/// The built-in example of the standalone gateway: a read-only `news:`
/// namespace (for the demo page) beside the default one.
pub const STANDALONE_EXAMPLE: &str = r#"
[[namespace]]
prefix = "news:"
publish = "none"
"#;

/// Default join/leave batching window.
const WINDOW: Duration = Duration::from_millis(100);

impl Namespaces {
    /// Only the default namespace, with `history`.
    pub fn default_only(history: HistoryConfig) -> Self {
        Self { list: vec![Arc::new(default_namespace(history))] }
    }

    /// The namespaces of a TOML text; `file` names it in errors, `history`
    /// is what the flags say for the default namespace.
    pub fn parse(text: &str, file: &str, history: HistoryConfig) -> Result<Self, String> {
        let at = |what: String| format!("{file}: {what}");
        let parsed: File = toml::from_str(text).map_err(|e| {
            let mut message = e.message().trim().replace('\n', " ");
            let Some(start) = e.span().map(|s| s.start.min(text.len())) else { return at(message) };
            let line = text[..start].lines().count().max(1);
            // A bad value: name its key, from the line it is on.
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let written = text[line_start..].lines().next().unwrap_or_default().trim();
            let key = match written.split_once('=') {
                Some((key, _)) => key.trim(),
                None => written.trim_matches(|c| c == '[' || c == ']'),
            };
            if !key.is_empty() && !message.contains(key) {
                message = format!("{key}: {message}");
            }
            at(format!("{message} (line {line})"))
        })?;
        // The default namespace first: the others inherit its history.
        let mut raws = parsed.namespace;
        let mut seen = std::collections::HashSet::new();
        for r in &raws {
            if !seen.insert(r.prefix.clone()) {
                return Err(at(format!("prefix \"{}\" appears twice", r.prefix)));
            }
            if !valid_prefix(&r.prefix) {
                return Err(at(format!(
                    "prefix \"{}\" is not the start of a room id ({})",
                    r.prefix,
                    proto::subject::ID_RULE
                )));
            }
        }
        raws.sort_by_key(|r| !r.prefix.is_empty());
        let mut base = default_namespace(history);
        let mut list = Vec::new();
        if raws.first().is_none_or(|r| !r.prefix.is_empty()) {
            list.push(Arc::new(base.clone()));
        }
        for raw in raws {
            let ns = build(raw, &base).map_err(&at)?;
            if ns.prefix.is_empty() {
                base = ns.clone();
            }
            list.push(Arc::new(ns));
        }
        list.sort_by_key(|n| std::cmp::Reverse(n.prefix.len()));
        Ok(Self { list })
    }

    /// The namespace of `room`: the longest prefix it starts with.
    pub fn of(&self, room: &str) -> &Arc<Namespace> {
        self.list.iter().find(|n| room.starts_with(&n.prefix)).expect("the default namespace matches every room")
    }

    /// The largest history any namespace keeps, bound by bound: a durable
    /// store's limits are per stream, so they must fit all of them.
    pub fn largest_history(&self) -> HistoryConfig {
        let h = self.list.iter().map(|n| n.history);
        HistoryConfig {
            max_len: h.clone().map(|h| h.max_len).max().unwrap_or_default(),
            max_age: h.clone().map(|h| h.max_age).max().unwrap_or_default(),
            max_bytes: h.map(|h| h.max_bytes).max().unwrap_or_default(),
        }
    }
}

fn default_namespace(history: HistoryConfig) -> Namespace {
    Namespace {
        prefix: String::new(),
        publish: Publish::Members,
        join_leave: JoinLeave::All,
        join_leave_window: WINDOW,
        members: true,
        history,
        max_members: 0,
        hooks: Vec::new(),
    }
}

/// A namespace from its table; what it leaves out comes from `base` (the
/// default namespace) or the defaults.
fn build(raw: Raw, base: &Namespace) -> Result<Namespace, String> {
    let key = |k: &str| format!("[[namespace]] prefix = \"{}\": {k}", raw.prefix);
    let duration = |k: &str, v: &str| shell::cli::duration(v).map_err(|e| format!("{}: {e}", key(k)));
    let window = match &raw.join_leave_window {
        Some(v) => duration("join_leave_window", v)?,
        None => WINDOW,
    };
    if window.is_zero() || window > Duration::from_secs(60) {
        return Err(format!("{}: must be between 1ms and 60s", key("join_leave_window")));
    }
    let mut history = base.history;
    if let Some(size) = raw.history_size {
        history.max_len = size;
    }
    if let Some(ttl) = &raw.history_ttl {
        history.max_age = duration("history_ttl", ttl)?;
    }
    Ok(Namespace {
        publish: raw.publish.unwrap_or(Publish::Members),
        join_leave: raw.join_leave.unwrap_or(JoinLeave::All),
        join_leave_window: window,
        members: raw.members.unwrap_or(true),
        history,
        max_members: raw.max_members.unwrap_or(0),
        hooks: raw.hooks.unwrap_or_default(),
        prefix: raw.prefix,
    })
}

/// A prefix of a valid room id (the empty one included).
fn valid_prefix(prefix: &str) -> bool {
    prefix.is_empty() || proto::subject::valid_id(prefix)
}

/// `--config` and the history flags: what every binary that owns or serves
/// rooms reads its namespaces from.
#[derive(clap::Args, Debug, Clone)]
pub struct PolicyFlags {
    /// TOML file of [[namespace]] tables: policy per room prefix.
    #[arg(long, env = "SB_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub history: HistoryFlags,
}

impl PolicyFlags {
    /// The namespaces of `--config`, or of `builtin` (a TOML text) when no
    /// file is given, or the default namespace alone.
    pub fn namespaces(&self, builtin: Option<&str>) -> anyhow::Result<Namespaces> {
        let history = self.history.config();
        let parsed = match (&self.config, builtin) {
            (Some(path), _) => {
                let text = read(path)?;
                Namespaces::parse(&text, &format!("--config {}", path.display()), history)
            }
            (None, Some(text)) => Namespaces::parse(text, "the built-in example config", history),
            (None, None) => Ok(Namespaces::default_only(history)),
        };
        parsed.map_err(anyhow::Error::msg)
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))
}

#[cfg(test)]
#[path = "namespace_tests.rs"]
mod tests;
