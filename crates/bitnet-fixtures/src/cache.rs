//! Generate-or-reuse: content-addressed file names, atomic publication, and the streaming
//! write that keeps one tensor in memory at a time.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bitnet_gguf::{GgufError, GgufFile, GgufWriter};
use sha2::{Digest, Sha256};

use crate::data::{fixture_dir, vocab_path};
use crate::plan::{plan, Plan};
use crate::spec::FixtureSpec;
use crate::weights::encode;
use crate::FixtureError;

/// Version of the generator's output. Bump it whenever the bytes a spec produces change
/// (statistics, tensor order, metadata, encoders): it is part of every cache key, so stale
/// fixtures are never reused.
pub const GENERATOR_VERSION: u32 = 1;

/// Files at least this large (every 2B-4T-shaped one; no tiny one) report progress while
/// they are generated, which takes minutes.
const VERBOSE_BYTES: u64 = 512_000_000;

/// Serialises generation within one process (test threads asking for the same fixture
/// wait for the first one instead of generating it again). Across processes, atomic
/// renames keep readers safe; two processes may both generate, harmlessly.
static GENERATING: Mutex<()> = Mutex::new(());

/// The path of `spec`'s file in [`fixture_dir`], generating it on first use.
pub fn fixture(spec: &FixtureSpec) -> Result<PathBuf, FixtureError> {
    fixture_in(spec, &fixture_dir())
}

/// Like [`fixture`], in the cache directory `dir`.
///
/// The file is `<dir>/<id>-<key>.gguf`, `key` a hash of the spec's id (which names its
/// vocabulary), [`GENERATOR_VERSION`] and the vocabulary file's size. An existing file is
/// returned untouched. Otherwise it is written to a temporary file in `dir` and renamed
/// into place, so nobody ever sees a partial file.
pub fn fixture_in(spec: &FixtureSpec, dir: &Path) -> Result<PathBuf, FixtureError> {
    spec.validate()?;
    let path = dir.join(file_name(spec)?);
    if path.is_file() {
        tracing::debug!("cache hit: {} is {}", spec.id(), path.display());
        return Ok(path);
    }
    // A poisoned lock only means another thread panicked mid-generation; its temporary
    // file was removed and nothing it guarded is left inconsistent.
    let _guard = GENERATING.lock().unwrap_or_else(|e| e.into_inner());
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    generate(spec, &path)?;
    Ok(path)
}

fn file_name(spec: &FixtureSpec) -> Result<String, FixtureError> {
    let vocab = vocab_path(spec.vocab.name())?;
    let vocab_len = fs::metadata(&vocab)
        .map_err(io_err("reading the size of", &vocab))?
        .len();
    let digest = Sha256::new()
        .chain_update(GENERATOR_VERSION.to_le_bytes())
        .chain_update(spec.id().as_bytes())
        .chain_update(vocab_len.to_le_bytes())
        .finalize();
    let key: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{key}.gguf", spec.id()))
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FixtureError {
    let path = path.to_owned();
    move |source| FixtureError::Io {
        action,
        path,
        source,
    }
}

/// A file removed on drop unless kept.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: a leftover temporary file is only wasted space.
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn generate(spec: &FixtureSpec, path: &Path) -> Result<(), FixtureError> {
    let started = Instant::now();
    let plan = plan(spec)?;
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut tmp = TempFile {
        path: path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id())),
        keep: false,
    };
    let bytes: u64 = plan.tensors.iter().map(|t| t.size).sum();
    let verbose = bytes >= VERBOSE_BYTES;
    if verbose {
        let mb = bytes as f64 / 1e6;
        tracing::info!(
            "generating {} (~{mb:.0} MB) into {}",
            spec.id(),
            path.display()
        );
    }
    let starts = write_streaming(spec, &plan, &tmp.path, verbose)?;
    check_layout(&plan, &tmp.path, &starts)?;
    if path.is_file() {
        // Another process published the same bytes meanwhile: keep its file (and mtime).
        return Ok(());
    }
    fs::rename(&tmp.path, path).map_err(io_err("renaming into place", path))?;
    tmp.keep = true;
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    tracing::info!(
        "wrote {} ({:.1} MB) in {:.1?}",
        path.display(),
        len as f64 / 1e6,
        started.elapsed()
    );
    Ok(())
}

/// Writes `plan` to `path` through [`GgufWriter`], which lays out the header and padding,
/// while each tensor's bytes are generated only when the writer reaches it. The writer is
/// given zero-filled placeholders (one lazily zeroed allocation, never read) and streams
/// into a [`Substitute`] sink that replaces each tensor's bytes with the generated ones.
/// Returns each tensor's absolute file offset.
fn write_streaming(
    spec: &FixtureSpec,
    plan: &Plan,
    path: &Path,
    verbose: bool,
) -> Result<Vec<u64>, FixtureError> {
    let gguf_err = |source: GgufError| FixtureError::Gguf {
        path: path.to_owned(),
        source,
    };
    let internal = |reason: &str| FixtureError::Internal {
        reason: format!("{}: {reason}", spec.id()),
    };
    let sizes: Vec<usize> = plan
        .tensors
        .iter()
        .map(|t| usize::try_from(t.size).map_err(|_| internal("a tensor exceeds usize")))
        .collect::<Result<_, _>>()?;
    let placeholder = vec![0u8; sizes.iter().copied().max().unwrap_or(0)];
    let mut writer = GgufWriter::new();
    for (key, value) in &plan.metadata {
        writer
            .add_metadata(key.clone(), value.clone())
            .map_err(gguf_err)?;
    }
    for (t, &size) in plan.tensors.iter().zip(&sizes) {
        writer
            .add_tensor(t.name.clone(), t.ggml_type, &t.dims, &placeholder[..size])
            .map_err(gguf_err)?;
    }
    // The header is what precedes the padded tensor data.
    let mut total = ByteCount(0);
    writer
        .write_into(&mut total)
        .map_err(|_| internal("counting the output failed"))?;
    let padded = |size: u64| size.next_multiple_of(writer.alignment());
    let data_len: u64 = plan.tensors.iter().map(|t| padded(t.size)).sum();
    let mut offset = total
        .0
        .checked_sub(data_len)
        .ok_or_else(|| internal("the writer's output is shorter than its tensor data"))?;
    let mut regions = Vec::with_capacity(plan.tensors.len());
    for t in &plan.tensors {
        regions.push((offset, t.size));
        offset += padded(t.size);
    }

    let file = File::create(path).map_err(io_err("creating", path))?;
    let mut sink = Substitute {
        out: BufWriter::with_capacity(1 << 20, file),
        pos: 0,
        regions: &regions,
        next: 0,
        current: Vec::new(),
        fill: |i: usize| encode(spec, &plan.tensors[i]),
        failure: None,
        progress: Progress {
            id: spec.id(),
            verbose,
            started: Instant::now(),
            last: Instant::now(),
        },
    };
    if let Err(e) = writer.write_into(&mut sink) {
        return Err(sink
            .failure
            .take()
            .unwrap_or_else(|| io_err("writing", path)(e)));
    }
    if sink.next != regions.len() {
        return Err(internal("not every tensor was written"));
    }
    sink.out.flush().map_err(io_err("writing", path))?;
    Ok(regions.iter().map(|&(start, _)| start).collect())
}

/// Re-reads the written header with the validating reader: every tensor must be where
/// the streaming sink put its bytes, with the planned name, type and dims.
fn check_layout(plan: &Plan, path: &Path, starts: &[u64]) -> Result<(), FixtureError> {
    let file = GgufFile::open(path).map_err(|source| FixtureError::Gguf {
        path: path.to_owned(),
        source,
    })?;
    let mismatch = |reason: String| FixtureError::Internal { reason };
    if file.tensors().len() != plan.tensors.len() || file.metadata().len() != plan.metadata.len() {
        return Err(mismatch(format!(
            "{} has {} tensors and {} keys, planned {} and {}",
            path.display(),
            file.tensors().len(),
            file.metadata().len(),
            plan.tensors.len(),
            plan.metadata.len()
        )));
    }
    for ((info, planned), &start) in file.tensors().iter().zip(&plan.tensors).zip(starts) {
        let at = file.data_offset() + info.offset;
        if info.name != planned.name
            || info.ggml_type != planned.ggml_type
            || info.dims != planned.dims
            || at != start
        {
            return Err(mismatch(format!(
                "{}: tensor {} ({} {:?}) is at {at}, planned {} ({} {:?}) at {start}",
                path.display(),
                info.name,
                info.ggml_type,
                info.dims,
                planned.name,
                planned.ggml_type,
                planned.dims
            )));
        }
    }
    Ok(())
}

/// Counts bytes, storing none.
struct ByteCount(u64);

impl Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Passes the writer's header and padding through to `out`, and replaces the bytes of
/// each tensor region `(absolute start, size)` with `fill(index)`, generated when the
/// writer reaches the region and dropped when it leaves it.
struct Substitute<'r, W, F> {
    out: W,
    pos: u64,
    regions: &'r [(u64, u64)],
    next: usize,
    current: Vec<u8>,
    fill: F,
    /// The generation error behind an `io::Error` this sink returned.
    failure: Option<FixtureError>,
    progress: Progress,
}

impl<W: Write, F: FnMut(usize) -> Result<Vec<u8>, FixtureError>> Write for Substitute<'_, W, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let n = match self.regions.get(self.next) {
                Some(&(start, size)) if self.pos >= start => {
                    if self.pos == start {
                        self.current = (self.fill)(self.next).map_err(|e| {
                            self.failure = Some(e);
                            io::Error::other("tensor generation failed")
                        })?;
                    }
                    let from = (self.pos - start) as usize;
                    let n = rest.len().min(size as usize - from);
                    self.out.write_all(&self.current[from..from + n])?;
                    if from + n == size as usize {
                        self.current = Vec::new();
                        self.next += 1;
                        self.progress.tensor_done(self.next, self.regions.len());
                    }
                    n
                }
                Some(&(start, _)) => {
                    let n = rest.len().min((start - self.pos) as usize);
                    self.out.write_all(&rest[..n])?;
                    n
                }
                None => {
                    self.out.write_all(rest)?;
                    rest.len()
                }
            };
            self.pos += n as u64;
            rest = &rest[n..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Progress on stderr for the big models, at most every few seconds.
struct Progress {
    id: String,
    verbose: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(5);

    fn tensor_done(&mut self, done: usize, total: usize) {
        if self.verbose && (self.last.elapsed() >= Self::EVERY || done == total) {
            self.last = Instant::now();
            tracing::info!(
                "{}: {done}/{total} tensors ({:.0?})",
                self.id,
                self.started.elapsed()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink<F>(regions: &[(u64, u64)], fill: F) -> Substitute<'_, Vec<u8>, F> {
        Substitute {
            out: Vec::new(),
            pos: 0,
            regions,
            next: 0,
            current: Vec::new(),
            fill,
            failure: None,
            progress: Progress {
                id: "test".into(),
                verbose: false,
                started: Instant::now(),
                last: Instant::now(),
            },
        }
    }

    #[test]
    fn substitute_replaces_regions_whatever_the_chunking() {
        // Header "hhh", region 0 (2 bytes), padding "ppp", region 1 (3 bytes), padding "p".
        let input = b"hhh__ppp___p";
        let regions = [(3, 2), (8, 3)];
        for chunk in [1, 2, 5, input.len()] {
            let mut s = sink(&regions, |i: usize| Ok(vec![b'A' + i as u8; [2, 3][i]]));
            for c in input.chunks(chunk) {
                s.write_all(c).unwrap();
            }
            assert_eq!(s.out, b"hhhAApppBBBp", "chunks of {chunk}");
            assert_eq!(s.next, 2);
        }
    }

    #[test]
    fn a_generation_error_is_kept_for_the_caller() {
        let regions = [(1, 2)];
        let mut s = sink(&regions, |_| {
            Err(FixtureError::NotTernary { name: "x".into() })
        });
        assert!(s.write_all(b"h__").is_err());
        assert!(matches!(s.failure, Some(FixtureError::NotTernary { .. })));
    }
}
