//! A simulated file system for crash tests (FoundationDB/TigerBeetle style): reads see every
//! write, but only what was synced is sure to survive a simulated power loss. At a crash, each
//! unsynced page independently survives with its new bytes, keeps its old bytes, or reads as
//! zeros past the old end, and files whose directory entry was never synced may vanish; a crash
//! can also be scheduled after a number of operations, the write at that point landing partly.

use super::fs::{JournalFs, SegmentFile, SegmentRead};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const PAGE_BYTES: usize = 4096;

#[derive(Default)]
struct SimFile {
    /// What reads see (the page cache).
    data: Vec<u8>,
    /// What is on the platter.
    durable: Vec<u8>,
    /// Smallest offset changed since the last sync.
    dirty_from: usize,
    /// Its directory entry was synced.
    linked: bool,
}

struct State {
    files: BTreeMap<PathBuf, SimFile>,
    dirs: BTreeSet<PathBuf>,
    /// Operations left before the scheduled crash; then every operation fails until `crash`.
    ops_left: Option<u64>,
    crashed: bool,
    rng: u64,
}

impl State {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic for a seed, so a failing seed can be replayed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Counts one mutating operation; false once the scheduled crash has happened.
    fn tick(&mut self) -> bool {
        self.tick_at().is_ok()
    }

    /// Like `tick`, telling apart the operation the crash interrupts (`Err(true)`) from the ones
    /// after it (`Err(false)`).
    fn tick_at(&mut self) -> Result<(), bool> {
        if self.crashed {
            return Err(false);
        }
        match &mut self.ops_left {
            Some(0) => {
                self.crashed = true;
                Err(true)
            }
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash")
}

#[derive(Clone)]
pub struct SimFs(Arc<Mutex<State>>);

/// What a crash keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// kill -9: the process dies, the page cache (every write) survives.
    Process,
    /// Power loss: only synced data is sure to survive; the rest is torn page by page.
    Power,
}

impl SimFs {
    pub fn new(seed: u64) -> SimFs {
        SimFs(Arc::new(Mutex::new(State {
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
            ops_left: None,
            crashed: false,
            rng: seed | 1,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules a crash after `ops` more mutating operations.
    pub fn crash_after(&self, ops: u64) {
        self.state().ops_left = Some(ops);
    }

    pub fn has_crashed(&self) -> bool {
        self.state().crashed
    }

    /// A random number from the simulation's generator (for tests that need one more).
    pub fn random(&self) -> u64 {
        self.state().next()
    }

    /// Applies a crash and lets operations run again.
    pub fn crash(&self, kind: Crash) {
        let mut s = self.state();
        s.ops_left = None;
        s.crashed = false;
        if kind == Crash::Process {
            return;
        }
        let paths: Vec<PathBuf> = s.files.keys().cloned().collect();
        for path in paths {
            let roll = s.next();
            let f = s.files.get_mut(&path).expect("listed above");
            if !f.linked && roll.is_multiple_of(2) {
                s.files.remove(&path);
                continue;
            }
            let f = s.files.get_mut(&path).expect("listed above");
            let (old, new) = (std::mem::take(&mut f.durable), std::mem::take(&mut f.data));
            let dirty_from = f.dirty_from.min(old.len()).min(new.len());
            let len_choice = roll >> 1;
            let new_len = match len_choice % 3 {
                0 => old.len(),
                1 => new.len(),
                _ => {
                    let (lo, hi) = (old.len().min(new.len()), old.len().max(new.len()));
                    lo + (len_choice as usize / 3) % (hi - lo + 1)
                }
            };
            let mut out = old[..dirty_from.min(new_len)].to_vec();
            let mut page_start = dirty_from;
            while page_start < new_len {
                let page_end = ((page_start / PAGE_BYTES + 1) * PAGE_BYTES).min(new_len);
                let pick = s.next() % 3;
                for i in page_start..page_end {
                    let byte = match pick {
                        0 => new.get(i).copied().unwrap_or(0),
                        1 => old.get(i).copied().unwrap_or(0),
                        _ => 0,
                    };
                    out.push(byte);
                }
                page_start = page_end;
            }
            let f = s.files.get_mut(&path).expect("listed above");
            f.durable = out.clone();
            f.dirty_from = out.len();
            f.data = out;
            f.linked = true;
        }
    }

    /// The bytes reads would see of `path` (for tests that damage a file by hand).
    pub fn bytes(&self, path: &Path) -> Option<Vec<u8>> {
        self.state().files.get(path).map(|f| f.data.clone())
    }
}

struct SimSegment {
    fs: SimFs,
    path: PathBuf,
}

impl SegmentFile for SimSegment {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.fs.state();
        if let Err(interrupted) = s.tick_at() {
            if interrupted && !bytes.is_empty() {
                // The write at the crash point lands partly.
                let n = (s.next() as usize) % bytes.len();
                if let Some(f) = s.files.get_mut(&self.path) {
                    f.data.extend_from_slice(&bytes[..n]);
                }
            }
            return Err(crashed());
        }
        let f = s.files.get_mut(&self.path).ok_or_else(crashed)?;
        f.data.extend_from_slice(bytes);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.fs.state();
        if !s.tick() {
            return Err(crashed());
        }
        let f = s.files.get_mut(&self.path).ok_or_else(crashed)?;
        let from = f.dirty_from.min(f.durable.len()).min(f.data.len());
        f.durable.truncate(from);
        let tail = f.data[from..].to_vec();
        f.durable.extend_from_slice(&tail);
        f.dirty_from = f.data.len();
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.fs.state();
        if !s.tick() {
            return Err(crashed());
        }
        let f = s.files.get_mut(&self.path).ok_or_else(crashed)?;
        f.data.resize(len as usize, 0);
        f.dirty_from = f.dirty_from.min(len as usize);
        Ok(())
    }
}

impl JournalFs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.state().dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state();
        if !s.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(s.files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let mut s = self.state();
        if !s.tick() {
            return Err(crashed());
        }
        if s.files.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        s.files.insert(path.to_path_buf(), SimFile::default());
        Ok(Box::new(SimSegment {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        if !self.state().files.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        }
        Ok(Box::new(SimSegment {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn SegmentRead>> {
        let s = self.state();
        let f = s
            .files
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        Ok(Box::new(Cursor::new(f.data.clone())))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let s = self.state();
        let f = s
            .files
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        Ok(f.data.len() as u64)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        if !s.tick() {
            return Err(crashed());
        }
        for (p, f) in s.files.iter_mut() {
            if p.parent() == Some(dir) {
                f.linked = true;
            }
        }
        Ok(())
    }
}
