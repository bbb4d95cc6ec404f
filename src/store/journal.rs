//! The journal: append-only segment files of checksummed frames (entries and checkpoints of every
//! origin, in local arrival order). It is the source of truth and the only durability point:
//! `sync` (fdatasync) returns before any ack. Invariants: a position is a global byte offset; the
//! segments are contiguous (each starts where the previous ends); only the final frame of the last
//! segment can be torn (a crash mid-write), and recovery truncates it; a bad frame anywhere else is
//! corruption and is reported with its exact position, never repaired silently.
//!
//! Frame layout (little-endian): `len: u32` (of the body), `crc32c: u32` (of the body), body =
//! `kind: u8` + payload. Only this file knows it.

use crate::log::{Checkpoint, Entry, Hash};
use crate::record::Region;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const FRAME_HEADER_BYTES: usize = 8;
/// Largest frame body accepted: a record is at most 64 KiB; a checkpoint carries a few certificates.
pub const FRAME_BYTES_MAX: usize = 1024 * 1024;
const KIND_ENTRY: u8 = 1;
const KIND_CHECKPOINT: u8 = 2;
const KIND_FORK_EVIDENCE: u8 = 3;
const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".cxj";
/// Reads are buffered by this much: catch-up and recovery are sequential scans.
const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// A global byte offset into the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    #[error("journal corrupt in {path} at byte {offset} (journal position {position}): {reason}; the store must not serve: restore this segment from a replica or backup, then run `cxnode verify`")]
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

/// What recovery found at the tail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TailRepair {
    /// Bytes cut from the end of the last segment (a torn final frame), if any.
    pub truncated_bytes: u64,
    pub truncated_at: Option<JournalPos>,
}

pub struct Journal {
    dir: PathBuf,
    segment_bytes_max: u64,
    /// Base positions of the segments, ascending.
    segments: Vec<u64>,
    active: File,
    end: u64,
    scratch: Vec<u8>,
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{base:020}{SEGMENT_SUFFIX}"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut bases = Vec::new();
    for item in fs::read_dir(dir).map_err(io_err(dir))? {
        let item = item.map_err(io_err(dir))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
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

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, checks that the segments are contiguous and
    /// truncates a torn final frame. Damage anywhere else is an error naming the position.
    pub fn open(dir: &Path, segment_bytes_max: u64) -> Result<(Journal, TailRepair), JournalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            File::create(segment_path(dir, 0)).map_err(io_err(dir))?;
            sync_dir(dir)?;
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
        for pair in segments.windows(2) {
            let path = segment_path(dir, pair[0]);
            let len = fs::metadata(&path).map_err(io_err(&path))?.len();
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
        let (valid_len, file_len) = scan_tail(&path)?;
        let mut repair = TailRepair::default();
        let active = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if valid_len < file_len {
            active.set_len(valid_len).map_err(io_err(&path))?;
            active.sync_all().map_err(io_err(&path))?;
            repair = TailRepair {
                truncated_bytes: file_len - valid_len,
                truncated_at: Some(JournalPos(last + valid_len)),
            };
        }
        let journal = Journal {
            dir: dir.to_path_buf(),
            segment_bytes_max,
            segments,
            active,
            end: last + valid_len,
            scratch: Vec::new(),
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

    /// Writes `frames` (not yet durable: call `sync`). Returns each frame's position.
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
        let path = segment_path(&self.dir, *self.segments.last().expect("at least one segment exists"));
        self.active.write_all(&self.scratch).map_err(io_err(&path))?;
        self.end += self.scratch.len() as u64;
        Ok(positions)
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        let path = segment_path(&self.dir, *self.segments.last().expect("at least one segment exists"));
        self.active.sync_data().map_err(io_err(&path))
    }

    fn roll(&mut self) -> Result<(), JournalError> {
        self.sync()?;
        let path = segment_path(&self.dir, self.end);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.active = file;
        self.segments.push(self.end);
        Ok(())
    }

    pub fn reader(&self) -> JournalReader {
        JournalReader { dir: self.dir.clone() }
    }
}

/// Scans the last segment and returns (length of the durable prefix, file length). Every write
/// group ends with a checkpoint frame, so the durable prefix ends at the last checkpoint: frames
/// after it belong to a group whose fsync never completed (never acknowledged) and are dropped,
/// which makes a group all-or-nothing. A frame that runs past the end of the file, or a bad frame
/// followed only by zeros, is a torn write; a bad frame followed by other bytes is corruption.
fn scan_tail(path: &Path) -> Result<(u64, u64), JournalError> {
    let file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut offset = 0u64;
    let mut group_end = 0u64;
    let mut body = Vec::new();
    let corrupt = |offset: u64, reason: String| JournalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        position: offset,
        reason,
    };
    loop {
        match read_frame_body(&mut reader, &mut body).map_err(io_err(path))? {
            ReadOutcome::End | ReadOutcome::Torn => return Ok((group_end, file_len)),
            ReadOutcome::BadChecksum { frame_len } => {
                if rest_is_zero(path, offset + frame_len)? {
                    return Ok((group_end, file_len));
                }
                return Err(corrupt(
                    offset,
                    "frame checksum mismatch before the end of the journal".to_string(),
                ));
            }
            ReadOutcome::BadLength { len } => {
                if rest_is_zero(path, offset)? {
                    return Ok((group_end, file_len));
                }
                return Err(corrupt(
                    offset,
                    format!("frame length {len} is outside 1..={FRAME_BYTES_MAX}"),
                ));
            }
            ReadOutcome::Frame { len } => {
                let frame = decode_body(&body).map_err(|reason| corrupt(offset, reason))?;
                offset += len;
                if matches!(frame, Frame::Checkpoint(_) | Frame::ForkEvidence(_)) {
                    group_end = offset;
                }
            }
        }
    }
}

/// True if every byte of `path` from `from` on is zero (or there is none).
fn rest_is_zero(path: &Path, from: u64) -> Result<bool, JournalError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    file.seek(SeekFrom::Start(from)).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = read_up_to(&mut reader, &mut chunk).map_err(io_err(path))?;
        if chunk[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        if n < chunk.len() {
            return Ok(true);
        }
    }
}

enum ReadOutcome {
    End,
    Torn,
    BadLength { len: usize },
    BadChecksum { frame_len: u64 },
    Frame { len: u64 },
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
        return Ok(ReadOutcome::BadChecksum {
            frame_len: (FRAME_HEADER_BYTES + len) as u64,
        });
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

/// Reads frames by position; each read checks the frame's checksum again.
#[derive(Clone)]
pub struct JournalReader {
    dir: PathBuf,
}

impl JournalReader {
    pub fn new(dir: &Path) -> JournalReader {
        JournalReader { dir: dir.to_path_buf() }
    }

    /// Calls `visit(position, end, frame)` for every frame from `from` up to `to` (exclusive), in
    /// order; `end` is where the next frame starts. `visit` returns false to stop early. Any bad
    /// frame in that range is corruption.
    pub fn scan<E: From<JournalError>>(
        &self,
        from: JournalPos,
        to: JournalPos,
        mut visit: impl FnMut(JournalPos, JournalPos, Frame) -> Result<bool, E>,
    ) -> Result<(), E> {
        let segments = list_segments(&self.dir)?;
        let mut body = Vec::new();
        for (i, base) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            let next = segments.get(i + 1).copied().unwrap_or(u64::MAX);
            if next <= from.0 || *base >= to.0 {
                continue;
            }
            let path = segment_path(&self.dir, *base);
            let mut file = File::open(&path).map_err(io_err(&path))?;
            let mut offset = from.0.saturating_sub(*base);
            file.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
            let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
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
                    ReadOutcome::BadChecksum { .. } => {
                        return Err(corrupt("frame checksum mismatch".to_string()).into())
                    }
                    ReadOutcome::Frame { len } => {
                        let frame = decode_body(&body).map_err(corrupt)?;
                        if !visit(JournalPos(position), JournalPos(position + len), frame)? {
                            return Ok(());
                        }
                        offset += len;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the frame at `pos`.
    pub fn read_at(&self, pos: JournalPos) -> Result<Frame, JournalError> {
        let segments = list_segments(&self.dir)?;
        let base = segments.iter().rev().find(|b| **b <= pos.0).copied().unwrap_or(0);
        let path = segment_path(&self.dir, base);
        let mut file = File::open(&path).map_err(io_err(&path))?;
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
            op_bytes: c.vec()?,
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
        assert!(
            list_segments(dir.path()).expect("list").len() > 1,
            "small segments roll"
        );
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
        let pos = j.append(&groups(3, 3).concat()).expect("append");
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
        // The second group's entries reach the disk, its closing checkpoint does not.
        let second = j.append(&groups[1][..3]).expect("append");
        j.sync().expect("sync");
        drop(j);
        let (j, repair) = Journal::open(dir.path(), 1 << 20).expect("recovers");
        assert_eq!(repair.truncated_at, Some(second[0]));
        assert_eq!(all(&j.reader(), j.end()), groups[0]);
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
        let segs = list_segments(dir.path()).expect("list");
        assert!(segs.len() >= 3);
        fs::remove_file(segment_path(dir.path(), segs[1])).expect("remove");
        assert!(matches!(
            Journal::open(dir.path(), 500),
            Err(JournalError::Corrupt { .. })
        ));
    }
}
