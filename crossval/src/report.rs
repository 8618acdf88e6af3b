//! What a parity run leaves behind: `target/crossval/<case>.json` for every case, and
//! `summary.json`, `summary.txt` (the table `make crossval` prints) and `report.html` (a
//! per-position plot per case) rewritten as each case finishes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::cases::Mode;
use crate::localize::{FirstDivergentOp, OpTrace};
use crate::logits_compare::LogitsDivergence;
use crate::tolerance::ChosenTolerance;

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// The reference was unavailable and `CROSSVAL_ALLOW_CPP_FAIL=1` asked for a skip.
    Skipped,
    /// The case cannot run on this model (a reference that cannot load the file, a prompt
    /// longer than the model's context): neither a pass nor a failure; the message says why.
    NotApplicable,
}

impl Status {
    /// The status as tables show it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
            Status::NotApplicable => "n/a",
        }
    }
}

/// Everything known about one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub case: String,
    pub model: String,
    pub format: String,
    pub reference: String,
    pub reference_version: String,
    /// The reference session's runtime settings (threads, batch, KV types, ...).
    pub reference_settings: String,
    pub prompt: String,
    pub mode: Mode,
    pub n_tokens: usize,
    pub prompt_tokens: Vec<u32>,
    /// The reference's top-5 token ids at each position of the case (its own greedy path).
    pub reference_top5: Vec<Vec<u32>>,
    /// [`crate::runner::logits_digest`] of the reference's rows of the case.
    pub reference_logits_digest: String,
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
    /// The tolerance the case ran under, with its name and the reason it was chosen.
    pub tolerance: Option<ChosenTolerance>,
    /// Per-op NMSE at one position, for every layer: kept for failing cases and, with
    /// `BITNET_TRACE=1`, passing ones; written to `<case>.trace.json`, not to `<case>.json`.
    #[serde(skip)]
    pub op_trace: Option<OpTrace>,
    pub status: Status,
    /// The failure message (a bug report) or the skip reason.
    pub message: Option<String>,
}

/// One row of `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SummaryRow {
    pub case: String,
    pub model: String,
    pub format: String,
    pub reference: String,
    pub reference_version: String,
    #[serde(default)]
    pub reference_settings: String,
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
    /// Why the case was not applicable or skipped, or the first line of its failure.
    pub note: Option<String>,
    /// The tolerance's name (`LLAMA_CPP_BITNET`, `USER_MODEL`, ...), when the case ran.
    pub tolerance: Option<String>,
}

impl CaseReport {
    /// A row for a case that could not run at all: a (model, reference) pair the reference
    /// cannot load ([`Status::NotApplicable`]), or a file that is not a model
    /// ([`Status::Fail`]). `message` says why.
    pub fn without_run(
        case: String,
        model: String,
        reference: &str,
        status: Status,
        message: String,
    ) -> CaseReport {
        CaseReport {
            case,
            model,
            format: String::new(),
            reference: reference.to_owned(),
            reference_version: String::new(),
            reference_settings: String::new(),
            prompt: "-".into(),
            mode: Mode::TeacherForced,
            n_tokens: 0,
            prompt_tokens: Vec::new(),
            reference_top5: Vec::new(),
            reference_logits_digest: String::new(),
            rust_generated: Vec::new(),
            reference_generated: Vec::new(),
            first_token_mismatch: None,
            mismatch_was_near_tie: None,
            divergence: None,
            first_divergent_op: None,
            tolerance: None,
            op_trace: None,
            status,
            message: Some(message),
        }
    }

    /// This report's summary row.
    pub fn summary_row(&self) -> SummaryRow {
        let d = self.divergence.as_ref();
        SummaryRow {
            case: self.case.clone(),
            model: self.model.clone(),
            format: self.format.clone(),
            reference: self.reference.clone(),
            reference_version: self.reference_version.clone(),
            reference_settings: self.reference_settings.clone(),
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
            note: self
                .message
                .as_deref()
                .and_then(|m| m.lines().next())
                .map(str::to_owned),
            tolerance: self.tolerance.as_ref().map(|t| t.name.to_owned()),
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

/// A table printed beside the case summary (`summary.txt` repeats each `<name>.txt`): its
/// header, and its rows by key, as JSON and as a text line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Table {
    header: String,
    rows: BTreeMap<String, (serde_json::Value, String)>,
}

impl Table {
    /// The header, then one line per row.
    fn text(&self) -> String {
        let mut text = format!("{}\n", self.header);
        for (_, line) in self.rows.values() {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// This process's rows of each side table, by table name.
static TABLES: Mutex<BTreeMap<String, Table>> = Mutex::new(BTreeMap::new());

/// Adds (or replaces) row `key` of table `name` in this process's shard, then rewrites
/// `target/crossval/<name>.json` (every shard's rows, in key order) and `<name>.txt`
/// (`header`, then one `line` per row) with the summary files.
pub fn record_table_row<T: Serialize>(
    name: &str,
    header: &str,
    key: &str,
    row: &T,
    line: String,
) -> std::io::Result<()> {
    let dir = report_dir();
    std::fs::create_dir_all(&dir)?;
    let value = serde_json::to_value(row)?;
    {
        let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
        let table = tables.entry(name.to_owned()).or_default();
        header.clone_into(&mut table.header);
        table.rows.insert(key.to_owned(), (value, line));
    }
    let all = REPORTS.lock().unwrap_or_else(|e| e.into_inner());
    write_shard(&dir, &all)
}

/// What one test process contributes to the summary files: every test binary of the suite
/// (the rstest matrix, the user-model harness) is its own process — and under cargo-nextest
/// every test is — so each writes its shard (`shards/<binary>.json`) and the summary files
/// and side tables are merged from all shards.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Shard {
    rows: Vec<SummaryRow>,
    /// `<tr>` rows of the HTML report's case table.
    html_rows: String,
    /// The HTML report's per-op heat maps.
    html_traces: String,
    /// This process's rows of each side table.
    #[serde(default)]
    tables: BTreeMap<String, Table>,
}

/// This process's shard name: the test binary's name without cargo's hash suffix, and the
/// process id where cargo-nextest runs each test in a process of its own.
fn shard_name() -> String {
    let binary = binary_name();
    if std::env::var_os("NEXTEST_EXECUTION_MODE").is_some_and(|m| m == "process-per-test") {
        format!("{binary}-pid{}", std::process::id())
    } else {
        binary
    }
}

/// The test binary's name without cargo's hash suffix.
fn binary_name() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "crossval".into());
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_owned()
        }
        _ => stem,
    }
}

/// Writes `<case>.json` and rewrites this process's shard, then the summary files and the
/// HTML report from every shard.
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
    write_shard(&dir, &all)
}

/// A test that could not run because a reference is unavailable under the explicit opt-in
/// `CROSSVAL_ALLOW_CPP_FAIL=1`: printed, and recorded as a `skipped` row, so the summary's
/// count line shows it (libtest can only report such a test as `ok`).
pub fn record_skip(case: &str, reference: &str, reason: &str) -> std::io::Result<()> {
    eprintln!("SKIPPED (CROSSVAL_ALLOW_CPP_FAIL=1) {case}: {reason}");
    let row = CaseReport::without_run(
        case.to_owned(),
        case.to_owned(),
        reference,
        Status::Skipped,
        format!("skipped (CROSSVAL_ALLOW_CPP_FAIL=1): {reason}"),
    );
    record(&row)
}

/// Empties this process's shard (and rewrites the summary files): a run that records no
/// case, such as the user-model harness with no user models, must not leave the rows of
/// an earlier run behind.
pub fn clear_shard() -> std::io::Result<()> {
    let dir = report_dir();
    std::fs::create_dir_all(&dir)?;
    let all = REPORTS.lock().unwrap_or_else(|e| e.into_inner());
    write_shard(&dir, &all)
}

fn write_shard(dir: &Path, reports: &BTreeMap<String, CaseReport>) -> std::io::Result<()> {
    let mut shard = Shard {
        rows: reports.values().map(CaseReport::summary_row).collect(),
        tables: TABLES.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        ..Shard::default()
    };
    for r in reports.values() {
        shard.html_rows.push_str(&html_row(r));
        if let Some(t) = &r.op_trace {
            shard
                .html_traces
                .push_str(&heat_map(&r.case, t, r.first_divergent_op.as_ref()));
        }
    }
    let shards = dir.join("shards");
    std::fs::create_dir_all(&shards)?;
    write_atomic(
        &shards.join(format!("{}.json", shard_name())),
        &serde_json::to_vec(&shard)?,
    )?;
    write_merged(dir)
}

/// Rewrites the merged files (below) from the shards as they are, e.g. after the shards of
/// a partitioned run were gathered (`tests/merge_reports.rs`).
pub fn refresh_merged() -> std::io::Result<()> {
    write_merged(&report_dir())
}

/// The tables written beside the summary (`<name>.txt`, `<name>.json`) and repeated at the
/// end of `summary.txt`: the reference-defaults axis and the definition check.
const SIDE_TABLES: [&str; 3] = ["defaults", "definition", "definition-user"];

/// Rewrites `summary.json`, `summary.txt` and `report.html` from every shard (sorted by
/// name: the merged files are the same whichever binary wrote last) and the tables beside
/// them.
fn write_merged(dir: &Path) -> std::io::Result<()> {
    let shards = dir.join("shards");
    std::fs::create_dir_all(&shards)?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&shards)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let mut merged = Shard::default();
    for p in names {
        // A shard being replaced by another process may be missing or (never, thanks to
        // the atomic rename) half-written: skip what cannot be read.
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        let Ok(s) = serde_json::from_slice::<Shard>(&bytes) else {
            continue;
        };
        merged.rows.extend(s.rows);
        merged.html_rows.push_str(&s.html_rows);
        merged.html_traces.push_str(&s.html_traces);
        for (name, table) in s.tables {
            let into = merged.tables.entry(name).or_default();
            into.header = table.header;
            into.rows.extend(table.rows);
        }
    }
    for (name, table) in &merged.tables {
        let json: Vec<&serde_json::Value> = table.rows.values().map(|(v, _)| v).collect();
        write_atomic(
            &dir.join(format!("{name}.json")),
            &serde_json::to_vec_pretty(&json)?,
        )?;
        write_atomic(&dir.join(format!("{name}.txt")), table.text().as_bytes())?;
    }
    write_atomic(
        &dir.join("summary.json"),
        &serde_json::to_vec_pretty(&merged.rows)?,
    )?;
    // The exact axis' cases, then the side tables (both axes' settings and the definition
    // check), then the counts: the last line of the run.
    let mut text = cases_table(&merged.rows);
    for table in SIDE_TABLES
        .iter()
        .filter_map(|name| merged.tables.get(*name))
    {
        text.push('\n');
        text.push_str(&table.text());
    }
    text.push_str(&counts(&merged.rows));
    text.push('\n');
    write_atomic(&dir.join("summary.txt"), text.as_bytes())?;
    let side_table = |name: &str| -> Vec<serde_json::Value> {
        merged.tables.get(name).map_or_else(Vec::new, |t| {
            t.rows.values().map(|(v, _)| v.clone()).collect()
        })
    };
    let defaults = side_table("defaults");
    // The built-in models' definition rows, then the user models'.
    let mut definition = side_table("definition");
    definition.extend(side_table("definition-user"));
    write_atomic(
        &dir.join("report.html"),
        html(&merged, &defaults, &definition).as_bytes(),
    )
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

/// One case as a table line; a case that did not run says why instead of its metrics.
pub fn table_row(r: &SummaryRow) -> String {
    let head = format!(
        "{:<6} {:<52} {:<13} {:<13} {:<5} {:>3}",
        r.status.label(),
        r.model,
        r.reference,
        r.prompt,
        if r.n_tokens == 0 { "-" } else { r.mode.id() },
        r.n_tokens,
    );
    match (r.status, &r.note) {
        (Status::NotApplicable | Status::Skipped, Some(note)) => format!("{head}  {note}"),
        _ => format!(
            "{head} {:>4} {:>6} {:>12} {:>10} {:>10}",
            r.n_positions,
            opt(r.first_divergence_token, |p| p.to_string()),
            opt(r.min_cosine, |c| format!("{c:.9}")),
            opt(r.max_kl, |k| format!("{k:.2e}")),
            opt(r.max_abs, |a| format!("{a:.2e}")),
        ),
    }
}

/// The counts line that closes `summary.txt`.
pub fn counts(rows: &[SummaryRow]) -> String {
    let count = |s: Status| rows.iter().filter(|r| r.status == s).count();
    format!(
        "crossval: {} passed, {} failed, {} skipped, {} not applicable",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skipped),
        count(Status::NotApplicable)
    )
}

/// The header and one line per case.
fn cases_table(rows: &[SummaryRow]) -> String {
    let mut s = table_header();
    s.push('\n');
    for r in rows {
        s.push_str(&table_row(r));
        s.push('\n');
    }
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

/// A per-position plot, or one line when the series is 0 everywhere (an exact case).
fn plot_cell(values: &[f64], colour: &str) -> String {
    if values.iter().all(|&v| v == 0.0) {
        format!(
            "<td class=\"flat\">0 at all {} positions</td>",
            values.len()
        )
    } else {
        format!("<td>{}</td>", plot(values, colour))
    }
}

/// One case as a row of the HTML report's case table (the reference's build string is in
/// the references table, once).
fn html_row(r: &CaseReport) -> String {
    let class = match r.status {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::Skipped => "skipped",
        Status::NotApplicable => "na",
    };
    let plots = match &r.divergence {
        Some(d) => {
            let cos: Vec<f64> = d.per_token_cosine_sim.iter().map(|c| 1.0 - c).collect();
            format!(
                "{}{}",
                plot_cell(&cos, "#c33"),
                plot_cell(&d.per_token_kl, "#36c")
            )
        }
        None => "<td colspan=\"2\"></td>".to_string(),
    };
    format!(
        "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td>{plots}</tr>",
        escape(&r.case),
        escape(&r.reference),
        r.status.label(),
        r.message
            .as_deref()
            .map(|m| format!("<br><small>{}</small>", escape(m).replace('\n', "<br>")))
            .unwrap_or_default(),
        opt(
            r.divergence.as_ref().and_then(|d| d.first_divergence_token),
            |p| p.to_string()
        ),
    )
}

/// Counts per (model, reference) of each status, for the overview grid.
fn grid(title: &str, cells: &[(String, String, Status)]) -> String {
    let mut models: Vec<&str> = cells.iter().map(|c| c.0.as_str()).collect();
    let mut references: Vec<&str> = cells.iter().map(|c| c.1.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    references.sort_unstable();
    references.dedup();
    let mut s = format!("<h2>{}</h2><table><tr><th>model</th>", escape(title));
    for r in &references {
        let _ = write!(s, "<th>{}</th>", escape(r));
    }
    s.push_str("</tr>");
    for m in &models {
        let _ = write!(s, "<tr><td>{}</td>", escape(m));
        for r in &references {
            let of = |st: Status| {
                cells
                    .iter()
                    .filter(|c| c.0 == *m && c.1 == *r && c.2 == st)
                    .count()
            };
            let (pass, fail, na, skip) = (
                of(Status::Pass),
                of(Status::Fail),
                of(Status::NotApplicable),
                of(Status::Skipped),
            );
            if pass + fail + na + skip == 0 {
                s.push_str("<td></td>");
                continue;
            }
            let class = if fail > 0 {
                "fail"
            } else if skip > 0 {
                "skipped"
            } else if pass == 0 {
                "na"
            } else {
                "pass"
            };
            let _ = write!(
                s,
                "<td class=\"{class}\">{pass} pass · {fail} fail · {na} n/a · {skip} skipped</td>"
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

/// The definition check (`crate::definition`, written by `tests/definition.rs` to
/// `definition.json`): one row per engine × model × activation variant.
fn definition_table(rows: &[serde_json::Value]) -> String {
    let mut s = String::from(
        "<h2>Against the BitNet definition (target/crossval/definition.txt)</h2><table><tr>\
<th>engine</th><th>model</th><th>activations</th><th>mean KL</th><th>p99 KL</th>\
<th>max KL</th><th>top-1 same</th><th>top-5</th><th>bound (mean / max)</th>\
<th>verdict</th></tr>",
    );
    for r in rows {
        let text = |k: &str| escape(r.get(k).and_then(|v| v.as_str()).unwrap_or("-"));
        let num = |k: &str| r.get(k).and_then(serde_json::Value::as_f64);
        let e = |k: &str| num(k).map_or("-".into(), |v| format!("{v:.2e}"));
        let pct = |k: &str| num(k).map_or("-".into(), |v| format!("{:.1}%", 100.0 * v));
        let bound = r.get("bound").map_or("-".to_string(), |b| {
            let f = |k: &str| b.get(k).and_then(serde_json::Value::as_f64);
            match (f("mean_kl"), f("max_kl")) {
                (Some(m), Some(x)) => format!("{m:.1e} / {x:.1e}"),
                _ => "-".into(),
            }
        });
        let verdict = text("verdict");
        let class = if verdict == "pass" { "pass" } else { "fail" };
        let _ = write!(
            s,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{bound}</td><td>{verdict}</td></tr>",
            text("engine"),
            text("model"),
            text("activations"),
            e("mean_kl"),
            e("p99_kl"),
            e("max_kl"),
            pct("top1_same"),
            pct("top5_overlap"),
        );
    }
    s.push_str("</table>");
    s
}

/// Each reference once: the build it reported and the settings each axis ran it with.
fn references_table(rows: &[SummaryRow], defaults: &[serde_json::Value]) -> String {
    let mut refs: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.reference_version.is_empty()) {
        let e = refs.entry(r.reference.as_str()).or_default();
        e.0.insert(r.reference_version.as_str());
        e.1.insert(r.reference_settings.as_str());
    }
    for d in defaults {
        let field = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        if let Some(e) = refs.get_mut(field("reference")) {
            e.0.insert(field("defaults_reference_version"));
            e.1.insert(field("defaults_settings"));
        }
    }
    let mut s = String::from(
        "<h2>References</h2><table><tr><th>reference</th><th>build (as the runner reports \
it)</th><th>settings</th></tr>",
    );
    for (name, (versions, settings)) in &refs {
        let list = |set: &BTreeSet<&str>| {
            set.iter()
                .filter(|v| !v.is_empty())
                .map(|v| escape(v))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = write!(
            s,
            "<tr><td>{}</td><td><small>{}</small></td><td><small>{}</small></td></tr>",
            escape(name),
            list(versions),
            list(settings)
        );
    }
    s.push_str("</table>");
    s
}

/// The HTML report: the overview grids (exact axis; reference-defaults axis when it ran),
/// the references with their builds and settings, every case with its 1 − cosine and KL
/// per position (one line when flat), then the per-op heat maps.
fn html(
    merged: &Shard,
    defaults: &[serde_json::Value],
    definition: &[serde_json::Value],
) -> String {
    let mut s = String::from(
        "<!doctype html><meta charset=\"utf-8\"><title>bitnet-rs parity report</title>\
<style>body{font:13px sans-serif;margin:1em}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}.fail{background:#fdd}\
.skipped{background:#ffd}.na{background:#eee}.pass{background:#dfd}.flat{color:#666}\
.max{color:#666;font-size:11px}</style><h1>bitnet-rs per-token parity</h1>",
    );
    let _ = write!(s, "<p>{}</p>", escape(&counts(&merged.rows)));
    let exact: Vec<(String, String, Status)> = merged
        .rows
        .iter()
        .map(|r| (r.model.clone(), r.reference.clone(), r.status))
        .collect();
    s.push_str(&grid("Exact axis: models × references", &exact));
    if !defaults.is_empty() {
        let cells: Vec<(String, String, Status)> = defaults
            .iter()
            .filter_map(|d| {
                let field = |k: &str| d.get(k)?.as_str().map(str::to_owned);
                let status = serde_json::from_value(d.get("status")?.clone()).ok()?;
                Some((field("model")?, field("reference")?, status))
            })
            .collect();
        s.push_str(&grid(
            "Reference-defaults axis: models × references (target/crossval/defaults.txt)",
            &cells,
        ));
    }
    s.push_str(&references_table(&merged.rows, defaults));
    if !definition.is_empty() {
        s.push_str(&definition_table(definition));
    }
    s.push_str(
        "<h2>Cases</h2><table><tr><th>case</th><th>reference</th><th>status</th>\
<th>first divergence</th><th>1 − cosine per position</th><th>KL(p_ref‖p_rust) per \
position</th></tr>",
    );
    s.push_str(&merged.html_rows);
    s.push_str("</table>");
    if !merged.html_traces.is_empty() {
        s.push_str(
            "<h2>Per-op NMSE (layers × ops)</h2><p>Σ(a−b)²/Σa² of each op's row at the traced \
position (a the reference). Green: 0; yellow to orange: under the op's threshold; red: over \
it; grey: not compared. The outlined cell is the first divergent op.</p>",
        );
        s.push_str(&merged.html_traces);
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
