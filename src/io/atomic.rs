//! Files that appear whole or not at all: written under a temporary name in
//! the destination's folder and renamed into place when complete. A reader
//! of the folder (a log shipper, the next run of the spool) never sees half a
//! file, and a write that fails leaves nothing behind: the temporary file is
//! removed when dropped.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::IoError;

/// A file being written; [`AtomicFile::commit`] puts it in place.
pub struct AtomicFile {
    out: BufWriter<NamedTempFile>,
    path: PathBuf,
}

impl AtomicFile {
    /// Starts `path`: a hidden `.<name>.*.partial` file beside it until committed.
    pub fn create(path: &Path) -> Result<Self, IoError> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(|source| IoError::Write { path: path.to_path_buf(), source })?;
        Ok(AtomicFile { out: BufWriter::new(file), path: path.to_path_buf() })
    }

    /// The failure of writing this file, named by its final path.
    pub fn failed(&self, source: std::io::Error) -> IoError {
        IoError::Write { path: self.path.clone(), source }
    }

    /// Flushes the file and renames it into place.
    pub fn commit(self) -> Result<PathBuf, IoError> {
        let path = self.path.clone();
        self.commit_as(path)
    }

    /// As [`AtomicFile::commit`], under a name known only once the file is
    /// written; `path` must be in the same folder.
    pub fn commit_as(self, path: PathBuf) -> Result<PathBuf, IoError> {
        let fail = |source| IoError::Write { path: path.clone(), source };
        let file = self.out.into_inner().map_err(|e| fail(e.into_error()))?;
        file.persist(&path).map_err(|e| fail(e.error))?;
        Ok(path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes `bytes` to `path` whole or not at all.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(|e| file.failed(e))?;
    file.commit().map(|_| ())
}

/// Writes `traces` in `format` to `path` whole or not at all.
pub fn write_traces_atomic(traces: &[crate::trace::Trace], format: super::OutputFormat, path: &Path) -> Result<(), IoError> {
    let mut file = AtomicFile::create(path)?;
    super::write_traces(traces, format, &mut file).map_err(|e| file.failed(e))?;
    file.commit().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_appears_only_when_committed_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("window-000001.jsonl");
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"{}\n").unwrap();
        assert!(!path.exists());
        let listed = || std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(listed(), 1, "one hidden partial file");
        assert_eq!(file.commit().unwrap(), path);
        assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
        assert_eq!(listed(), 1);

        let other = dir.path().join("window-000002.jsonl");
        let mut dropped = AtomicFile::create(&other).unwrap();
        dropped.write_all(b"half").unwrap();
        drop(dropped);
        assert!(!other.exists());
        assert_eq!(listed(), 1, "nothing left behind");

        write_atomic(&other, b"whole").unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"whole");
    }
}
