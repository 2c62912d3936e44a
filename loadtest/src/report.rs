//! The end of a run: a table for people, JSON for tools, SVG for eyes.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::check::RoomView;
use crate::stats::{Stats, Tick};

/// Percentiles shown for every histogram.
const PERCENTILES: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 100.0];

/// A finished run.
pub struct Report {
    pub scenario: String,
    pub target: String,
    /// The scenario's parameters, as given.
    pub params: Vec<(String, String)>,
    /// Headline figures: name, value, unit.
    pub figures: Vec<(String, f64, String)>,
    /// Named latency histograms (µs): "latency" is publish → delivery.
    pub histograms: Vec<(String, Histogram<u64>)>,
    pub failures: Vec<(String, u64)>,
    /// Scenario-specific failures that make the run fail.
    pub errors: Vec<String>,
    pub continuity: RoomView,
    /// Resyncs are expected in this run (a crash was part of it).
    pub resync_ok: bool,
    pub timeline: Vec<Tick>,
}

impl Report {
    /// Collects what `stats` measured.
    pub fn new(scenario: &str, target: &str, params: Vec<(String, String)>, stats: &Stats) -> Self {
        let mut histograms = Vec::new();
        let latency = stats.latency();
        if !latency.is_empty() {
            histograms.push(("latency".to_owned(), latency));
        }
        histograms.extend(stats.extra().into_iter().map(|(k, v)| (k.to_owned(), v)));
        Self {
            scenario: scenario.to_owned(),
            target: target.to_owned(),
            params,
            figures: Vec::new(),
            histograms,
            failures: stats.failures().into_iter().collect(),
            errors: Vec::new(),
            continuity: stats.continuity(),
            resync_ok: false,
            timeline: stats.timeline(),
        }
    }

    pub fn figure(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.push((name.to_owned(), value, unit.to_owned()));
    }

    /// What makes the run fail: lost, duplicated or silently re-epoched
    /// messages, and resyncs where none were expected.
    pub fn correctness_errors(&self) -> Vec<String> {
        let c = &self.continuity;
        let mut out = self.errors.clone();
        if c.lost > 0 {
            out.push(format!("{} messages lost", c.lost));
        }
        if c.duplicated > 0 {
            out.push(format!("{} messages duplicated or out of order", c.duplicated));
        }
        if c.silent_epoch_changes > 0 {
            out.push(format!("{} silent epoch changes", c.silent_epoch_changes));
        }
        if c.resyncs > 0 && !self.resync_ok {
            out.push(format!("{} unexpected resyncs", c.resyncs));
        }
        out
    }

    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n{} against {}", self.scenario, self.target);
        let params: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(s, "  {}", params.join(" "));
        for (name, value, unit) in &self.figures {
            let _ = writeln!(s, "  {name:<28} {:>14} {unit}", format_num(*value));
        }
        for (name, h) in &self.histograms {
            let cells: Vec<String> =
                PERCENTILES.iter().map(|p| format!("p{}={}", trim(*p), ms(h.value_at_percentile(*p)))).collect();
            let _ = writeln!(s, "  {name:<28} {} (n={})", cells.join(" "), h.len());
        }
        let c = &self.continuity;
        let _ = writeln!(
            s,
            "  {:<28} received={} lost={} duplicated={} silent_epoch_changes={} resyncs={}",
            "continuity", c.received, c.lost, c.duplicated, c.silent_epoch_changes, c.resyncs
        );
        if !self.failures.is_empty() {
            let f: Vec<String> = self.failures.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(s, "  {:<28} {}", "failures", f.join(", "));
        }
        let errors = self.correctness_errors();
        let _ = writeln!(s, "  {:<28} {}", "correct", if errors.is_empty() { "yes".into() } else { errors.join("; ") });
        s
    }

    /// Every figure, as JSON.
    pub fn json(&self) -> Value {
        let hist: serde_json::Map<String, Value> = self
            .histograms
            .iter()
            .map(|(name, h)| {
                let mut m = serde_json::Map::new();
                m.insert("count".into(), json!(h.len()));
                m.insert("mean_us".into(), json!(h.mean()));
                for p in PERCENTILES {
                    m.insert(format!("p{}_us", trim(p)), json!(h.value_at_percentile(p)));
                }
                (name.clone(), Value::Object(m))
            })
            .collect();
        json!({
            "scenario": self.scenario,
            "target": self.target,
            "params": self.params.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "figures": self.figures.iter().map(|(n, v, u)| (n.clone(), json!({"value": v, "unit": u})))
                .collect::<serde_json::Map<_, _>>(),
            "histograms": hist,
            "failures": self.failures.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "continuity": {
                "received": self.continuity.received,
                "lost": self.continuity.lost,
                "duplicated": self.continuity.duplicated,
                "silent_epoch_changes": self.continuity.silent_epoch_changes,
                "resyncs": self.continuity.resyncs,
            },
            "correct": self.correctness_errors().is_empty(),
            "timeline": self.timeline,
        })
    }

    /// Throughput over time and the latency distribution, as SVG.
    pub fn svg(&self) -> String {
        let (w, h, pad) = (720.0, 260.0, 48.0);
        let mut s = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="11">"#,
            h * 2.0 + 40.0
        );
        s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
        // Panel 1: messages per second over time.
        let max_rate = self.timeline.iter().map(|t| t.delivered.max(t.sent)).max().unwrap_or(1).max(1) as f64;
        let max_t = self.timeline.last().map_or(1.0, |t| t.at).max(1.0);
        let x = |t: f64| pad + (w - 2.0 * pad) * t / max_t;
        let y = |v: f64, top: f64| top + h - pad - (h - 2.0 * pad) * v / max_rate.max(v);
        let _ = write!(s, r#"<text x="{pad}" y="20">{} — messages per second</text>"#, escape(&self.scenario));
        for (series, color) in [("delivered", "#1f77b4"), ("sent", "#ff7f0e")] {
            let points: Vec<String> = self
                .timeline
                .iter()
                .map(|t| {
                    let v = if series == "delivered" { t.delivered } else { t.sent } as f64;
                    format!("{:.1},{:.1}", x(t.at), y(v, 0.0))
                })
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                points.join(" ")
            );
        }
        let _ = write!(
            s,
            r##"<text x="{pad}" y="{}" fill="#1f77b4">delivered/s (max {})</text><text x="{}" y="{}" fill="#ff7f0e">sent/s</text>"##,
            h - 10.0,
            format_num(max_rate),
            pad + 220.0,
            h - 10.0
        );
        axes(&mut s, pad, 0.0, w, h);
        // Panel 2: latency by percentile.
        let top = h + 20.0;
        let _ = write!(s, r#"<text x="{pad}" y="{}">latency by percentile (ms)</text>"#, top + 20.0);
        if let Some((_, hist)) = self.histograms.iter().find(|(n, _)| n == "latency").or(self.histograms.first()) {
            let ps: Vec<f64> = vec![0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0];
            let max_v = hist.max().max(1) as f64;
            // x: -log10(1 - p/100), so the tail gets room.
            let px = |p: f64| {
                let v = -((1.0 - (p / 100.0).min(0.9999)).log10());
                pad + (w - 2.0 * pad) * v / 4.0
            };
            let points: Vec<String> = ps
                .iter()
                .map(|p| {
                    let v = hist.value_at_percentile(*p) as f64;
                    format!("{:.1},{:.1}", px(*p), top + h - pad - (h - 2.0 * pad) * v / max_v)
                })
                .collect();
            let _ = write!(
                s,
                r##"<polyline fill="none" stroke="#2ca02c" stroke-width="1.5" points="{}"/>"##,
                points.join(" ")
            );
            for p in [50.0, 90.0, 99.0, 99.9, 99.99] {
                let _ = write!(s, r#"<text x="{:.1}" y="{}">p{}</text>"#, px(p) - 8.0, top + h - pad + 14.0, trim(p));
            }
            let _ = write!(s, r#"<text x="{}" y="{}">max {}</text>"#, pad + 4.0, top + pad, ms(hist.max()));
        }
        axes(&mut s, pad, top, w, h);
        s.push_str("</svg>\n");
        s
    }

    /// [`Report::json`] plus what a coordinator needs to merge it exactly:
    /// every recorded latency value with its count, the errors, and whether
    /// resyncs were expected.
    pub fn worker_json(&self) -> Value {
        let mut v = self.json();
        let recorded: serde_json::Map<String, Value> = self
            .histograms
            .iter()
            .map(|(name, h)| {
                let pairs: Vec<Value> =
                    h.iter_recorded().map(|r| json!([r.value_iterated_to(), r.count_at_value()])).collect();
                (name.clone(), Value::Array(pairs))
            })
            .collect();
        v["recorded"] = Value::Object(recorded);
        v["errors"] = json!(self.errors);
        v["resync_ok"] = json!(self.resync_ok);
        v
    }

    /// One report from the workers' [`Report::worker_json`]s: counts and
    /// rates add up (a figure "per" something is averaged, a time or a size
    /// is the largest), histograms and continuity merge, timelines add up
    /// second by second, and every worker's errors count.
    pub fn merge(workers: &[Value]) -> Self {
        let first = workers.first().cloned().unwrap_or_default();
        let mut figures: Vec<(String, f64, String)> = Vec::new();
        let mut histograms: Vec<(String, Histogram<u64>)> = Vec::new();
        let mut failures: std::collections::BTreeMap<String, u64> = Default::default();
        let (mut continuity, mut errors, mut resync_ok) = (RoomView::default(), Vec::new(), false);
        let mut timeline: Vec<Tick> = Vec::new();
        for (i, w) in workers.iter().enumerate() {
            for (name, f) in w["figures"].as_object().into_iter().flatten() {
                let (value, unit) = (f["value"].as_f64().unwrap_or(0.0), f["unit"].as_str().unwrap_or("").to_owned());
                match figures.iter_mut().find(|(n, _, _)| n == name) {
                    Some((_, v, u)) => *v = merge_figure(name, u, *v, value, i),
                    None => figures.push((name.clone(), value, unit)),
                }
            }
            for (name, pairs) in w["recorded"].as_object().into_iter().flatten() {
                let h = match histograms.iter_mut().find(|(n, _)| n == name) {
                    Some((_, h)) => h,
                    None => {
                        histograms.push((name.clone(), crate::stats::histogram()));
                        &mut histograms.last_mut().expect("just pushed").1
                    }
                };
                for pair in pairs.as_array().into_iter().flatten() {
                    if let (Some(v), Some(n)) = (pair[0].as_u64(), pair[1].as_u64()) {
                        let _ = h.record_n(v, n);
                    }
                }
            }
            for (kind, n) in w["failures"].as_object().into_iter().flatten() {
                *failures.entry(kind.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
            let c = &w["continuity"];
            let n = |k: &str| c[k].as_u64().unwrap_or(0);
            continuity.received += n("received");
            continuity.lost += n("lost");
            continuity.duplicated += n("duplicated");
            continuity.silent_epoch_changes += n("silent_epoch_changes");
            continuity.resyncs += n("resyncs");
            errors.extend(
                w["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| Some(format!("worker {i}: {}", e.as_str()?))),
            );
            resync_ok |= w["resync_ok"] == true;
            for (t, tick) in w["timeline"].as_array().into_iter().flatten().enumerate() {
                if timeline.len() <= t {
                    timeline.push(Tick {
                        at: tick["at"].as_f64().unwrap_or(t as f64),
                        sent: 0,
                        delivered: 0,
                        connections: 0,
                    });
                }
                let n = |k: &str| tick[k].as_u64().unwrap_or(0);
                timeline[t].sent += n("sent");
                timeline[t].delivered += n("delivered");
                timeline[t].connections += n("connections");
            }
        }
        let params = first["params"].as_object().into_iter().flatten();
        let mut params: Vec<(String, String)> =
            params.map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect();
        params.push(("workers".into(), workers.len().to_string()));
        Self {
            scenario: first["scenario"].as_str().unwrap_or_default().to_owned(),
            target: first["target"].as_str().unwrap_or_default().to_owned(),
            params,
            figures,
            histograms,
            failures: failures.into_iter().collect(),
            errors,
            continuity,
            resync_ok,
            timeline,
        }
    }
}

fn axes(s: &mut String, pad: f64, top: f64, w: f64, h: f64) {
    let _ = write!(
        s,
        r#"<line x1="{pad}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{pad}" y1="{}" x2="{pad}" y2="{}" stroke="black"/>"#,
        top + h - pad,
        w - pad,
        top + h - pad,
        top + pad,
        top + h - pad
    );
}

/// Two workers' values of one figure: counts and rates add up, a figure
/// "per" something is averaged over the workers so far (`seen` of them
/// before this one), times and sizes keep the largest.
fn merge_figure(name: &str, unit: &str, so_far: f64, next: f64, seen: usize) -> f64 {
    if name.contains(" per ") {
        (so_far * seen as f64 + next) / (seen + 1) as f64
    } else if matches!(unit, "" | "msgs" | "msgs/s" | "/s") {
        so_far + next
    } else {
        so_far.max(next)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;")
}

/// Microseconds as milliseconds with three decimals.
fn ms(us: u64) -> String {
    format!("{:.3}ms", us as f64 / 1000.0)
}

fn trim(p: f64) -> String {
    let s = format!("{p}");
    s.trim_end_matches(".0").to_owned()
}

fn format_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
