//! Packets waiting for acknowledgement, on disk, oldest first.
//!
//! Each push is one file, `<sequence>.push` (the encoded `PushRequest`), written
//! under a temporary name and renamed, so a crash never leaves half a packet
//! where the sender would read it. The spool survives restarts: whatever a
//! previous run could not deliver is sent first. It is bounded in bytes; when
//! full, `put` waits for deliveries, which holds the window's spans against the
//! span budget and so makes the receiver push back on clients rather than lose
//! a window or grow without bound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use prost::Message;

use super::link::PushRequest;
use crate::metrics::PipelineMetrics;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("spool: {0}")]
    Write(#[from] crate::io::IoError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.into(), source }
}

struct State {
    /// Sequence number → size in bytes.
    entries: BTreeMap<u64, u64>,
    bytes: u64,
    next: u64,
    /// Set at shutdown: `put` no longer waits for room.
    closing: bool,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    room: Condvar,
    /// Wakes the sender when a packet arrives.
    pub arrived: tokio::sync::Notify,
    metrics: Option<PipelineMetrics>,
}

impl Spool {
    /// Opens (creating) the folder and takes up what an earlier run left there.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Option<PipelineMetrics>) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut entries = BTreeMap::new();
        let mut bytes = 0;
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name();
            let Some(seq) = name.to_str().and_then(|n| n.strip_suffix(".push")).and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let len = entry.metadata().map_err(io_error(&entry.path()))?.len();
            entries.insert(seq, len);
            bytes += len;
        }
        let next = entries.keys().next_back().map_or(0, |s| s + 1);
        if !entries.is_empty() {
            tracing::info!(packets = entries.len(), bytes, dir = %dir.display(), "spooled packets from an earlier run will be sent first");
        }
        let spool = Spool {
            dir: dir.into(),
            max_bytes,
            state: Mutex::new(State { entries, bytes, next, closing: false }),
            room: Condvar::new(),
            arrived: tokio::sync::Notify::new(),
            metrics,
        };
        spool.publish(&spool.lock());
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent state
        // (every update is a single insert or remove), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, s: &State) {
        if let Some(m) = &self.metrics {
            m.spool_packets.set(s.entries.len() as i64);
            m.spool_bytes.set(s.bytes as i64);
        }
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.push"))
    }

    /// Stores `push` durably, waiting while the spool is full (a packet larger
    /// than the whole spool is still taken when the spool is empty).
    pub fn put(&self, push: &PushRequest) -> Result<(), SpoolError> {
        let bytes = push.encode_to_vec();
        let len = bytes.len() as u64;
        let mut s = self.lock();
        let mut warned = false;
        while !s.closing && !s.entries.is_empty() && s.bytes + len > self.max_bytes {
            if !warned {
                tracing::warn!(spooled_bytes = s.bytes, max_bytes = self.max_bytes, "spool full: waiting for the decompressor");
                warned = true;
            }
            s = self.room.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        let seq = s.next;
        s.next += 1;
        let path = self.path(seq);
        crate::io::write_atomic(&path, &bytes)?;
        s.entries.insert(seq, len);
        s.bytes += len;
        self.publish(&s);
        drop(s);
        self.arrived.notify_one();
        Ok(())
    }

    /// The oldest packet, if any. A file that no longer decodes is moved to
    /// `rejected/` (and reported) so it cannot block the ones behind it.
    pub fn oldest(&self) -> Result<Option<(u64, PushRequest)>, SpoolError> {
        loop {
            let Some(seq) = self.lock().entries.keys().next().copied() else { return Ok(None) };
            let path = self.path(seq);
            let bytes = std::fs::read(&path).map_err(io_error(&path))?;
            match PushRequest::decode(bytes.as_slice()) {
                Ok(push) => return Ok(Some((seq, push))),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "spooled packet is damaged; moved to rejected/");
                    self.set_aside(seq)?;
                }
            }
        }
    }

    /// Forgets a delivered packet.
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        let path = self.path(seq);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
        self.forget(seq);
        Ok(())
    }

    /// Moves a packet the decompressor will never take to `rejected/`, kept for
    /// inspection instead of being retried forever.
    pub fn set_aside(&self, seq: u64) -> Result<(), SpoolError> {
        let rejected = self.dir.join("rejected");
        std::fs::create_dir_all(&rejected).map_err(io_error(&rejected))?;
        let from = self.path(seq);
        let to = rejected.join(format!("{seq:020}.push"));
        std::fs::rename(&from, &to).map_err(io_error(&from))?;
        self.forget(seq);
        Ok(())
    }

    fn forget(&self, seq: u64) {
        let mut s = self.lock();
        if let Some(len) = s.entries.remove(&seq) {
            s.bytes -= len;
        }
        self.publish(&s);
        drop(s);
        self.room.notify_all();
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a packet could be spooled now: not when the spool is full (training
    /// waits) or its folder does not take a file (probed by writing one).
    pub fn check_writable(&self) -> Result<(), String> {
        let (bytes, full) = {
            let s = self.lock();
            (s.bytes, !s.entries.is_empty() && s.bytes >= self.max_bytes)
        };
        if full {
            return Err(format!("spool full ({bytes} of {} bytes): the decompressor is not taking packets", self.max_bytes));
        }
        let probe = self.dir.join(".readyz.partial");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| format!("spool folder {} is not writable: {e}", self.dir.display()))
    }

    /// From now on `put` never waits (shutdown must not hang on a full spool).
    pub fn close(&self) {
        self.lock().closing = true;
        self.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(window_id: u64, bytes: usize) -> PushRequest {
        PushRequest { producer: "p".into(), window_id, payload: vec![7; bytes], ..Default::default() }
    }

    #[test]
    fn packets_come_out_oldest_first_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20, None).unwrap();
        for id in 1..=3 {
            spool.put(&push(id, 10)).unwrap();
        }
        let (seq, first) = spool.oldest().unwrap().unwrap();
        assert_eq!(first.window_id, 1);
        spool.remove(seq).unwrap();
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20, None).unwrap();
        assert_eq!(spool.len(), 2);
        spool.put(&push(4, 10)).unwrap();
        let mut ids = Vec::new();
        while let Some((seq, p)) = spool.oldest().unwrap() {
            ids.push(p.window_id);
            spool.remove(seq).unwrap();
        }
        assert_eq!(ids, vec![2, 3, 4]);
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_does_not_block_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20, None).unwrap();
        spool.put(&push(1, 10)).unwrap();
        spool.put(&push(2, 10)).unwrap();
        std::fs::write(spool.path(0), b"\xff\xff\xff").unwrap();
        let (_, p) = spool.oldest().unwrap().unwrap();
        assert_eq!(p.window_id, 2);
        assert!(dir.path().join("rejected").join(format!("{:020}.push", 0)).exists());
    }

    #[test]
    fn a_full_spool_waits_for_room() {
        let dir = tempfile::tempdir().unwrap();
        let spool = std::sync::Arc::new(Spool::open(dir.path(), 100, None).unwrap());
        spool.put(&push(1, 80)).unwrap();
        let writer = {
            let spool = spool.clone();
            std::thread::spawn(move || spool.put(&push(2, 80)).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(spool.len(), 1, "the second packet must wait");
        let (seq, _) = spool.oldest().unwrap().unwrap();
        spool.remove(seq).unwrap();
        writer.join().unwrap();
        assert_eq!(spool.oldest().unwrap().unwrap().1.window_id, 2);
    }

    #[test]
    fn readiness_says_when_a_packet_could_not_be_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("spool");
        let spool = Spool::open(&folder, 100, None).unwrap();
        assert_eq!(spool.check_writable(), Ok(()));
        spool.put(&push(1, 120)).unwrap();
        assert!(spool.check_writable().unwrap_err().starts_with("spool full"), "{:?}", spool.check_writable());
        let (seq, _) = spool.oldest().unwrap().unwrap();
        spool.remove(seq).unwrap();
        std::fs::remove_dir_all(&folder).unwrap();
        assert!(spool.check_writable().unwrap_err().contains("is not writable"), "{:?}", spool.check_writable());
    }
}
