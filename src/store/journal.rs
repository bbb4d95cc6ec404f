//! The journal: append-only segment files of checksummed frames (entries and checkpoints of every
//! origin, in local arrival order). It is the source of truth and the only durability point:
//! `sync` (fdatasync) returns before any ack. Invariants: a position is a global byte offset; the
//! segments are contiguous (each starts where the previous ends); every `append` is one group,
//! closed by a commit frame that names where the group starts, and a group never spans segments;
//! only the last group of the last segment can be torn (a crash before its fsync, with pages
//! written back in any order), and recovery cuts it whole; a bad frame followed by a later
//! group's commit frame is corruption, reported with its exact position, never repaired
//! silently. Opening syncs the active segment and the directory before anything is served, so
//! what survived a kill -9 only in the page cache is durable before anyone sees it.
//!
//! Frame layout (little-endian): `len: u32` (of the body), `crc32c: u32` (of the body), body =
//! `kind: u8` + payload. Only this file knows it.

use super::fs::{JournalFs, OsFs, SegmentFile};
use crate::log::{Checkpoint, Entry, Hash};
use crate::record::Region;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const FRAME_HEADER_BYTES: usize = 8;
/// Largest frame body accepted: a record is at most 64 KiB; a checkpoint carries a few certificates.
pub const FRAME_BYTES_MAX: usize = 1024 * 1024;
const KIND_ENTRY: u8 = 1;
const KIND_CHECKPOINT: u8 = 2;
const KIND_FORK_EVIDENCE: u8 = 3;
/// Closes a group: `group_start: u64`, the position of the group's first frame.
const KIND_COMMIT: u8 = 4;
const COMMIT_BODY_BYTES: usize = 1 + 8;
pub const COMMIT_FRAME_BYTES: u64 = (FRAME_HEADER_BYTES + COMMIT_BODY_BYTES) as u64;
/// Names the journal's format; written (and synced) before the first group, checked at open.
const FORMAT_FILE: &str = "FORMAT";
const FORMAT: &str = "cxj2: groups closed by commit frames\n";
const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".cxj";
/// Reads are buffered by this much: catch-up and recovery are sequential scans.
const READ_BUFFER_BYTES: usize = 1024 * 1024;
/// The smallest read buffer of a scan.
const SCAN_BUFFER_BYTES_MIN: usize = 8 * 1024;
/// `read_many` of positions at most this far apart on average reads through
/// `READ_MANY_DENSE_BUFFER_BYTES`, and skips at most this far within its buffer.
const DENSE_GAP_BYTES: u64 = 16 * 1024;
const READ_MANY_DENSE_BUFFER_BYTES: usize = 256 * 1024;

/// A global byte offset into the journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JournalPos(pub u64);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Entry(Entry),
    Checkpoint(Checkpoint),
    /// A valid checkpoint of an origin that contradicts the chain this journal holds for it: proof
    /// of equivocation (or of an origin restored from an old backup). Kept as evidence; the
    /// origin's entries are refused from then on.
    ForkEvidence(Checkpoint),
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal i/o error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("journal ends in a torn frame at position {position} (a crash mid-write); the node truncates it on start")]
    TornTail { position: u64 },
    #[error("journal {path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("journal corrupt in {path} at byte {offset} (journal position {position}): {reason}; the store must not serve: restore the store from a backup, or stop the node and run `cxnode recover --config <node.toml> --from-peer <ADDR>` to rebuild it from a replica, then `cxnode verify`")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        position: u64,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `quarantine_from` moved out of the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// The journal now ends here (before the next open cuts an incomplete group).
    pub cut_at: JournalPos,
    /// Why: the damage found there.
    pub reason: String,
    /// Files kept for inspection: a copy of the damaged segment, and every later segment.
    pub files: Vec<PathBuf>,
}

/// Moves the journal in `dir` from `position` on into `quarantine`: segments that start after it
/// are moved whole; the one holding it is copied there, then cut at `position`. Both directories
/// are synced. The next open cuts back to the last whole group; what was cut must come back from
/// a replica (`cxnode recover`).
pub fn quarantine_from(
    dir: &Path,
    position: JournalPos,
    reason: &str,
    quarantine: &Path,
) -> Result<Quarantined, JournalError> {
    let fs = OsFs;
    std::fs::create_dir_all(quarantine).map_err(io_err(quarantine))?;
    let mut files = Vec::new();
    for base in list_segments(&fs, dir)?.into_iter().rev() {
        let path = segment_path(dir, base);
        let name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let kept = quarantine.join(name);
        if base > position.0 || (base == position.0 && base > 0) {
            std::fs::rename(&path, &kept).map_err(io_err(&path))?;
            files.push(kept);
            continue;
        }
        std::fs::copy(&path, &kept).map_err(io_err(&path))?;
        std::fs::File::open(&kept)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&kept))?;
        files.push(kept);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.set_len(position.0 - base).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        break;
    }
    sync_dir(&fs, quarantine)?;
    sync_dir(&fs, dir)?;
    files.reverse();
    Ok(Quarantined {
        cut_at: position,
        reason: reason.to_string(),
        files,
    })
}

/// What recovery found at the tail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TailRepair {
    /// Bytes cut from the end of the last segment (a torn final frame), if any.
    pub truncated_bytes: u64,
    pub truncated_at: Option<JournalPos>,
}

pub struct Journal {
    fs: Arc<dyn JournalFs>,
    dir: PathBuf,
    segment_bytes_max: u64,
    /// Base positions of the segments, ascending.
    segments: Vec<u64>,
    active: Box<dyn SegmentFile>,
    end: u64,
    scratch: Vec<u8>,
    /// Each fsync's duration is observed here, when set (the node's metrics).
    fsync_observer: Option<prometheus::Histogram>,
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{base:020}{SEGMENT_SUFFIX}"))
}

fn list_segments(fs: &dyn JournalFs, dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut bases = Vec::new();
    for name in fs.list_dir(dir).map_err(io_err(dir))? {
        let name = name.as_str();
        if let Some(base) = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|r| r.strip_suffix(SEGMENT_SUFFIX))
        {
            let base = base.parse::<u64>().map_err(|_| JournalError::Corrupt {
                path: dir.join(name),
                offset: 0,
                position: 0,
                reason: "segment file name is not a position".to_string(),
            })?;
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn sync_dir(fs: &dyn JournalFs, dir: &Path) -> Result<(), JournalError> {
    fs.sync_dir(dir).map_err(io_err(dir))
}

impl Journal {
    /// Opens (or creates) the journal in `dir` on the real file system.
    pub fn open(dir: &Path, segment_bytes_max: u64) -> Result<(Journal, TailRepair), JournalError> {
        Journal::open_on(Arc::new(OsFs), dir, segment_bytes_max)
    }

    /// Opens (or creates) the journal in `dir`, checks that the segments are contiguous, cuts a
    /// torn final group, and makes what is left durable (active segment and directory) before
    /// returning. Damage anywhere else is an error naming the position.
    pub fn open_on(
        fs: Arc<dyn JournalFs>,
        dir: &Path,
        segment_bytes_max: u64,
    ) -> Result<(Journal, TailRepair), JournalError> {
        fs.create_dir_all(dir).map_err(io_err(dir))?;
        let mut segments = list_segments(fs.as_ref(), dir)?;
        if segments.is_empty() {
            let path = segment_path(dir, 0);
            fs.create_new(&path).map_err(io_err(&path))?;
            segments.push(0);
        }
        if segments[0] != 0 {
            return Err(JournalError::Corrupt {
                path: segment_path(dir, segments[0]),
                offset: 0,
                position: 0,
                reason: format!(
                    "the first segment starts at {} instead of 0: a segment is missing",
                    segments[0]
                ),
            });
        }
        check_format(fs.as_ref(), dir, &segments)?;
        for pair in segments.windows(2) {
            let path = segment_path(dir, pair[0]);
            let len = fs.file_len(&path).map_err(io_err(&path))?;
            if pair[0] + len != pair[1] {
                return Err(JournalError::Corrupt {
                    path,
                    offset: len,
                    position: pair[0] + len,
                    reason: format!(
                        "segment ends at {} but the next one starts at {}",
                        pair[0] + len,
                        pair[1]
                    ),
                });
            }
        }
        let last = *segments.last().expect("at least one segment exists");
        let path = segment_path(dir, last);
        let (valid_len, file_len) = scan_tail(fs.as_ref(), &path, last)?;
        let mut repair = TailRepair::default();
        let mut active = fs.open_append(&path).map_err(io_err(&path))?;
        if valid_len < file_len {
            active.set_len(valid_len).map_err(io_err(&path))?;
            repair = TailRepair {
                truncated_bytes: file_len - valid_len,
                truncated_at: Some(JournalPos(last + valid_len)),
            };
        }
        // After a kill -9 the last groups may live only in the page cache: they read back valid
        // but were never synced (and never acknowledged). Make them durable now, before they are
        // indexed, streamed to peers or answered as duplicates; the same for a new segment's
        // directory entry.
        active.sync_data().map_err(io_err(&path))?;
        sync_dir(fs.as_ref(), dir)?;
        let journal = Journal {
            fs,
            dir: dir.to_path_buf(),
            segment_bytes_max,
            segments,
            active,
            end: last + valid_len,
            scratch: Vec::new(),
            fsync_observer: None,
        };
        Ok((journal, repair))
    }

    /// The position just past the last frame written (synced or not).
    pub fn end(&self) -> JournalPos {
        JournalPos(self.end)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `frames` as one group, closed by a commit frame (not yet durable: call `sync`).
    /// Returns each frame's position; `end()` moves past the commit frame.
    pub fn append(&mut self, frames: &[Frame]) -> Result<Vec<JournalPos>, JournalError> {
        let active_base = *self.segments.last().expect("at least one segment exists");
        if self.end - active_base >= self.segment_bytes_max {
            self.roll()?;
        }
        self.scratch.clear();
        let mut positions = Vec::with_capacity(frames.len());
        for frame in frames {
            positions.push(JournalPos(self.end + self.scratch.len() as u64));
            encode_frame(frame, &mut self.scratch);
        }
        encode_commit(self.end, &mut self.scratch);
        let path = segment_path(&self.dir, *self.segments.last().expect("at least one segment exists"));
        self.active.write_all(&self.scratch).map_err(io_err(&path))?;
        self.end += self.scratch.len() as u64;
        Ok(positions)
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        let path = segment_path(&self.dir, *self.segments.last().expect("at least one segment exists"));
        let started = std::time::Instant::now();
        let synced = self.active.sync_data().map_err(io_err(&path));
        if let Some(h) = &self.fsync_observer {
            h.observe(started.elapsed().as_secs_f64());
        }
        synced
    }

    /// Observes each fsync's duration in `histogram` from now on.
    pub fn observe_fsync(&mut self, histogram: prometheus::Histogram) {
        self.fsync_observer = Some(histogram);
    }

    fn roll(&mut self) -> Result<(), JournalError> {
        self.sync()?;
        let path = segment_path(&self.dir, self.end);
        let file = self.fs.create_new(&path).map_err(io_err(&path))?;
        sync_dir(self.fs.as_ref(), &self.dir)?;
        self.active = file;
        self.segments.push(self.end);
        Ok(())
    }

    pub fn reader(&self) -> JournalReader {
        JournalReader {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
        }
    }
}

/// Checks the journal's format marker, writing it for a journal that holds no data yet (or one
/// written by the first version with commit frames, before the marker existed). A journal with
/// data and groups without commit frames was written by an older cxnode: opening it would cut
/// every group as torn, so it is refused.
fn check_format(fs: &dyn JournalFs, dir: &Path, segments: &[u64]) -> Result<(), JournalError> {
    let path = dir.join(FORMAT_FILE);
    let found = if fs.list_dir(dir).map_err(io_err(dir))?.iter().any(|n| n == FORMAT_FILE) {
        let mut text = String::new();
        fs.open_read(&path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(io_err(&path))?;
        if text == FORMAT {
            return Ok(());
        }
        Some(text)
    } else {
        None
    };
    let first = segment_path(dir, segments[0]);
    let holds_data = segments.len() > 1 || fs.file_len(&first).map_err(io_err(&first))? > 0;
    // A marker cut short by a crash while it was written: it was never synced, so no group was
    // written after it.
    let torn_marker = found.as_deref().is_some_and(|t| FORMAT.starts_with(t)) && !holds_data;
    if let Some(text) = found.filter(|_| !torn_marker) {
        return Err(JournalError::Format {
            path,
            reason: format!(
                "unknown journal format {text:?} (this version writes {FORMAT:?}): written by a newer cxnode?"
            ),
        });
    }
    if holds_data && !has_commit_frame(fs, &first)? {
        return Err(JournalError::Format {
            path: first,
            reason: "written by an older cxnode whose groups have no commit frames; this version would cut them all as torn. Run it with the version that wrote it, or move the data directory aside, start empty and let peers refill it (`cxnode recover --config <node.toml> --from-peer <ADDR>` brings back this node's own log)".to_string(),
        });
    }
    let mut file = if torn_marker {
        let mut f = fs.open_append(&path).map_err(io_err(&path))?;
        f.set_len(0).map_err(io_err(&path))?;
        f
    } else {
        fs.create_new(&path).map_err(io_err(&path))?
    };
    file.write_all(FORMAT.as_bytes()).map_err(io_err(&path))?;
    file.sync_data().map_err(io_err(&path))?;
    sync_dir(fs, dir)
}

/// Whether the whole frames at the start of `path` include a commit frame.
fn has_commit_frame(fs: &dyn JournalFs, path: &Path) -> Result<bool, JournalError> {
    let file = fs.open_read(path).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut body = Vec::new();
    while let ReadOutcome::Frame { .. } = read_frame_body(&mut reader, &mut body).map_err(io_err(path))? {
        if let Ok(Decoded::Commit { .. }) = decode_any(&body) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Scans the last segment (which starts at journal position `base`) and returns (length of the
/// durable prefix, file length). The durable prefix ends at the last commit frame: frames after
/// it belong to a group whose fsync never completed (never acknowledged) and are cut, which makes
/// a group all-or-nothing. A crash can leave that last group torn in any shape (cut short, a
/// zero hole followed by data, a bad checksum followed by zeros or by more of the group), since
/// pages are written back in any order. What tells a torn last group from corruption is what
/// lies after the damage: the commit frame of a *later* group proves the damaged frame was
/// followed by more, hence synced and acknowledged, data; anything else is the torn tail.
fn scan_tail(fs: &dyn JournalFs, path: &Path, base: u64) -> Result<(u64, u64), JournalError> {
    let file = fs.open_read(path).map_err(io_err(path))?;
    let file_len = fs.file_len(path).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut offset = 0u64;
    let mut group_end = 0u64;
    let mut body = Vec::new();
    let corrupt = |offset: u64, reason: String| JournalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        position: base + offset,
        reason,
    };
    loop {
        let outcome = read_frame_body(&mut reader, &mut body).map_err(io_err(path))?;
        let damage = match outcome {
            ReadOutcome::End => return Ok((group_end, file_len)),
            ReadOutcome::Torn | ReadOutcome::BadChecksum | ReadOutcome::BadLength { .. } => outcome.damage(),
            ReadOutcome::Frame { len } => {
                match decode_any(&body).map_err(|reason| corrupt(offset, reason))? {
                    Decoded::Commit { group_start } => {
                        if group_start != base + group_end {
                            return Err(corrupt(
                                offset,
                                format!(
                                    "commit frame names a group starting at {group_start}, but the group starts at {}",
                                    base + group_end
                                ),
                            ));
                        }
                        group_end = offset + len;
                    }
                    Decoded::Frame(_) => {}
                }
                offset += len;
                continue;
            }
        };
        return match later_commit(fs, path, base, offset + 1, base + group_end)? {
            Some(at) => Err(corrupt(
                offset,
                format!(
                    "{damage}, yet a later group (committed at journal position {}) follows it",
                    base + at
                ),
            )),
            None => Ok((group_end, file_len)),
        };
    }
}

/// Looks for a commit frame at or after byte `from` of `path` that closes a group other than the
/// one starting at `torn_group_start` (the torn group's own commit frame may have reached the disk
/// before its middle did). Returns its offset in the file.
fn later_commit(
    fs: &dyn JournalFs,
    path: &Path,
    base: u64,
    from: u64,
    torn_group_start: u64,
) -> Result<Option<u64>, JournalError> {
    const CHUNK_BYTES: usize = 1024 * 1024;
    let overlap = COMMIT_FRAME_BYTES as usize - 1;
    let mut file = fs.open_read(path).map_err(io_err(path))?;
    file.seek(SeekFrom::Start(from)).map_err(io_err(path))?;
    let mut window: Vec<u8> = Vec::with_capacity(CHUNK_BYTES + overlap);
    let mut window_start = from;
    let mut chunk = vec![0u8; CHUNK_BYTES];
    loop {
        let n = read_up_to(&mut file, &mut chunk).map_err(io_err(path))?;
        window.extend_from_slice(&chunk[..n]);
        let mut i = 0;
        while i + COMMIT_FRAME_BYTES as usize <= window.len() {
            if let Some(group_start) = commit_at(&window[i..]) {
                // A commit frame's group starts before it, inside this segment.
                let at = window_start + i as u64;
                if group_start != torn_group_start && group_start >= base && group_start < base + at {
                    return Ok(Some(at));
                }
            }
            i += 1;
        }
        if n < chunk.len() {
            return Ok(None);
        }
        let keep = window.len().min(overlap);
        window_start += (window.len() - keep) as u64;
        window.drain(..window.len() - keep);
    }
}

/// The group start named by a commit frame at the start of `bytes`, if one is there.
fn commit_at(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..FRAME_HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    if len != COMMIT_BODY_BYTES {
        return None;
    }
    let body = bytes.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + COMMIT_BODY_BYTES)?;
    if body[0] != KIND_COMMIT || crc32c::crc32c(body) != u32::from_le_bytes(header[4..8].try_into().ok()?) {
        return None;
    }
    Some(u64::from_le_bytes(body[1..9].try_into().ok()?))
}

enum ReadOutcome {
    End,
    Torn,
    BadLength { len: usize },
    BadChecksum,
    Frame { len: u64 },
}

impl ReadOutcome {
    /// What is wrong with a frame that did not read whole (empty for End and Frame).
    fn damage(&self) -> String {
        match self {
            ReadOutcome::Torn => "frame is cut short".to_string(),
            ReadOutcome::BadChecksum => "frame checksum mismatch".to_string(),
            ReadOutcome::BadLength { len } => format!("frame length {len} is outside 1..={FRAME_BYTES_MAX}"),
            ReadOutcome::End | ReadOutcome::Frame { .. } => String::new(),
        }
    }
}

fn read_frame_body(reader: &mut impl Read, body: &mut Vec<u8>) -> Result<ReadOutcome, io::Error> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let got = read_up_to(reader, &mut header)?;
    if got == 0 {
        return Ok(ReadOutcome::End);
    }
    if got < FRAME_HEADER_BYTES {
        return Ok(ReadOutcome::Torn);
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > FRAME_BYTES_MAX {
        // A length that cannot be ours; the caller decides, knowing whether this is the tail.
        return Ok(ReadOutcome::BadLength { len });
    }
    body.resize(len, 0);
    let got = read_up_to(reader, body)?;
    if got < len {
        return Ok(ReadOutcome::Torn);
    }
    if crc32c::crc32c(body) != crc {
        return Ok(ReadOutcome::BadChecksum);
    }
    Ok(ReadOutcome::Frame {
        len: (FRAME_HEADER_BYTES + len) as u64,
    })
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads frames by position; each read checks the frame's checksum again. Commit frames are the
/// journal's own business: readers never see them.
#[derive(Clone)]
pub struct JournalReader {
    fs: Arc<dyn JournalFs>,
    dir: PathBuf,
}

impl JournalReader {
    /// A reader of the journal in `dir` on the real file system.
    pub fn new(dir: &Path) -> JournalReader {
        JournalReader {
            fs: Arc::new(OsFs),
            dir: dir.to_path_buf(),
        }
    }

    /// Calls `visit(position, end, frame)` for every frame from `from` up to `to` (exclusive), in
    /// order; `end` is where the next frame starts. `visit` returns false to stop early. Any bad
    /// frame in that range is corruption.
    pub fn scan<E: From<JournalError>>(
        &self,
        from: JournalPos,
        to: JournalPos,
        visit: impl FnMut(JournalPos, JournalPos, Frame) -> Result<bool, E>,
    ) -> Result<(), E> {
        // A short range is read with a buffer of its size: a live stream or a look-up reading a
        // few frames must not copy a megabyte each time.
        let buffer =
            to.0.saturating_sub(from.0)
                .clamp(SCAN_BUFFER_BYTES_MIN as u64, READ_BUFFER_BYTES as u64);
        self.scan_buffered(from, to, buffer as usize, visit)
    }

    /// `scan` with a read buffer of `buffer` bytes (for a reader that stops early, at an unknown
    /// point: `find_entry`).
    pub fn scan_buffered<E: From<JournalError>>(
        &self,
        from: JournalPos,
        to: JournalPos,
        buffer: usize,
        mut visit: impl FnMut(JournalPos, JournalPos, Frame) -> Result<bool, E>,
    ) -> Result<(), E> {
        let segments = list_segments(self.fs.as_ref(), &self.dir)?;
        let mut body = Vec::new();
        for (i, base) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            let next = segments.get(i + 1).copied().unwrap_or(u64::MAX);
            if next <= from.0 || *base >= to.0 {
                continue;
            }
            let path = segment_path(&self.dir, *base);
            let mut file = self.fs.open_read(&path).map_err(io_err(&path))?;
            let mut offset = from.0.saturating_sub(*base);
            file.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
            let mut reader = BufReader::with_capacity(buffer, file);
            while base + offset < to.0 {
                let position = base + offset;
                let corrupt = |reason: String| JournalError::Corrupt {
                    path: path.clone(),
                    offset,
                    position,
                    reason,
                };
                match read_frame_body(&mut reader, &mut body).map_err(io_err(&path))? {
                    ReadOutcome::End => break,
                    ReadOutcome::Torn if is_last => return Err(JournalError::TornTail { position }.into()),
                    ReadOutcome::Torn => return Err(corrupt("frame is cut short".to_string()).into()),
                    ReadOutcome::BadLength { len } => {
                        return Err(corrupt(format!("frame length {len} is out of range")).into())
                    }
                    ReadOutcome::BadChecksum => return Err(corrupt("frame checksum mismatch".to_string()).into()),
                    ReadOutcome::Frame { len } => {
                        if let Decoded::Frame(frame) = decode_any(&body).map_err(corrupt)? {
                            if !visit(JournalPos(position), JournalPos(position + len), frame)? {
                                return Ok(());
                            }
                        }
                        offset += len;
                    }
                }
            }
        }
        Ok(())
    }

    /// Where the journal's files end now (past the last commit frame of a store that is closed).
    pub fn end(&self) -> Result<JournalPos, JournalError> {
        let segments = list_segments(self.fs.as_ref(), &self.dir)?;
        let Some(last) = segments.last() else {
            return Ok(JournalPos(0));
        };
        let path = segment_path(&self.dir, *last);
        Ok(JournalPos(last + self.fs.file_len(&path).map_err(io_err(&path))?))
    }

    /// Reads the frame at `pos`.
    /// Reads the frames at `positions` (ascending, as postings list them) with one directory
    /// listing and one open file per segment, where `read_at` would pay both per frame.
    pub fn read_many(&self, positions: &[JournalPos]) -> Result<Vec<Frame>, JournalError> {
        debug_assert!(positions.windows(2).all(|w| w[0] <= w[1]), "ascending positions");
        // Nothing to read costs no directory listing (a live subscriber served from the tail
        // cache asks for nothing, once per step).
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let segments = list_segments(self.fs.as_ref(), &self.dir)?;
        let mut out = Vec::with_capacity(positions.len());
        // Dense positions (a pass over most frames) are read through a buffer that a short skip
        // stays inside, so a frame costs no system call; sparse ones (a selective feed) through a
        // small one, so a frame does not pull a large read with it.
        let span = match (positions.first(), positions.last()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0,
        };
        let dense = span / (positions.len() as u64).max(1) <= DENSE_GAP_BYTES;
        let buffer = if dense {
            READ_MANY_DENSE_BUFFER_BYTES
        } else {
            SCAN_BUFFER_BYTES_MIN
        };
        let mut open: Option<OpenSegment> = None;
        let mut body = Vec::new();
        for pos in positions {
            let base = segments.iter().rev().find(|b| **b <= pos.0).copied().unwrap_or(0);
            if open.as_ref().is_none_or(|(b, _, _, _)| *b != base) {
                let path = segment_path(&self.dir, base);
                let file = self.fs.open_read(&path).map_err(io_err(&path))?;
                open = Some((base, path, BufReader::with_capacity(buffer, file), u64::MAX));
            }
            let (_, path, reader, at) = open.as_mut().expect("opened above");
            let offset = pos.0 - base;
            if *at != offset {
                match offset.checked_sub(*at) {
                    Some(skip) if skip <= DENSE_GAP_BYTES => reader.seek_relative(skip as i64),
                    _ => reader.seek(SeekFrom::Start(offset)).map(|_| ()),
                }
                .map_err(io_err(path))?;
            }
            let corrupt = |reason: String| JournalError::Corrupt {
                path: path.clone(),
                offset,
                position: pos.0,
                reason,
            };
            match read_frame_body(reader, &mut body).map_err(io_err(path))? {
                ReadOutcome::Frame { len } => {
                    *at = offset + len;
                    out.push(decode_body(&body).map_err(corrupt)?)
                }
                _ => return Err(corrupt("no valid frame at this position".to_string())),
            }
        }
        Ok(out)
    }

    pub fn read_at(&self, pos: JournalPos) -> Result<Frame, JournalError> {
        let segments = list_segments(self.fs.as_ref(), &self.dir)?;
        let base = segments.iter().rev().find(|b| **b <= pos.0).copied().unwrap_or(0);
        let path = segment_path(&self.dir, base);
        let mut file = self.fs.open_read(&path).map_err(io_err(&path))?;
        let offset = pos.0 - base;
        file.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
        let mut body = Vec::new();
        let corrupt = |reason: String| JournalError::Corrupt {
            path: path.clone(),
            offset,
            position: pos.0,
            reason,
        };
        match read_frame_body(&mut file, &mut body).map_err(io_err(&path))? {
            ReadOutcome::Frame { .. } => decode_body(&body).map_err(corrupt),
            _ => Err(corrupt("no valid frame at this position".to_string())),
        }
    }
}

/// A segment `read_many` reads: its base, path, buffered reader and the reader's offset in it.
type OpenSegment = (u64, PathBuf, BufReader<Box<dyn super::fs::SegmentRead>>, u64);

/// The bytes `frame` takes in the journal, header included (positions can be known before writing).
pub fn encoded_len(frame: &Frame) -> u64 {
    let body = match frame {
        Frame::Entry(e) => 1 + 4 + 8 + 32 + 8 + 32 + 32 + 4 + e.op_bytes.len(),
        Frame::Checkpoint(c) | Frame::ForkEvidence(c) => {
            1 + 4
                + 8
                + 32
                + 8
                + 2
                + 4
                + c.signature.len()
                + 4
                + c.signer_chain.iter().map(|d| 4 + d.len()).sum::<usize>()
        }
    };
    (FRAME_HEADER_BYTES + body) as u64
}

/// Appends the commit frame of a group that starts at `group_start`.
fn encode_commit(group_start: u64, out: &mut Vec<u8>) {
    let mut body = [0u8; COMMIT_BODY_BYTES];
    body[0] = KIND_COMMIT;
    body[1..].copy_from_slice(&group_start.to_le_bytes());
    out.extend_from_slice(&(COMMIT_BODY_BYTES as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    match frame {
        Frame::Entry(e) => {
            out.push(KIND_ENTRY);
            out.extend_from_slice(&e.origin.code().to_le_bytes());
            out.extend_from_slice(&e.seq.to_le_bytes());
            out.extend_from_slice(&e.prev_hash);
            out.extend_from_slice(&e.appended_at_micros.to_le_bytes());
            out.extend_from_slice(&e.op_digest);
            out.extend_from_slice(&e.hash);
            out.extend_from_slice(&(e.op_bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.op_bytes);
        }
        Frame::Checkpoint(c) | Frame::ForkEvidence(c) => {
            out.push(if matches!(frame, Frame::Checkpoint(_)) {
                KIND_CHECKPOINT
            } else {
                KIND_FORK_EVIDENCE
            });
            out.extend_from_slice(&c.origin.code().to_le_bytes());
            out.extend_from_slice(&c.seq.to_le_bytes());
            out.extend_from_slice(&c.head_hash);
            out.extend_from_slice(&c.at_unix_seconds.to_le_bytes());
            out.extend_from_slice(&c.signature_scheme.to_le_bytes());
            out.extend_from_slice(&(c.signature.len() as u32).to_le_bytes());
            out.extend_from_slice(&c.signature);
            out.extend_from_slice(&(c.signer_chain.len() as u32).to_le_bytes());
            for cert in &c.signer_chain {
                out.extend_from_slice(&(cert.len() as u32).to_le_bytes());
                out.extend_from_slice(cert);
            }
        }
    }
    let body_len = out.len() - start - FRAME_HEADER_BYTES;
    debug_assert_eq!((out.len() - start) as u64, encoded_len(frame));
    assert!(
        body_len <= FRAME_BYTES_MAX,
        "frame of {body_len} bytes exceeds the limit; callers bound record and chain sizes"
    );
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A cursor over a frame body that fails with a reason instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!(
                "frame body ends early: needed {n} more bytes, {} left",
                self.bytes.len()
            ));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn hash(&mut self) -> Result<Hash, String> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }
    fn region(&mut self) -> Result<Region, String> {
        let code = self.u32()?;
        Region::from_code(code).map_err(|e| format!("bad origin in frame: {e}"))
    }
    fn vec(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
}

/// Decodes `bytes` as a segment's contents, frame by frame as readers do (length, checksum, body):
/// the frames readers would see, or why the bytes end early. Never panics, whatever the bytes (the
/// journal fuzz target's entry).
pub fn decode_frames(bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let mut reader = bytes;
    let mut body = Vec::new();
    let mut frames = Vec::new();
    loop {
        match read_frame_body(&mut reader, &mut body).map_err(|e| e.to_string())? {
            ReadOutcome::End => return Ok(frames),
            ReadOutcome::Frame { .. } => {
                if let Decoded::Frame(f) = decode_any(&body)? {
                    frames.push(f);
                }
            }
            damaged => return Err(damaged.damage()),
        }
    }
}

/// One frame as the journal writes it (header and body).
pub fn frame_bytes(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(frame, &mut out);
    out
}

/// `body` framed with its length and checksum, as if the journal had written it.
pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A frame body as decoded: a frame readers see, or a group's commit frame.
enum Decoded {
    Frame(Frame),
    Commit { group_start: u64 },
}

fn decode_any(body: &[u8]) -> Result<Decoded, String> {
    if body.first() == Some(&KIND_COMMIT) {
        let mut c = Cursor { bytes: &body[1..] };
        let group_start = c.u64()?;
        if !c.bytes.is_empty() {
            return Err(format!("{} stray bytes after the commit frame", c.bytes.len()));
        }
        return Ok(Decoded::Commit { group_start });
    }
    decode_body(body).map(Decoded::Frame)
}

fn decode_body(body: &[u8]) -> Result<Frame, String> {
    let mut c = Cursor { bytes: body };
    let frame = match c.u8()? {
        KIND_ENTRY => Frame::Entry(Entry {
            origin: c.region()?,
            seq: c.u64()?,
            prev_hash: c.hash()?,
            appended_at_micros: c.i64()?,
            op_digest: c.hash()?,
            hash: c.hash()?,
            op_bytes: c.vec()?.into(),
        }),
        kind @ (KIND_CHECKPOINT | KIND_FORK_EVIDENCE) => {
            let origin = c.region()?;
            let seq = c.u64()?;
            let head_hash = c.hash()?;
            let at_unix_seconds = c.i64()?;
            let signature_scheme = c.u16()?;
            let signature = c.vec()?;
            let n = c.u32()? as usize;
            if n > 8 {
                return Err(format!("checkpoint claims {n} certificates; at most 8 are allowed"));
            }
            let mut signer_chain = Vec::with_capacity(n);
            for _ in 0..n {
                signer_chain.push(c.vec()?);
            }
            let checkpoint = Checkpoint {
                origin,
                seq,
                head_hash,
                at_unix_seconds,
                signature_scheme,
                signature,
                signer_chain,
            };
            if kind == KIND_CHECKPOINT {
                Frame::Checkpoint(checkpoint)
            } else {
                Frame::ForkEvidence(checkpoint)
            }
        }
        other => return Err(format!("unknown frame kind {other}")),
    };
    if !c.bytes.is_empty() {
        return Err(format!("{} stray bytes after the frame", c.bytes.len()));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{ChainHead, Entry};
    use std::fs::{self, OpenOptions};

    fn segments_of(dir: &Path) -> Vec<u64> {
        list_segments(&OsFs, dir).expect("list")
    }

    fn zj() -> Region {
        Region::parse("330000").expect("province")
    }

    fn entries(n: u64) -> Vec<Frame> {
        let mut head = ChainHead::default();
        (1..=n)
            .map(|seq| {
                let e = Entry::new(zj(), seq, head.head_hash, seq as i64, vec![b'x'; 100]);
                head.advance(&e).expect("links");
                Frame::Entry(e)
            })
            .collect()
    }

    /// A stand-in checkpoint: the tail rules only look at the frame kind.
    fn checkpoint(seq: u64) -> Frame {
        Frame::Checkpoint(crate::log::Checkpoint {
            origin: zj(),
            seq,
            head_hash: [1; 32],
            at_unix_seconds: 0,
            signature_scheme: 0,
            signature: vec![2; 64],
            signer_chain: vec![vec![3; 10]],
        })
    }

    /// Groups of `size` entries, each closed by a checkpoint, as the writer makes them.
    fn groups(n: u64, size: usize) -> Vec<Vec<Frame>> {
        entries(n)
            .chunks(size)
            .map(|c| {
                let mut g = c.to_vec();
                let Some(Frame::Entry(last)) = g.last() else {
                    unreachable!("entries only")
                };
                let seq = last.seq;
                g.push(checkpoint(seq));
                g
            })
            .collect()
    }

    fn all(reader: &JournalReader, end: JournalPos) -> Vec<Frame> {
        let mut out = Vec::new();
        reader
            .scan(JournalPos(0), end, |_, _, f| {
                out.push(f);
                Ok::<_, JournalError>(true)
            })
            .expect("scan");
        out
    }

    #[test]
    fn frames_round_trip_across_segments_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let groups = groups(50, 7);
        let frames: Vec<Frame> = groups.concat();
        let (mut j, repair) = Journal::open(dir.path(), 1000).expect("open");
        assert_eq!(repair, TailRepair::default());
        for g in &groups {
            j.append(g).expect("append");
            j.sync().expect("sync");
        }
        let end = j.end();
        drop(j);
        let (j, repair) = Journal::open(dir.path(), 1000).expect("reopen");
        assert_eq!(repair, TailRepair::default());
        assert_eq!(j.end(), end);
        assert!(segments_of(dir.path()).len() > 1, "small segments roll");
        assert_eq!(all(&j.reader(), end), frames);
    }

    #[test]
    fn a_torn_tail_is_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = Journal::open(dir.path(), 1 << 20).expect("open");
        let groups = groups(6, 3);
        j.append(&groups[0]).expect("append");
        let second = j.append(&groups[1]).expect("append");
        j.sync().expect("sync");
        drop(j);
        let path = segment_path(dir.path(), 0);
        let len = fs::metadata(&path).expect("meta").len();
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(len - 10).expect("tear the last frame");
        let (j, repair) = Journal::open(dir.path(), 1 << 20).expect("recovers");
        assert_eq!(
            repair.truncated_at,
            Some(second[0]),
            "the whole torn group goes, not just its last frame"
        );
        assert_eq!(j.end(), second[0]);
        assert_eq!(all(&j.reader(), j.end()), groups[0]);
    }

    #[test]
    fn a_flipped_byte_in_the_middle_is_reported_with_its_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = Journal::open(dir.path(), 1 << 20).expect("open");
        let groups = groups(6, 3);
        let pos = j.append(&groups[0]).expect("append");
        j.sync().expect("sync");
        // A later group, synced: the damage below lies before acknowledged data.
        j.append(&groups[1]).expect("append");
        j.sync().expect("sync");
        drop(j);
        let path = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&path).expect("read");
        bytes[pos[1].0 as usize + 20] ^= 0x40;
        fs::write(&path, &bytes).expect("write");
        match Journal::open(dir.path(), 1 << 20) {
            Err(JournalError::Corrupt { position, .. }) => assert_eq!(position, pos[1].0),
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("a damaged journal must not open"),
        }
    }

    #[test]
    fn an_unfinished_group_is_dropped_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = Journal::open(dir.path(), 1 << 20).expect("open");
        let groups = groups(6, 3);
        j.append(&groups[0]).expect("append");
        // The second group's frames reach the disk, its commit frame does not.
        let second = j.append(&groups[1]).expect("append");
        j.sync().expect("sync");
        drop(j);
        let path = segment_path(dir.path(), 0);
        let len = fs::metadata(&path).expect("meta").len();
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(len - COMMIT_FRAME_BYTES).expect("cut the commit frame");
        let (j, repair) = Journal::open(dir.path(), 1 << 20).expect("recovers");
        assert_eq!(repair.truncated_at, Some(second[0]));
        assert_eq!(all(&j.reader(), j.end()), groups[0]);
    }

    /// Writes two synced groups and a third one, then lets `damage` reshape the bytes of the
    /// third (as out-of-order write-back after a crash can); returns (dir, end of the second).
    fn torn_third_group(damage: impl FnOnce(&mut Vec<u8>, usize)) -> (tempfile::TempDir, JournalPos) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = Journal::open(dir.path(), 1 << 20).expect("open");
        let groups = groups(60, 20);
        j.append(&groups[0]).expect("append");
        j.append(&groups[1]).expect("append");
        j.sync().expect("sync");
        let second_end = j.end();
        j.append(&groups[2]).expect("append");
        j.sync().expect("sync");
        drop(j);
        let path = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&path).expect("read");
        damage(&mut bytes, second_end.0 as usize);
        fs::write(&path, &bytes).expect("write");
        (dir, second_end)
    }

    fn assert_cut_at(dir: &tempfile::TempDir, at: JournalPos) {
        let (j, repair) = Journal::open(dir.path(), 1 << 20).expect("a torn last group is not corruption");
        assert_eq!(repair.truncated_at, Some(at));
        assert_eq!(j.end(), at);
        assert_eq!(all(&j.reader(), j.end()).len(), 2 * 21);
    }

    #[test]
    fn a_zero_hole_then_data_in_the_last_group_is_a_torn_tail() {
        // The middle page never reached the disk; later pages, commit frame included, did.
        let (dir, at) = torn_third_group(|b, start| {
            let hole = start + 200..start + 900;
            b[hole].fill(0);
        });
        assert_cut_at(&dir, at);
    }

    #[test]
    fn a_bad_checksum_then_zeros_is_a_torn_tail() {
        let (dir, at) = torn_third_group(|b, start| {
            b[start + 30] ^= 0xff;
            let len = b.len();
            b[start + 200..len].fill(0);
        });
        assert_cut_at(&dir, at);
    }

    #[test]
    fn a_bad_checksum_then_the_rest_of_its_group_is_a_torn_tail() {
        let (dir, at) = torn_third_group(|b, start| b[start + 30] ^= 0xff);
        assert_cut_at(&dir, at);
    }

    #[test]
    fn a_length_cut_to_zero_then_data_is_a_torn_tail() {
        let (dir, at) = torn_third_group(|b, start| b[start..start + 4].fill(0));
        assert_cut_at(&dir, at);
    }

    #[test]
    fn damage_before_a_later_group_is_corruption() {
        // The same hole, one group earlier: the third group's commit frame follows it.
        let (dir, second_end) = torn_third_group(|_, _| {});
        let path = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&path).expect("read");
        let first_len = second_end.0 as usize / 2;
        bytes[first_len + 100..first_len + 600].fill(0);
        fs::write(&path, &bytes).expect("write");
        match Journal::open(dir.path(), 1 << 20) {
            Err(JournalError::Corrupt { reason, .. }) => assert!(reason.contains("later group"), "{reason}"),
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("damage before acknowledged data must not be cut silently"),
        }
    }

    #[test]
    fn a_missing_segment_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = Journal::open(dir.path(), 500).expect("open");
        for g in groups(30, 3) {
            j.append(&g).expect("append");
        }
        j.sync().expect("sync");
        drop(j);
        let segs = segments_of(dir.path());
        assert!(segs.len() >= 3);
        fs::remove_file(segment_path(dir.path(), segs[1])).expect("remove");
        assert!(matches!(
            Journal::open(dir.path(), 500),
            Err(JournalError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_journal_of_an_older_cxnode_without_commit_frames_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jdir = dir.path().join("journal");
        fs::create_dir_all(&jdir).expect("mkdir");
        let mut old = Vec::new();
        for g in groups(20, 5) {
            for f in &g {
                encode_frame(f, &mut old);
            }
        }
        let seg = segment_path(&jdir, 0);
        fs::write(&seg, &old).expect("write");
        let err = Journal::open(&jdir, 1 << 20).err().expect("an old journal is refused");
        assert!(matches!(err, JournalError::Format { .. }), "{err}");
        assert!(err.to_string().contains("older cxnode"), "{err}");
        assert_eq!(fs::read(&seg).expect("read"), old, "not one byte cut");
    }

    #[test]
    fn the_format_is_marked_at_creation_and_a_journal_with_commit_frames_gets_its_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jdir = dir.path().join("journal");
        let (mut j, _) = Journal::open(&jdir, 1 << 20).expect("open");
        assert_eq!(fs::read_to_string(jdir.join(FORMAT_FILE)).expect("marker"), FORMAT);
        for g in groups(20, 5) {
            j.append(&g).expect("append");
        }
        j.sync().expect("sync");
        let end = j.end();
        drop(j);
        // As the first version with commit frames left it: no marker.
        fs::remove_file(jdir.join(FORMAT_FILE)).expect("rm");
        let (j, repair) = Journal::open(&jdir, 1 << 20).expect("reopen");
        assert_eq!((j.end(), repair.truncated_bytes), (end, 0));
        assert_eq!(all(&j.reader(), end).len(), 24);
        assert_eq!(fs::read_to_string(jdir.join(FORMAT_FILE)).expect("marker"), FORMAT);
        drop(j);
        fs::write(jdir.join(FORMAT_FILE), "cxj9\n").expect("write");
        let err = Journal::open(&jdir, 1 << 20)
            .err()
            .expect("an unknown format is refused");
        assert!(err.to_string().contains("unknown journal format"), "{err}");
    }
}
