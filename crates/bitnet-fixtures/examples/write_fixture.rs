//! Writes synthetic fixtures where users put their own models, so the parity suite's
//! user-model path can be exercised without a real BitNet file:
//!
//! ```text
//! cargo run --release -p bitnet-fixtures --example write_fixture -- [--out DIR] NAME...
//! ```
//!
//! NAME is `2b4t-i2_s` (microsoft/bitnet-b1.58-2B-4T's layout: arch `bitnet-b1.58`, I2_S
//! linear weights, F16 tied embedding, ~1.2 GB), `zoo` (every member of
//! [`bitnet_fixtures::user_shape_zoo`]) or a zoo member's id. DIR defaults to
//! `<workspace>/models`. Each fixture is generated into the fixture cache (or reused from
//! it), then hard-linked (copied if that fails, e.g. across file systems) to
//! `DIR/<id>.gguf`. A hard link shares its bytes with the cache, which never re-checks
//! them: replace the file rather than editing it in place.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bitnet_fixtures::{fixture, user_models_dir, user_shape_zoo, Arch, FixtureSpec, WeightFormat};

const USAGE: &str = "usage: write_fixture [--out DIR] NAME...
  NAME: 2b4t-i2_s | zoo | <zoo member id>   (DIR defaults to <workspace>/models)";

/// Name of the full-size 2B-4T-layout fixture on the command line.
const FULL_2B4T_I2_S: &str = "2b4t-i2_s";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("write_fixture: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let Some((out, names)) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let specs = resolve(&names)?;
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for spec in specs {
        let id = spec.id();
        if spec == full_2b4t_i2_s() {
            // The cache reports its own progress while it writes this one.
            eprintln!(
                "{FULL_2B4T_I2_S}: {id}: generating ~1.2 GB on first use (half a minute or more; \
                 reused from the fixture cache afterwards)"
            );
        }
        let cached = fixture(&spec).with_context(|| format!("generating {id}"))?;
        let dest = out.join(format!("{id}.gguf"));
        let how = place(&cached, &dest)?;
        let len = fs::metadata(&dest)
            .with_context(|| format!("reading the size of {}", dest.display()))?
            .len();
        println!("{} {:.1} MB ({how})", dest.display(), len as f64 / 1e6);
    }
    Ok(())
}

fn full_2b4t_i2_s() -> FixtureSpec {
    FixtureSpec::full(Arch::BitnetB158, WeightFormat::I2_S)
}

/// The output directory and the names, or `None` when help was asked for.
fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<(PathBuf, Vec<String>)>> {
    let mut out = None;
    let mut names = Vec::new();
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--out" => {
                let dir = args.next().context("--out needs a directory")?;
                out = Some(PathBuf::from(dir));
            }
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n{USAGE}"),
            _ => names.push(arg),
        }
    }
    if names.is_empty() {
        bail!("no fixture named\n{USAGE}");
    }
    Ok(Some((out.unwrap_or_else(user_models_dir), names)))
}

/// The specs the names stand for, in order, each once.
fn resolve(names: &[String]) -> Result<Vec<FixtureSpec>> {
    let zoo = user_shape_zoo();
    let mut specs: Vec<FixtureSpec> = Vec::new();
    for name in names {
        let found = match name.as_str() {
            FULL_2B4T_I2_S => vec![full_2b4t_i2_s()],
            "zoo" => zoo.clone(),
            id => match zoo.iter().find(|s| s.id() == id) {
                Some(spec) => vec![*spec],
                None => {
                    let ids: Vec<String> = zoo.iter().map(|s| format!("  {}", s.id())).collect();
                    bail!(
                        "unknown fixture {id:?}: expected {FULL_2B4T_I2_S}, zoo, or one of\n{}",
                        ids.join("\n")
                    );
                }
            },
        };
        for spec in found {
            if !specs.contains(&spec) {
                specs.push(spec);
            }
        }
    }
    Ok(specs)
}

/// Puts the cached file at `dest` (replacing what is there) through a temporary name in
/// `dest`'s directory, so `dest` is never a partial file. Returns how it was placed.
fn place(cached: &Path, dest: &Path) -> Result<&'static str> {
    let file_name = dest.file_name().context("destination has no file name")?;
    let tmp = dest.with_file_name(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    // A leftover from an interrupted run of this process id; absent is the normal case.
    let _ = fs::remove_file(&tmp);
    let how = match fs::hard_link(cached, &tmp) {
        Ok(()) => "hard link",
        Err(_) => {
            fs::copy(cached, &tmp)
                .with_context(|| format!("copying {} to {}", cached.display(), tmp.display()))?;
            "copy"
        }
    };
    let renamed = fs::rename(&tmp, dest);
    // Renaming a hard link onto another link of the same file succeeds without removing
    // the source (POSIX), and a failed rename leaves it too.
    let _ = fs::remove_file(&tmp);
    renamed.with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    Ok(how)
}
