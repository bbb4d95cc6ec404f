//! The chunk heap: the payloads of the merged view's bucket chunks, in append-only segment files
//! of our own, with sled holding only a 16-byte pointer per chunk.
//!
//! Why: sled 0.34 keeps every page it reads in memory until its LRU has seen 64 accesses in the
//! page's shard (256 shards), and it counts a page that lives in a blob file as a few bytes. A
//! view of packed chunks has few, large pages (a leaf holds up to 16 chunks of up to ~100 KB), so
//! a pass over the record map kept all of it resident: +770 MB during a 10M-record evaluation,
//! and most of a 10M node's 3.5 GB. Measured with sled alone, 300 MB of values read once under a
//! 32 MiB cache: 64 KiB values left 325 MB resident, 512 B values 106 MB.
//! Here sled's values are pointers (its leaves ~1 KB, so its cache bound holds) and the payloads
//! are read with `pread`, through the kernel's page cache, which is not the node's memory.
//!
//! Invariants:
//! - a segment is only ever appended to while it is the head; every other segment is immutable;
//! - a payload is durable (`sync`) before any sled batch that points at it is applied, so a
//!   durable view never points at bytes a crash lost;
//! - a segment is deleted only after a sled flush made durable a state that points into it no
//!   more (`ChunkHeap::retire`), so the durable view never points at a deleted segment;
//! - each segment's live bytes are the sum of the lengths the view's pointers give for it:
//!   counted at open from the pointers, then kept by `append` and `free`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A segment is closed (and a new head begun) once it holds this many bytes.
pub const HEAP_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// A collection copies at most about this many live bytes (at least one segment's).
pub const HEAP_COLLECT_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// The heap is collected once its garbage passes both its live bytes and this.
pub const HEAP_GARBAGE_MIN_BYTES: u64 = 2 * HEAP_SEGMENT_BYTES;
/// Appended payloads are gathered up to this many bytes before one write: a level-0 flush
/// appends ~4,000 small chunks, and a write call each was most of the indexer's system time.
pub const HEAP_WRITE_BUFFER_BYTES: usize = 1 << 20;
/// Bytes of an encoded pointer (segment, offset, length, CRC-32C of the payload).
pub const POINTER_BYTES: usize = 16;
const SUFFIX: &str = ".seg";

/// Where a payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pointer {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
    pub crc: u32,
}

impl Pointer {
    pub fn encode(&self) -> [u8; POINTER_BYTES] {
        let mut out = [0u8; POINTER_BYTES];
        out[0..4].copy_from_slice(&self.segment.to_be_bytes());
        out[4..8].copy_from_slice(&self.offset.to_be_bytes());
        out[8..12].copy_from_slice(&self.len.to_be_bytes());
        out[12..16].copy_from_slice(&self.crc.to_be_bytes());
        out
    }

    pub fn decode(v: &[u8]) -> Option<Pointer> {
        let v: &[u8; POINTER_BYTES] = v.try_into().ok()?;
        let word = |i: usize| u32::from_be_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
        Some(Pointer {
            segment: word(0),
            offset: word(4),
            len: word(8),
            crc: word(12),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeapError {
    #[error("chunk heap {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("chunk heap: segment {segment} at {offset} ({len} bytes): {reason}")]
    Damaged {
        segment: u32,
        offset: u32,
        len: u32,
        reason: String,
    },
}

struct Segment {
    file: Arc<File>,
    /// Bytes appended to it (for the head, the last `Inner::pending` of them not written yet).
    len: u64,
    /// Bytes the view points at.
    live: u64,
}

struct Inner {
    head: u32,
    /// Whether the head holds bytes not yet synced.
    dirty: bool,
    segments: BTreeMap<u32, Segment>,
    /// Payloads appended to the head and not written to its file yet (at most
    /// `HEAP_WRITE_BUFFER_BYTES` plus one payload; written before any sync).
    pending: Vec<u8>,
}

pub struct ChunkHeap {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// `HEAP_SEGMENT_BYTES` and `HEAP_GARBAGE_MIN_BYTES` (smaller in tests).
    segment_bytes: u64,
    garbage_min_bytes: u64,
}

/// What `ChunkHeap::usage` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapUsage {
    pub segments: usize,
    pub live_bytes: u64,
    pub file_bytes: u64,
}

impl ChunkHeap {
    /// Opens (creating) the heap in `dir`. Every existing segment is kept until `finish_open`,
    /// which deletes those no pointer counted by `adopt` refers to; appends go to a new head.
    pub fn open(dir: &Path) -> Result<ChunkHeap, HeapError> {
        Self::open_with(dir, HEAP_SEGMENT_BYTES, HEAP_GARBAGE_MIN_BYTES)
    }

    /// `open` with other segment and garbage bounds (tests, to collect within a few MB).
    pub(crate) fn open_with(dir: &Path, segment_bytes: u64, garbage_min_bytes: u64) -> Result<ChunkHeap, HeapError> {
        let io = |source| HeapError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|s| s.strip_suffix(SUFFIX))
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let file = File::open(&path).map_err(|source| HeapError::Io { path, source })?;
            let len = file.metadata().map_err(io)?.len();
            segments.insert(
                n,
                Segment {
                    file: Arc::new(file),
                    len,
                    live: 0,
                },
            );
        }
        let head = segments.keys().next_back().map_or(0, |n| n + 1);
        let heap = ChunkHeap {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                head,
                dirty: false,
                segments,
                pending: Vec::new(),
            }),
            segment_bytes,
            garbage_min_bytes,
        };
        heap.create_head(&mut heap.inner.lock().expect("heap lock"), head)?;
        Ok(heap)
    }

    fn path_of(&self, segment: u32) -> PathBuf {
        self.dir.join(format!("{segment:08}{SUFFIX}"))
    }

    fn io(&self, segment: u32) -> impl Fn(std::io::Error) -> HeapError + '_ {
        move |source| HeapError::Io {
            path: self.path_of(segment),
            source,
        }
    }

    fn create_head(&self, inner: &mut Inner, n: u32) -> Result<(), HeapError> {
        let path = self.path_of(n);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(self.io(n))?;
        // The new name is durable before anything points into the file.
        super::fs::JournalFs::sync_dir(&super::fs::OsFs, &self.dir).map_err(|source| HeapError::Io {
            path: self.dir.clone(),
            source,
        })?;
        inner.head = n;
        inner.segments.insert(
            n,
            Segment {
                file: Arc::new(file),
                len: 0,
                live: 0,
            },
        );
        Ok(())
    }

    /// Counts a pointer found in the view at open. A pointer into a missing segment, or past a
    /// segment's end, is damage.
    pub fn adopt(&self, p: &Pointer) -> Result<(), HeapError> {
        let mut inner = self.inner.lock().expect("heap lock");
        match inner.segments.get_mut(&p.segment) {
            Some(s) if u64::from(p.offset) + u64::from(p.len) <= s.len => {
                s.live += u64::from(p.len);
                Ok(())
            }
            Some(s) => Err(self.damaged(p, format!("past the segment's end ({} bytes)", s.len))),
            None => Err(self.damaged(p, "the segment is missing".into())),
        }
    }

    fn damaged(&self, p: &Pointer, reason: String) -> HeapError {
        HeapError::Damaged {
            segment: p.segment,
            offset: p.offset,
            len: p.len,
            reason,
        }
    }

    /// Deletes the segments no adopted pointer refers to (left by a crash before the view
    /// pointed at them, or after it had stopped).
    pub fn finish_open(&self) -> Result<u64, HeapError> {
        let mut inner = self.inner.lock().expect("heap lock");
        let head = inner.head;
        let unused: Vec<u32> = inner
            .segments
            .iter()
            .filter(|(n, s)| **n != head && s.live == 0)
            .map(|(n, _)| *n)
            .collect();
        for n in &unused {
            inner.segments.remove(n);
            std::fs::remove_file(self.path_of(*n)).map_err(self.io(*n))?;
        }
        Ok(unused.len() as u64)
    }

    /// Appends a payload to the head (not yet durable: see `sync`).
    pub fn append(&self, payload: &[u8]) -> Result<Pointer, HeapError> {
        let mut inner = self.inner.lock().expect("heap lock");
        let len = u32::try_from(payload.len()).expect("a chunk is far below 4 GiB");
        let head_len = inner.segments[&inner.head].len;
        if head_len > 0 && head_len + u64::from(len) > self.segment_bytes {
            // The closed segment is written and synced now, so `sync` need only ever sync the head.
            let old = inner.head;
            self.write_pending(&mut inner)?;
            inner.segments[&old].file.sync_data().map_err(self.io(old))?;
            self.create_head(&mut inner, old + 1)?;
        }
        let head = inner.head;
        let seg = inner.segments.get_mut(&head).expect("the head exists");
        let p = Pointer {
            segment: head,
            offset: u32::try_from(seg.len).expect("segments stay below 4 GiB"),
            len,
            crc: crc32c::crc32c(payload),
        };
        seg.len += u64::from(len);
        seg.live += u64::from(len);
        inner.pending.extend_from_slice(payload);
        inner.dirty = true;
        if inner.pending.len() >= HEAP_WRITE_BUFFER_BYTES {
            self.write_pending(&mut inner)?;
        }
        Ok(p)
    }

    /// Writes the gathered payloads to the head's file (in one call).
    fn write_pending(&self, inner: &mut Inner) -> Result<(), HeapError> {
        if inner.pending.is_empty() {
            return Ok(());
        }
        let head = inner.head;
        let seg = &inner.segments[&head];
        let at = seg.len - inner.pending.len() as u64;
        seg.file.write_all_at(&inner.pending, at).map_err(self.io(head))?;
        inner.pending.clear();
        Ok(())
    }

    /// Makes every appended payload durable.
    pub fn sync(&self) -> Result<(), HeapError> {
        let (file, head) = {
            let mut inner = self.inner.lock().expect("heap lock");
            if !inner.dirty {
                return Ok(());
            }
            self.write_pending(&mut inner)?;
            inner.dirty = false;
            (inner.segments[&inner.head].file.clone(), inner.head)
        };
        file.sync_data().map_err(self.io(head))
    }

    /// Reads a payload, checking its length and CRC.
    pub fn read(&self, p: &Pointer) -> Result<Vec<u8>, HeapError> {
        let mut buf = vec![0u8; p.len as usize];
        let file = {
            let inner = self.inner.lock().expect("heap lock");
            match inner.segments.get(&p.segment) {
                // Still gathered for the head's next write: read from memory.
                Some(s) if p.segment == inner.head && u64::from(p.offset) >= s.len - inner.pending.len() as u64 => {
                    let from = (u64::from(p.offset) - (s.len - inner.pending.len() as u64)) as usize;
                    match inner.pending.get(from..from + buf.len()) {
                        Some(bytes) => buf.copy_from_slice(bytes),
                        None => return Err(self.damaged(p, "the segment ends before the payload".into())),
                    }
                    None
                }
                Some(s) => Some(s.file.clone()),
                None => return Err(self.damaged(p, "the segment is missing".into())),
            }
        };
        if let Some(file) = file {
            Self::read_at(&file, &mut buf, p).map_err(|e| self.read_error(p, e))?;
        }
        if crc32c::crc32c(&buf) != p.crc {
            return Err(self.damaged(p, "CRC mismatch".into()));
        }
        Ok(buf)
    }

    fn read_at(file: &File, buf: &mut [u8], p: &Pointer) -> std::io::Result<()> {
        file.read_exact_at(buf, u64::from(p.offset))
    }

    fn read_error(&self, p: &Pointer, e: std::io::Error) -> HeapError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            self.damaged(p, "the segment ends before the payload".into())
        } else {
            self.io(p.segment)(e)
        }
    }

    /// The view no longer points at `p` (once the batch that says so is applied).
    pub fn free(&self, p: &Pointer) {
        let mut inner = self.inner.lock().expect("heap lock");
        if let Some(s) = inner.segments.get_mut(&p.segment) {
            s.live = s.live.saturating_sub(u64::from(p.len));
        }
    }

    pub fn usage(&self) -> HeapUsage {
        let inner = self.inner.lock().expect("heap lock");
        HeapUsage {
            segments: inner.segments.len(),
            live_bytes: inner.segments.values().map(|s| s.live).sum(),
            file_bytes: inner.segments.values().map(|s| s.len).sum(),
        }
    }

    /// The segments worth collecting now, emptiest first: none unless garbage passes both the
    /// live bytes and `HEAP_GARBAGE_MIN_BYTES`; then closed segments at most half live, up to
    /// `budget` live bytes (at least one).
    pub fn victims(&self, budget: u64) -> Vec<u32> {
        let inner = self.inner.lock().expect("heap lock");
        let live: u64 = inner.segments.values().map(|s| s.live).sum();
        let garbage = inner.segments.values().map(|s| s.len).sum::<u64>() - live;
        if garbage <= live || garbage <= self.garbage_min_bytes {
            return Vec::new();
        }
        let mut candidates: Vec<(u64, u64, u32)> = inner
            .segments
            .iter()
            .filter(|(n, s)| **n != inner.head && s.live * 2 <= s.len)
            .map(|(n, s)| (s.live * 1000 / s.len.max(1), s.live, *n))
            .collect();
        candidates.sort_unstable();
        let mut out = Vec::new();
        let mut copied = 0u64;
        for (_, live, n) in candidates {
            if !out.is_empty() && copied + live > budget {
                break;
            }
            copied += live;
            out.push(n);
        }
        out
    }

    /// Deletes segments the durable view no longer points into (the caller flushed the batch
    /// that moved their payloads). A segment still counted live is kept.
    pub fn retire(&self, segments: &[u32]) -> Result<(), HeapError> {
        let mut inner = self.inner.lock().expect("heap lock");
        for n in segments {
            if *n == inner.head || inner.segments.get(n).is_none_or(|s| s.live > 0) {
                continue;
            }
            inner.segments.remove(n);
            std::fs::remove_file(self.path_of(*n)).map_err(self.io(*n))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_survive_a_reopen_and_unreferenced_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let heap = ChunkHeap::open(dir.path()).expect("open");
        let a = heap.append(b"first payload").expect("append");
        let b = heap.append(b"second").expect("append");
        heap.sync().expect("sync");
        assert_eq!(heap.read(&a).expect("read"), b"first payload");
        assert_eq!(heap.read(&b).expect("read"), b"second");
        assert_eq!(Pointer::decode(&a.encode()), Some(a));
        drop(heap);
        // Reopened, only `b` is pointed at: its segment stays, and an empty head is begun.
        let heap = ChunkHeap::open(dir.path()).expect("reopen");
        heap.adopt(&b).expect("adopt");
        assert_eq!(heap.finish_open().expect("finish"), 0, "b's segment is kept");
        assert_eq!(heap.read(&b).expect("read"), b"second");
        let c = heap.append(b"third").expect("append");
        assert_ne!(c.segment, b.segment, "appends go to a new head");
        // Read back before it is written (it is gathered for one write), then made durable,
        // as the view does before it points at it.
        assert_eq!(heap.read(&c).expect("read"), b"third");
        heap.sync().expect("sync");
        drop(heap);
        // Reopened with nothing pointed at in b's segment: it goes.
        let heap = ChunkHeap::open(dir.path()).expect("reopen");
        heap.adopt(&c).expect("adopt");
        assert_eq!(heap.finish_open().expect("finish"), 1);
        assert!(matches!(heap.read(&b), Err(HeapError::Damaged { .. })));
        assert_eq!(heap.read(&c).expect("read"), b"third");
    }

    #[test]
    fn payloads_read_back_while_gathered_after_a_gathered_write_and_after_a_segment_switch() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Segments of 3 MiB: the appends below pass the write buffer's bound, then the segment's.
        let heap = ChunkHeap::open_with(dir.path(), 3 << 20, 8 << 20).expect("open");
        let payload = |i: u32| (0..100_000u32).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>();
        let mut pointers = Vec::new();
        for i in 0..40u32 {
            pointers.push(heap.append(&payload(i)).expect("append"));
            // Every payload so far reads back, whether still gathered or written.
            for (j, p) in pointers.iter().enumerate() {
                assert_eq!(heap.read(p).expect("read"), payload(j as u32), "payload {j} after {i}");
            }
        }
        assert!(
            pointers.iter().any(|p| p.segment != pointers[0].segment),
            "the head switched"
        );
        heap.sync().expect("sync");
        drop(heap);
        let heap = ChunkHeap::open_with(dir.path(), 3 << 20, 8 << 20).expect("reopen");
        for (j, p) in pointers.iter().enumerate() {
            heap.adopt(p).expect("adopt");
            assert_eq!(heap.read(p).expect("read"), payload(j as u32));
        }
    }

    #[test]
    fn a_changed_byte_or_a_pointer_past_the_end_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let heap = ChunkHeap::open(dir.path()).expect("open");
        let a = heap.append(b"payload").expect("append");
        heap.sync().expect("sync");
        let wrong = Pointer { crc: a.crc ^ 1, ..a };
        assert!(matches!(heap.read(&wrong), Err(HeapError::Damaged { .. })));
        let past = Pointer { len: a.len + 100, ..a };
        assert!(matches!(heap.read(&past), Err(HeapError::Damaged { .. })));
        drop(heap);
        let heap = ChunkHeap::open(dir.path()).expect("reopen");
        assert!(matches!(heap.adopt(&past), Err(HeapError::Damaged { .. })));
        let missing = Pointer { segment: 77, ..a };
        assert!(matches!(heap.adopt(&missing), Err(HeapError::Damaged { .. })));
    }

    #[test]
    fn victims_are_chosen_only_when_garbage_dominates_and_retire_deletes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let heap = ChunkHeap::open(dir.path()).expect("open");
        let big = vec![7u8; 4 * 1024 * 1024];
        let mut ptrs = Vec::new();
        // Four closed segments and a head.
        for _ in 0..(4 * HEAP_SEGMENT_BYTES / big.len() as u64 + 1) {
            ptrs.push(heap.append(&big).expect("append"));
        }
        assert!(
            heap.victims(HEAP_COLLECT_BYTES_MAX).is_empty(),
            "all live: nothing to collect"
        );
        let first = ptrs[0].segment;
        // Free all of the first segment and half of the others: garbage passes live.
        for (i, p) in ptrs.iter().enumerate() {
            if p.segment == first || (i % 2 == 0 && p.segment != first + 4) {
                heap.free(p);
            }
        }
        let victims = heap.victims(HEAP_COLLECT_BYTES_MAX);
        assert_eq!(victims.first(), Some(&first), "emptiest first: {victims:?}");
        assert!(!victims.contains(&(first + 4)), "never the head");
        heap.retire(&victims).expect("retire");
        assert!(
            !dir.path().join(format!("{first:08}{SUFFIX}")).exists(),
            "an empty victim is deleted"
        );
        // A victim with live payloads is kept until they are moved.
        for v in victims.iter().filter(|v| **v != first) {
            assert!(dir.path().join(format!("{v:08}{SUFFIX}")).exists());
        }
    }
}
