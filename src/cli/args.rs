//! Argument groups several commands share, and reading their input files
//! within the global `--max-input-bytes` and `--max-input-spans`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gent::io::{self, Format};
use gent::trace;

use super::Failure;

/// Trace files to read, in any supported format.
#[derive(clap::Args)]
pub struct InputArgs {
    /// Files or folders of any supported format (gzip accepted).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Force the input format instead of sniffing it from content.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

/// `--json`: the command's report as the last line of stdout.
#[derive(clap::Args)]
pub struct JsonArg {
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// The command line's bounds on reading input files, set once at start.
static READ_LIMITS: OnceLock<io::ReadLimits> = OnceLock::new();

pub fn set_read_limits(bytes: u64, spans: usize) {
    let _ = READ_LIMITS.set(io::ReadLimits { bytes, spans });
}

pub fn read_limits() -> io::ReadLimits {
    READ_LIMITS.get().copied().unwrap_or_default()
}

impl InputArgs {
    /// The input's traces, assembled, with what the reader saw.
    pub fn read(&self) -> Result<(trace::TraceSet, io::Input), Failure> {
        read_traces(&self.inputs, self.format)
    }

    /// The input's traces, refusing an input that holds none.
    pub fn read_some(&self) -> Result<trace::TraceSet, Failure> {
        let (set, _) = self.read()?;
        if set.traces.is_empty() {
            return Err(Failure::BadInput("the input holds no traces".into()));
        }
        Ok(set)
    }
}

/// Reads and assembles traces, logging the defects repaired or rejected.
pub fn read_traces(inputs: &[PathBuf], format: Option<Format>) -> Result<(trace::TraceSet, io::Input), Failure> {
    let mut input = io::read_inputs_within(inputs, format, read_limits())?;
    let set = trace::assemble(std::mem::take(&mut input.spans));
    let d = &set.defects;
    if d.duplicate_spans + d.conflicting_duplicates + d.cycles + d.end_before_start > 0 {
        tracing::warn!(
            duplicate_spans = d.duplicate_spans,
            conflicting_duplicates = d.conflicting_duplicates,
            cycles = d.cycles,
            end_before_start = d.end_before_start,
            "input defects repaired or rejected"
        );
    }
    Ok((set, input))
}

/// A text file (call graphs) within `--max-input-bytes`.
pub fn read_text(path: &Path) -> Result<String, Failure> {
    String::from_utf8(read_file(path)?)
        .map_err(|e| Failure::BadInput(format!("{}: byte {}: not UTF-8 text", path.display(), e.utf8_error().valid_up_to())))
}

/// A packet, model or query file, whole, within `--max-input-bytes`.
pub fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let limit = read_limits().bytes;
    let file = std::fs::File::open(path).map_err(|e| Failure::file(path, e))?;
    // Sized from the file's length when it has one (a pipe reads as 0), refused before reading when it is over.
    let length = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::with_capacity(length.min(limit.saturating_add(1)) as usize);
    file.take(if length > limit { 0 } else { limit.saturating_add(1) })
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::file(path, e))?;
    if length > limit || bytes.len() as u64 > limit {
        return Err(Failure::BadInput(format!(
            "{}: larger than {limit} bytes; raise --max-input-bytes if it is meant to be read",
            path.display()
        )));
    }
    Ok(bytes)
}
