//! What a parity run leaves behind: `target/crossval/<case>.json` for every case, and
//! `summary.json`, `summary.txt` (the table `make crossval` prints) and `report.html` (a
//! per-position plot per case) rewritten as each case finishes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::cases::Mode;
use crate::localize::{FirstDivergentOp, OpTrace};
use crate::logits_compare::LogitsDivergence;

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// The reference was unavailable and `CROSSVAL_ALLOW_CPP_FAIL=1` asked for a skip.
    Skipped,
}

/// Everything known about one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub case: String,
    pub model: String,
    pub format: String,
    pub reference: String,
    pub reference_version: String,
    pub prompt: String,
    pub mode: Mode,
    pub n_tokens: usize,
    pub prompt_tokens: Vec<u32>,
    pub rust_generated: Vec<u32>,
    pub reference_generated: Vec<u32>,
    /// Free-running: the first generated index where the two sides chose differently.
    pub first_token_mismatch: Option<usize>,
    /// Free-running: whether that mismatch was a near-tie on the reference side.
    pub mismatch_was_near_tie: Option<bool>,
    pub divergence: Option<LogitsDivergence>,
    /// A failing case's localisation: the first op, in graph order, over its NMSE
    /// threshold at the first diverging position (`crate::localize`).
    pub first_divergent_op: Option<FirstDivergentOp>,
    /// Per-op NMSE at one position, for every layer: kept for failing cases and, with
    /// `BITNET_TRACE=1`, passing ones; written to `<case>.trace.json`, not to `<case>.json`.
    #[serde(skip)]
    pub op_trace: Option<OpTrace>,
    pub status: Status,
    /// The failure message (a bug report) or the skip reason.
    pub message: Option<String>,
}

/// One row of `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub case: String,
    pub model: String,
    pub format: String,
    pub reference: String,
    pub reference_version: String,
    pub prompt: String,
    pub mode: Mode,
    pub n_tokens: usize,
    pub n_positions: usize,
    pub first_divergence_token: Option<usize>,
    pub min_cosine: Option<f64>,
    pub max_kl: Option<f64>,
    pub max_abs: Option<f32>,
    pub status: Status,
    pub pass: bool,
}

impl CaseReport {
    /// This report's summary row.
    pub fn summary_row(&self) -> SummaryRow {
        let d = self.divergence.as_ref();
        SummaryRow {
            case: self.case.clone(),
            model: self.model.clone(),
            format: self.format.clone(),
            reference: self.reference.clone(),
            reference_version: self.reference_version.clone(),
            prompt: self.prompt.clone(),
            mode: self.mode,
            n_tokens: self.n_tokens,
            n_positions: d.map_or(0, |d| d.per_token_cosine_sim.len()),
            first_divergence_token: d.and_then(|d| d.first_divergence_token),
            min_cosine: d.map(|d| d.per_token_cosine_sim.iter().copied().fold(1.0, f64::min)),
            max_kl: d.map(|d| d.per_token_kl.iter().copied().fold(0.0, f64::max)),
            max_abs: d.map(|d| d.max_absolute_diff),
            status: self.status,
            pass: self.status == Status::Pass,
        }
    }
}

/// The folder reports go to: `$BITNET_CROSSVAL_DIR`, else `<workspace>/target/crossval`.
pub fn report_dir() -> PathBuf {
    std::env::var_os("BITNET_CROSSVAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/crossval"))
}

/// Reports of this process's cases, by case id.
static REPORTS: Mutex<BTreeMap<String, CaseReport>> = Mutex::new(BTreeMap::new());

/// Writes `<case>.json` and rewrites the summary files and the HTML report with every case
/// this process has finished so far.
pub fn record(report: &CaseReport) -> std::io::Result<()> {
    let dir = report_dir();
    std::fs::create_dir_all(&dir)?;
    write_atomic(
        &dir.join(format!("{}.json", report.case)),
        &serde_json::to_vec_pretty(report)?,
    )?;
    if let Some(trace) = &report.op_trace {
        write_atomic(
            &dir.join(format!("{}.trace.json", report.case)),
            &serde_json::to_vec_pretty(trace)?,
        )?;
    }
    let mut all = REPORTS.lock().unwrap_or_else(|e| e.into_inner());
    all.insert(report.case.clone(), report.clone());
    let rows: Vec<SummaryRow> = all.values().map(CaseReport::summary_row).collect();
    write_atomic(
        &dir.join("summary.json"),
        &serde_json::to_vec_pretty(&rows)?,
    )?;
    write_atomic(&dir.join("summary.txt"), table(&rows).as_bytes())?;
    write_atomic(&dir.join("report.html"), html(all.values()).as_bytes())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn opt<T: std::fmt::Display>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

/// The table's header line.
pub fn table_header() -> String {
    format!(
        "{:<6} {:<52} {:<13} {:<13} {:<5} {:>3} {:>4} {:>6} {:>12} {:>10} {:>10}",
        "status",
        "model",
        "reference",
        "prompt",
        "mode",
        "n",
        "pos",
        "first",
        "min cos",
        "max KL",
        "max |Δ|"
    )
}

/// One case as a table line.
pub fn table_row(r: &SummaryRow) -> String {
    format!(
        "{:<6} {:<52} {:<13} {:<13} {:<5} {:>3} {:>4} {:>6} {:>12} {:>10} {:>10}",
        match r.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
        },
        r.model,
        r.reference,
        r.prompt,
        r.mode.id(),
        r.n_tokens,
        r.n_positions,
        opt(r.first_divergence_token, |p| p.to_string()),
        opt(r.min_cosine, |c| format!("{c:.9}")),
        opt(r.max_kl, |k| format!("{k:.2e}")),
        opt(r.max_abs, |a| format!("{a:.2e}")),
    )
}

/// The human-readable table: a header, one line per case, and the counts.
pub fn table(rows: &[SummaryRow]) -> String {
    let mut s = table_header();
    s.push('\n');
    for r in rows {
        s.push_str(&table_row(r));
        s.push('\n');
    }
    let pass = rows.iter().filter(|r| r.pass).count();
    let skipped = rows.iter().filter(|r| r.status == Status::Skipped).count();
    let _ = writeln!(
        s,
        "crossval: {pass} passed, {} failed, {skipped} skipped",
        rows.len() - pass - skipped
    );
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG polyline plot of `values` against position (y from 0 to the series max).
fn plot(values: &[f64], colour: &str) -> String {
    const W: f64 = 320.0;
    const H: f64 = 60.0;
    let max = values.iter().copied().fold(0.0, f64::max);
    let n = values.len().max(2) - 1;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if max > 0.0 { H - v / max * H } else { H };
            format!("{:.1},{:.1}", i as f64 / n as f64 * W, y)
        })
        .collect();
    format!(
        "<svg width=\"{W}\" height=\"{H}\" viewBox=\"0 -2 {W} {}\"><polyline fill=\"none\" \
stroke=\"{colour}\" points=\"{}\"/></svg><div class=\"max\">max {max:.3e}</div>",
        H + 4.0,
        points.join(" ")
    )
}

/// The HTML report: a summary table, then per case its 1 − cosine and KL per position.
pub fn html<'a>(reports: impl Iterator<Item = &'a CaseReport>) -> String {
    let mut s = String::from(
        "<!doctype html><meta charset=\"utf-8\"><title>bitnet-rs parity report</title>\
<style>body{font:13px sans-serif;margin:1em}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}.fail{background:#fdd}\
.skipped{background:#ffd}.max{color:#666;font-size:11px}</style>\
<h1>bitnet-rs per-token parity</h1><table><tr><th>case</th><th>reference</th>\
<th>status</th><th>first divergence</th><th>1 − cosine per position</th>\
<th>KL(p_ref‖p_rust) per position</th></tr>",
    );
    let mut traces = String::new();
    for r in reports {
        if let Some(t) = &r.op_trace {
            traces.push_str(&heat_map(&r.case, t, r.first_divergent_op.as_ref()));
        }
        let (cos, kl) = r.divergence.as_ref().map_or((Vec::new(), Vec::new()), |d| {
            (
                d.per_token_cosine_sim.iter().map(|c| 1.0 - c).collect(),
                d.per_token_kl.clone(),
            )
        });
        let class = match r.status {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        };
        let _ = write!(
            s,
            "<tr class=\"{class}\"><td>{}</td><td>{}<br><small>{}</small></td><td>{class}{}</td>\
<td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.case),
            escape(&r.reference),
            escape(&r.reference_version),
            r.message
                .as_deref()
                .map(|m| format!("<br><small>{}</small>", escape(m).replace('\n', "<br>")))
                .unwrap_or_default(),
            opt(
                r.divergence.as_ref().and_then(|d| d.first_divergence_token),
                |p| p.to_string()
            ),
            plot(&cos, "#c33"),
            plot(&kl, "#36c"),
        );
    }
    s.push_str("</table>");
    if !traces.is_empty() {
        s.push_str(
            "<h2>Per-op NMSE (layers × ops)</h2><p>Σ(a−b)²/Σa² of each op's row at the traced \
position (a the reference). Green: 0; yellow to orange: under the op's threshold; red: over \
it; grey: not compared. The outlined cell is the first divergent op.</p>",
        );
        s.push_str(&traces);
    }
    s
}

/// The cell colour of an NMSE against its threshold.
fn nmse_colour(nmse: f64, threshold: f64) -> &'static str {
    if nmse == 0.0 {
        "#9d9"
    } else if nmse <= threshold * 1e-4 {
        "#ffc"
    } else if nmse <= threshold {
        "#fc8"
    } else if nmse <= threshold * 1e4 {
        "#f66"
    } else {
        "#c00"
    }
}

/// One trace as a table: a row per layer (and one for the output head), a column per op
/// kind (and occurrence) in graph order.
fn heat_map(case: &str, t: &OpTrace, first: Option<&FirstDivergentOp>) -> String {
    let col = |o: &crate::localize::OpStat| {
        if o.occurrence == 0 {
            o.op.clone()
        } else {
            format!("{}#{}", o.op, o.occurrence)
        }
    };
    let mut cols: Vec<String> = Vec::new();
    let mut rows: Vec<Option<usize>> = Vec::new();
    for o in &t.ops {
        let c = col(o);
        if !cols.contains(&c) {
            cols.push(c);
        }
        if !rows.contains(&o.layer) {
            rows.push(o.layer);
        }
    }
    let mut s = format!(
        "<h3>{} — position {}</h3><table><tr><th>layer</th>",
        escape(case),
        t.position
    );
    for c in &cols {
        let _ = write!(s, "<th>{}</th>", escape(c));
    }
    s.push_str("</tr>");
    for layer in &rows {
        let _ = write!(
            s,
            "<tr><th>{}</th>",
            layer.map_or_else(|| "out".to_string(), |l| l.to_string())
        );
        for c in &cols {
            match t.ops.iter().find(|o| o.layer == *layer && col(o) == *c) {
                Some(o) => {
                    let outline = if first.is_some_and(|f| f.name == o.name) {
                        ";outline:3px solid #000"
                    } else {
                        ""
                    };
                    let _ = write!(
                        s,
                        "<td style=\"background:{}{outline}\" title=\"{} NMSE {:.3e} \
(threshold {:.0e}), max |Δ| {:.3e}\">{}</td>",
                        nmse_colour(o.nmse, o.threshold),
                        escape(&o.name),
                        o.nmse,
                        o.threshold,
                        o.max_abs,
                        if o.nmse == 0.0 {
                            "0".to_string()
                        } else {
                            format!("{:.0e}", o.nmse)
                        }
                    );
                }
                None => s.push_str("<td style=\"background:#ddd\"></td>"),
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    if !t.reference_only.is_empty() || !t.ours_only.is_empty() {
        let _ = write!(
            s,
            "<p class=\"max\">reference only: {}<br>bitnet-rs only: {}</p>",
            escape(&t.reference_only.join(", ")),
            escape(&t.ours_only.join(", "))
        );
    }
    s
}
