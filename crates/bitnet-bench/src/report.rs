//! The report: `target/bench/throughput.json` and the tables printed on stdout.

use serde::Serialize;

use crate::model::decode_limit;
use crate::plan::{Settings, OURS, OURS_Q8_0_HEAD};

/// Which part of a run a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The prompt, one batch, logits of the last position only.
    Prefill,
    /// The greedy steps after it, one token each.
    Decode,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }
}

/// One engine × format × thread count × phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub engine: String,
    /// The engine's build and runtime settings (references: `SessionConfig::describe`, with
    /// the build's CMake options; ours: numerics, threads, batch, KV, kernel ISA).
    pub settings: String,
    /// The engine's exact version string (for references: crate and upstream commit).
    pub version: String,
    pub format: String,
    pub threads: u32,
    pub phase: Phase,
    /// Tokens per measured run in this phase.
    pub tokens: usize,
    pub tok_s_median: f64,
    /// Every measured run, in order.
    pub tok_s_runs: Vec<f64>,
    /// The worker's `VmHWM` after all its runs.
    pub peak_rss_bytes: u64,
    /// Model file + KV cache + 10%.
    pub rss_budget_bytes: u64,
    /// Size of the model file.
    pub model_bytes: u64,
    /// Decode only: bytes one step streams, the bandwidth bound on tok/s, and the median's
    /// share of it.
    pub bytes_per_token: Option<u64>,
    pub decode_limit_tok_s: Option<f64>,
    pub percent_of_limit: Option<f64>,
    /// Our engine's numerics for this row: the ones it ran with (our rows), or those of
    /// the run of our engine whose ids this reference's ids were compared with (reference
    /// rows: always the reference's own, so a difference is a parity bug, not a choice).
    pub numerics: String,
    /// Whether the generated ids equal our engine's (`None` on our own rows).
    pub tokens_match_ours: Option<bool>,
    /// First index where they differ.
    pub first_token_difference: Option<usize>,
}

/// Read bandwidth measured with this many threads.
#[derive(Debug, Clone, PartialEq)]
pub struct Bandwidth {
    pub threads: u32,
    /// Every probe of the run, in order (never empty): the bench probes before and after
    /// each group of runs, because a shared machine's bandwidth drifts (Zen 4 cloud host,
    /// 2026-12-07: 25.2 to 32.9 GB/s on 1 thread within an hour), and a single early probe
    /// that caught a slow moment put decode rows above 100% of their "limit".
    pub readings: Vec<f64>,
}

impl Bandwidth {
    /// The best reading: the limit decode rows are measured against.
    pub fn best(&self) -> f64 {
        self.readings.iter().copied().fold(0.0, f64::max)
    }

    /// The worst reading: how far the machine drifted below [`Bandwidth::best`].
    pub fn lowest(&self) -> f64 {
        self.readings.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// In the JSON: `threads`, the best reading as `gb_per_s`, and every reading.
impl Serialize for Bandwidth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Bandwidth", 3)?;
        st.serialize_field("threads", &self.threads)?;
        st.serialize_field("gb_per_s", &self.best())?;
        st.serialize_field("readings", &self.readings)?;
        st.end()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub read_bandwidth: Vec<Bandwidth>,
}

impl Machine {
    /// Adds a probe reading of `gb_per_s` with `threads` threads.
    pub fn record_bandwidth(&mut self, threads: u32, gb_per_s: f64) {
        match self
            .read_bandwidth
            .iter_mut()
            .find(|b| b.threads == threads)
        {
            Some(b) => b.readings.push(gb_per_s),
            None => self.read_bandwidth.push(Bandwidth {
                threads,
                readings: vec![gb_per_s],
            }),
        }
    }

    /// Sets every decode row's bandwidth limit and share of it from the best reading at
    /// its thread count (no reading: no limit).
    pub fn apply_limits(&self, rows: &mut [Row]) {
        for row in rows {
            let Some(bytes) = row.bytes_per_token else {
                continue;
            };
            let limit = self
                .read_bandwidth
                .iter()
                .find(|b| b.threads == row.threads)
                .map(|b| decode_limit(b.best(), bytes));
            row.decode_limit_tok_s = limit;
            row.percent_of_limit = limit.map(|l| 100.0 * row.tok_s_median / l);
        }
    }
}

/// What the bench read from each model file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelEntry {
    pub format: String,
    pub path: String,
    pub file_bytes: u64,
    pub tensor_bytes: u64,
    pub token_embd_bytes: u64,
    pub tied_head: bool,
    pub bytes_per_token: u64,
    pub kv_cache_bytes: u64,
    pub rss_budget_bytes: u64,
}

/// One point of the decode-cost curve: an engine's greedy decode speed once the context
/// holds `context` tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContextPoint {
    pub engine: String,
    /// As [`Row::settings`], for the curve's session (its context and batch).
    pub settings: String,
    pub format: String,
    pub threads: u32,
    /// Tokens in the context when the timed steps start (the prompt's length).
    pub context: u32,
    /// Greedy steps timed.
    pub decode_tokens: u32,
    pub decode_tok_s: f64,
}

/// Everything `target/bench/throughput.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub unix_time: u64,
    pub settings: Settings,
    pub machine: Machine,
    pub models: Vec<ModelEntry>,
    pub rows: Vec<Row>,
    /// The decode-cost curve (`Settings::context_lengths`).
    pub context_curve: Vec<ContextPoint>,
}

/// `model name` of a `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// A Markdown table with columns padded to their widest cell.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(width(c));
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c}{}", " ".repeat(w - width(c))))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header.to_vec());
    out += &format!(
        "|{}|\n",
        widths
            .iter()
            .map(|&w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

fn rss_cell(r: &Row) -> String {
    format!(
        "{} / {} ({:.0}%)",
        gb(r.peak_rss_bytes),
        gb(r.rss_budget_bytes),
        100.0 * r.peak_rss_bytes as f64 / r.rss_budget_bytes.max(1) as f64
    )
}

fn percent(v: Option<f64>) -> String {
    v.map(|p| format!("{p:.0}%")).unwrap_or_default()
}

/// The (format, threads, phase) groups of `rows`, in first-seen order.
fn groups(rows: &[Row]) -> Vec<(&str, u32, Phase)> {
    let mut keys = Vec::new();
    for r in rows {
        let k = (r.format.as_str(), r.threads, r.phase);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// Whether an engine name is one of our workers (the exact engine or its fast mode).
fn is_ours(engine: &str) -> bool {
    engine == OURS || engine == OURS_Q8_0_HEAD
}

/// One line per format × threads × phase: our median, the fastest reference's, their
/// ratio, our share of the bandwidth bound (decode), our peak RSS against its budget, and
/// the fast mode's Q8_0-head row with its ratio to the same reference.
pub fn summary_table(rows: &[Row]) -> String {
    let header = [
        "format",
        "threads",
        "phase",
        "ours tok/s",
        "best reference (tok/s)",
        "ours/best",
        "% of bandwidth limit",
        "RSS ours / budget",
        "Q8_0 head tok/s (/best)",
    ];
    let lines: Vec<Vec<String>> = groups(rows)
        .into_iter()
        .map(|(format, threads, phase)| {
            let group = rows
                .iter()
                .filter(|r| r.format == format && r.threads == threads && r.phase == phase);
            let ours = group.clone().find(|r| r.engine == OURS);
            let fast = group.clone().find(|r| r.engine == OURS_Q8_0_HEAD);
            let best = group
                .filter(|r| !is_ours(&r.engine))
                .max_by(|a, b| a.tok_s_median.total_cmp(&b.tok_s_median));
            let ratio = |o: Option<&Row>| match (o, best) {
                (Some(o), Some(b)) if b.tok_s_median > 0.0 => Some(o.tok_s_median / b.tok_s_median),
                _ => None,
            };
            vec![
                format.to_owned(),
                threads.to_string(),
                phase.name().to_owned(),
                ours.map(|r| format!("{:.1}", r.tok_s_median))
                    .unwrap_or_else(|| "-".into()),
                best.map(|r| format!("{} {:.1}", r.engine, r.tok_s_median))
                    .unwrap_or_else(|| "-".into()),
                ratio(ours).map_or_else(|| "-".into(), |r| format!("{r:.2}")),
                percent(ours.and_then(|r| r.percent_of_limit)),
                ours.map(rss_cell).unwrap_or_else(|| "-".into()),
                match (fast, ratio(fast)) {
                    (Some(f), Some(r)) => format!("{:.1} ({r:.2})", f.tok_s_median),
                    (Some(f), None) => format!("{:.1}", f.tok_s_median),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    render_table(&header, &lines)
}

/// One line per engine × format × threads: both phases, the decode bound, peak RSS, and
/// whether its generated ids equal those of our engine run with its numerics.
pub fn engines_table(rows: &[Row]) -> String {
    let header = [
        "format",
        "threads",
        "engine",
        "prefill tok/s",
        "decode tok/s",
        "decode % of limit",
        "peak RSS / budget",
        "ids vs ours (numerics)",
    ];
    let mut lines = Vec::new();
    for d in rows.iter().filter(|r| r.phase == Phase::Decode) {
        let prefill = rows.iter().find(|r| {
            r.phase == Phase::Prefill
                && r.engine == d.engine
                && r.format == d.format
                && r.threads == d.threads
        });
        let agreement = match (d.tokens_match_ours, d.first_token_difference) {
            (None, _) => "ours".to_owned(),
            (Some(true), _) => "same".to_owned(),
            (Some(false), Some(i)) => format!("differ from #{i}"),
            (Some(false), None) => "differ".to_owned(),
        };
        let agreement = format!("{agreement} ({})", d.numerics);
        lines.push(vec![
            d.format.clone(),
            d.threads.to_string(),
            d.engine.clone(),
            prefill
                .map(|p| format!("{:.1}", p.tok_s_median))
                .unwrap_or_else(|| "-".into()),
            format!("{:.1}", d.tok_s_median),
            percent(d.percent_of_limit),
            rss_cell(d),
            agreement,
        ]);
    }
    render_table(&header, &lines)
}

/// The decode-cost curve as a table: one line per format × threads × engine, one column
/// per context length, and our speed over the engine's at the longest context.
pub fn context_table(points: &[ContextPoint]) -> String {
    let mut contexts: Vec<u32> = points.iter().map(|p| p.context).collect();
    contexts.sort_unstable();
    contexts.dedup();
    let mut header = vec!["format".to_owned(), "threads".into(), "engine".into()];
    header.extend(contexts.iter().map(|c| format!("ctx {c} tok/s")));
    header.push("ours/engine at the longest".into());
    let mut keys: Vec<(&str, u32, &str)> = Vec::new();
    for p in points {
        let k = (p.format.as_str(), p.threads, p.engine.as_str());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let at = |format: &str, threads: u32, engine: &str, context: u32| {
        points
            .iter()
            .find(|p| {
                p.format == format
                    && p.threads == threads
                    && p.engine == engine
                    && p.context == context
            })
            .map(|p| p.decode_tok_s)
    };
    let longest = contexts.last().copied().unwrap_or(0);
    let lines: Vec<Vec<String>> = keys
        .into_iter()
        .map(|(format, threads, engine)| {
            let mut line = vec![format.to_owned(), threads.to_string(), engine.to_owned()];
            line.extend(contexts.iter().map(|&c| {
                at(format, threads, engine, c).map_or_else(|| "-".into(), |v| format!("{v:.1}"))
            }));
            let ratio = match (
                at(format, threads, OURS, longest),
                at(format, threads, engine, longest),
            ) {
                _ if is_ours(engine) => String::new(),
                (Some(o), Some(e)) if e > 0.0 => format!("{:.2}", o / e),
                _ => "-".into(),
            };
            line.push(ratio);
            line
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    render_table(&header, &lines)
}

/// Bar-chart palette, one colour per engine in first-seen order.
const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// `target/bench/throughput.svg`: one panel per phase; in each, one group of bars per
/// format × thread count (an engine's median tok/s per bar) and, on decode, the bandwidth
/// limit of the group as a dashed line across it; below, the decode-cost curve (decode
/// tok/s against context length, one line per engine × format × threads, in the engine's
/// colour, dashed at 2 threads and more). Hand-written SVG: no dependency.
pub fn svg(rows: &[Row], curve: &[ContextPoint]) -> String {
    let mut engines: Vec<&str> = Vec::new();
    for r in rows {
        if !engines.contains(&r.engine.as_str()) {
            engines.push(&r.engine);
        }
    }
    let (bar, gap, panel_h, top, left) = (14.0, 18.0, 220.0, 30.0, 50.0);
    let keys: Vec<(&str, u32)> = {
        let mut k = Vec::new();
        for r in rows {
            if !k.contains(&(r.format.as_str(), r.threads)) {
                k.push((r.format.as_str(), r.threads));
            }
        }
        k
    };
    for p in curve {
        if !engines.contains(&p.engine.as_str()) {
            engines.push(&p.engine);
        }
    }
    let group_w = bar * engines.len() as f64 + gap;
    let width = (left + group_w * keys.len() as f64).max(left + 420.0) + 180.0;
    let phases = [Phase::Prefill, Phase::Decode];
    let curve_h = if curve.is_empty() {
        0.0
    } else {
        panel_h + 60.0
    };
    let height = top + (panel_h + 60.0) * phases.len() as f64 + curve_h;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
font-family=\"sans-serif\" font-size=\"10\">\n"
    );
    for (p, phase) in phases.iter().enumerate() {
        let y0 = top + (panel_h + 60.0) * p as f64 + panel_h;
        let in_phase: Vec<&Row> = rows.iter().filter(|r| r.phase == *phase).collect();
        let max = in_phase
            .iter()
            .flat_map(|r| [r.tok_s_median, r.decode_limit_tok_s.unwrap_or(0.0)])
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let scale = panel_h / max;
        out += &format!(
            "<text x=\"{left}\" y=\"{:.0}\" font-size=\"13\">{} tok/s (max {max:.1})</text>\n\
<line x1=\"{left}\" y1=\"{y0:.1}\" x2=\"{:.1}\" y2=\"{y0:.1}\" stroke=\"black\"/>\n",
            y0 - panel_h - 8.0,
            phase.name(),
            left + group_w * keys.len() as f64
        );
        for (g, (format, threads)) in keys.iter().enumerate() {
            let gx = left + group_w * g as f64;
            for r in in_phase
                .iter()
                .filter(|r| r.format == *format && r.threads == *threads)
            {
                let e = engines.iter().position(|&n| n == r.engine).unwrap_or(0);
                let h = r.tok_s_median * scale;
                out += &format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{h:.1}\" \
fill=\"{}\"><title>{} {format} {threads}t {}: {:.1} tok/s</title></rect>\n",
                    gx + bar * e as f64,
                    y0 - h,
                    COLOURS[e % COLOURS.len()],
                    escape_xml(&r.engine),
                    phase.name(),
                    r.tok_s_median
                );
            }
            if let Some(limit) = in_phase
                .iter()
                .find(|r| r.format == *format && r.threads == *threads)
                .and_then(|r| r.decode_limit_tok_s)
            {
                let y = y0 - limit * scale;
                out += &format!(
                    "<line x1=\"{gx:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" \
stroke=\"black\" stroke-dasharray=\"4 2\"><title>bandwidth limit {limit:.1} tok/s</title></line>\n",
                    gx + group_w - gap
                );
            }
            out += &format!(
                "<text x=\"{gx:.1}\" y=\"{:.1}\">{format} {threads}t</text>\n",
                y0 + 12.0
            );
        }
    }
    if !curve.is_empty() {
        let y0 = top + (panel_h + 60.0) * phases.len() as f64 + panel_h;
        out += &curve_panel(curve, &engines, (left, y0), (400.0, panel_h));
    }
    let lx = (left + group_w * keys.len() as f64).max(left + 420.0) + 10.0;
    for (e, name) in engines.iter().enumerate() {
        let y = top + 14.0 * e as f64;
        out += &format!(
            "<rect x=\"{lx:.1}\" y=\"{y:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            COLOURS[e % COLOURS.len()],
            lx + 14.0,
            y + 9.0,
            escape_xml(name)
        );
    }
    out += &format!(
        "<text x=\"{lx:.1}\" y=\"{:.1}\">- - - decode bandwidth limit</text>\n</svg>\n",
        top + 14.0 * engines.len() as f64 + 9.0
    );
    out
}

/// The decode-cost curve's panel: x is the context length on a log scale, y decode tok/s
/// from 0; `(x0, y0)` is its lower left corner.
fn curve_panel(
    curve: &[ContextPoint],
    engines: &[&str],
    (x0, y0): (f64, f64),
    (w, h): (f64, f64),
) -> String {
    let (lo, hi) = curve.iter().fold((f64::MAX, 0f64), |(lo, hi), p| {
        let c = f64::from(p.context.max(1));
        (lo.min(c), hi.max(c))
    });
    let span = (hi / lo).ln().max(1e-9);
    let max = curve
        .iter()
        .map(|p| p.decode_tok_s)
        .fold(0f64, f64::max)
        .max(1e-9);
    let x = |c: u32| x0 + w * (f64::from(c.max(1)) / lo).ln() / span;
    let y = |v: f64| y0 - h * v / max;
    let mut out = format!(
        "<text x=\"{x0}\" y=\"{:.0}\" font-size=\"13\">decode tok/s against context length \
(max {max:.1})</text>\n<line x1=\"{x0}\" y1=\"{y0:.1}\" x2=\"{:.1}\" y2=\"{y0:.1}\" \
stroke=\"black\"/>\n",
        y0 - h - 8.0,
        x0 + w
    );
    let mut contexts: Vec<u32> = curve.iter().map(|p| p.context).collect();
    contexts.sort_unstable();
    contexts.dedup();
    for c in contexts {
        out += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\">{c}</text>\n",
            x(c) - 8.0,
            y0 + 12.0
        );
    }
    let mut lines: Vec<(&str, &str, u32)> = Vec::new();
    for p in curve {
        let k = (p.engine.as_str(), p.format.as_str(), p.threads);
        if !lines.contains(&k) {
            lines.push(k);
        }
    }
    for (engine, format, threads) in lines {
        let mut pts: Vec<&ContextPoint> = curve
            .iter()
            .filter(|p| p.engine == engine && p.format == format && p.threads == threads)
            .collect();
        pts.sort_by_key(|p| p.context);
        let path: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.context), y(p.decode_tok_s)))
            .collect();
        let e = engines.iter().position(|&n| n == engine).unwrap_or(0);
        let dash = if threads > 1 {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        };
        out += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}>\
<title>{} {format} {threads}t</title></polyline>\n",
            path.join(" "),
            COLOURS[e % COLOURS.len()],
            escape_xml(engine)
        );
    }
    out
}

fn escape_xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(engine: &str, threads: u32, phase: Phase, median: f64) -> Row {
        let decode = phase == Phase::Decode;
        Row {
            engine: engine.into(),
            settings: "n_ctx 512".into(),
            version: format!("{engine} v1"),
            format: "tq2_0".into(),
            threads,
            phase,
            tokens: if decode { 64 } else { 128 },
            tok_s_median: median,
            tok_s_runs: vec![median],
            peak_rss_bytes: 1_300_000_000,
            rss_budget_bytes: 1_365_000_000,
            model_bytes: 1_203_562_688,
            bytes_per_token: decode.then_some(1_190_000_000),
            decode_limit_tok_s: decode.then_some(10.0),
            percent_of_limit: decode.then_some(median * 10.0),
            numerics: if is_ours(engine) { "llama.cpp" } else { engine }.into(),
            tokens_match_ours: (engine != OURS).then_some(engine == "llama.cpp"),
            first_token_difference: match engine {
                "bitnet.cpp" => Some(17),
                OURS_Q8_0_HEAD => Some(40),
                _ => None,
            },
        }
    }

    fn rows() -> Vec<Row> {
        let mut v = Vec::new();
        for (phase, ours, llama, bitnet) in [
            (Phase::Prefill, 25.0, 20.9, 19.6),
            (Phase::Decode, 7.0, 6.8, 7.3),
        ] {
            v.push(row(OURS, 1, phase, ours));
            v.push(row(OURS_Q8_0_HEAD, 1, phase, ours * 1.2));
            v.push(row("llama.cpp", 1, phase, llama));
            v.push(row("bitnet.cpp", 1, phase, bitnet));
        }
        v
    }

    #[test]
    fn decode_limits_come_from_the_best_probe_at_the_rows_thread_count() {
        let mut machine = Machine {
            cpu_model: "test".into(),
            logical_cpus: 2,
            read_bandwidth: Vec::new(),
        };
        for (threads, gb) in [(1, 9.0), (2, 14.0), (1, 11.9), (1, 10.0)] {
            machine.record_bandwidth(threads, gb);
        }
        assert_eq!(
            machine.read_bandwidth,
            vec![
                Bandwidth {
                    threads: 1,
                    readings: vec![9.0, 11.9, 10.0],
                },
                Bandwidth {
                    threads: 2,
                    readings: vec![14.0],
                },
            ]
        );
        assert_eq!(machine.read_bandwidth[0].best(), 11.9);
        assert_eq!(machine.read_bandwidth[0].lowest(), 9.0);
        let j = serde_json::to_value(&machine.read_bandwidth[0]).expect("serializes");
        assert_eq!(
            j,
            serde_json::json!({"threads": 1, "gb_per_s": 11.9, "readings": [9.0, 11.9, 10.0]})
        );
        let mut rows = vec![
            row(OURS, 1, Phase::Decode, 7.0),
            row(OURS, 1, Phase::Prefill, 25.0),
            row(OURS, 3, Phase::Decode, 9.0),
        ];
        machine.apply_limits(&mut rows);
        // 11.9 GB/s over 1.19 GB per token: 10 tok/s, of which 7 is 70%.
        let limit = rows[0]
            .decode_limit_tok_s
            .expect("a decode row has a limit");
        assert!((limit - 10.0).abs() < 1e-9, "{limit}");
        let pct = rows[0].percent_of_limit.expect("and a share of it");
        assert!((pct - 70.0).abs() < 1e-9, "{pct}");
        // Prefill has none; a thread count never probed has none.
        assert_eq!(rows[1].decode_limit_tok_s, None);
        assert_eq!(
            (rows[2].decode_limit_tok_s, rows[2].percent_of_limit),
            (None, None)
        );
    }

    #[test]
    fn the_summary_compares_ours_with_the_fastest_reference() {
        let want = "\
| format | threads | phase   | ours tok/s | best reference (tok/s) | ours/best | % of bandwidth limit | RSS ours / budget       | Q8_0 head tok/s (/best) |
|--------|---------|---------|------------|------------------------|-----------|----------------------|-------------------------|-------------------------|
| tq2_0  | 1       | prefill | 25.0       | llama.cpp 20.9         | 1.20      |                      | 1.30 GB / 1.36 GB (95%) | 30.0 (1.44)             |
| tq2_0  | 1       | decode  | 7.0        | bitnet.cpp 7.3         | 0.96      | 70%                  | 1.30 GB / 1.36 GB (95%) | 8.4 (1.15)              |
";
        assert_eq!(summary_table(&rows()), want);
    }

    #[test]
    fn the_engine_table_says_where_tokens_differ() {
        let want = "\
| format | threads | engine                | prefill tok/s | decode tok/s | decode % of limit | peak RSS / budget       | ids vs ours (numerics)       |
|--------|---------|-----------------------|---------------|--------------|-------------------|-------------------------|------------------------------|
| tq2_0  | 1       | bitnet-rs             | 25.0          | 7.0          | 70%               | 1.30 GB / 1.36 GB (95%) | ours (llama.cpp)             |
| tq2_0  | 1       | bitnet-rs (Q8_0 head) | 30.0          | 8.4          | 84%               | 1.30 GB / 1.36 GB (95%) | differ from #40 (llama.cpp)  |
| tq2_0  | 1       | llama.cpp             | 20.9          | 6.8          | 68%               | 1.30 GB / 1.36 GB (95%) | same (llama.cpp)             |
| tq2_0  | 1       | bitnet.cpp            | 19.6          | 7.3          | 73%               | 1.30 GB / 1.36 GB (95%) | differ from #17 (bitnet.cpp) |
";
        assert_eq!(engines_table(&rows()), want);
    }

    fn curve() -> Vec<ContextPoint> {
        let mut v = Vec::new();
        for (engine, speeds) in [
            (OURS, [20.0, 19.0, 16.0]),
            ("bitnet.cpp", [18.0, 16.0, 12.0]),
        ] {
            for (context, tok_s) in [128, 512, 4096].into_iter().zip(speeds) {
                v.push(ContextPoint {
                    engine: engine.into(),
                    settings: "n_ctx 4112".into(),
                    format: "i2_s".into(),
                    threads: 2,
                    context,
                    decode_tokens: 16,
                    decode_tok_s: tok_s,
                });
            }
        }
        v
    }

    #[test]
    fn the_context_table_has_a_column_per_length_and_the_ratio_at_the_longest() {
        let want = "\
| format | threads | engine     | ctx 128 tok/s | ctx 512 tok/s | ctx 4096 tok/s | ours/engine at the longest |
|--------|---------|------------|---------------|---------------|----------------|----------------------------|
| i2_s   | 2       | bitnet-rs  | 20.0          | 19.0          | 16.0           |                            |
| i2_s   | 2       | bitnet.cpp | 18.0          | 16.0          | 12.0           | 1.33                       |
";
        assert_eq!(context_table(&curve()), want);
        let j = serde_json::to_value(&curve()[0]).unwrap();
        assert_eq!(
            (j["context"].as_u64(), j["decode_tok_s"].as_f64()),
            (Some(128), Some(20.0))
        );
    }

    #[test]
    fn the_picture_draws_one_line_per_engine_of_the_curve() {
        let picture = svg(&rows(), &curve());
        assert_eq!(picture.matches("<polyline ").count(), 2, "{picture}");
        assert!(picture.contains("<title>bitnet.cpp i2_s 2t</title>"));
        assert!(picture.contains("decode tok/s against context length (max 20.0)"));
        assert!(!svg(&rows(), &[]).contains("<polyline"));
    }

    #[test]
    fn the_picture_has_a_bar_per_row_and_a_limit_per_decode_group() {
        let rows = rows();
        let svg = svg(&rows, &[]);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        // One bar per row and one legend swatch per engine.
        let bars = svg.matches("<rect ").count();
        assert_eq!(bars, rows.len() + 4, "{svg}");
        assert_eq!(svg.matches("bandwidth limit 10.0 tok/s").count(), 1);
        assert!(svg.contains("bitnet-rs (Q8_0 head) tq2_0 1t decode: 8.4 tok/s"));
    }

    #[test]
    fn tables_pad_by_characters_not_bytes() {
        let t = render_table(&["a", "bb"], &[vec!["×".into(), "1".into()]]);
        assert_eq!(t, "| a | bb |\n|---|----|\n| × | 1  |\n");
    }

    #[test]
    fn the_cpu_model_comes_from_cpuinfo() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn rows_serialise_with_lowercase_phases_and_nulls() {
        let j = serde_json::to_value(row(OURS, 2, Phase::Prefill, 30.0)).unwrap();
        assert_eq!(j["phase"], "prefill");
        assert_eq!(j["threads"], 2);
        assert!(j["decode_limit_tok_s"].is_null());
        assert!(j["tokens_match_ours"].is_null());
        assert_eq!(j["numerics"], "llama.cpp");
    }
}
