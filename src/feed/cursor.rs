//! Where a subscription stands, and how it travels: per origin the next seq to send, and how far
//! the calendar has been applied (publicity periods ended through a date, and within the next
//! date up to a record). Encoded as a small versioned byte string that departments keep as an
//! opaque token. Invariant: a decoded cursor is well-formed (each origin once, seqs >= 1); it
//! says nothing the department was not already sent.

use crate::record::{RecordId, Region};
use std::collections::BTreeMap;
use time::Date;

const VERSION: u8 = 1;
/// Origins a cursor may name: every province of GB/T 2260 fits.
pub const CURSOR_ORIGINS_MAX: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("not a cursor this node wrote ({0}); resume with a cursor from an event, or subscribe without one")]
    Malformed(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Origin -> next seq to send (an origin not named: from seq 1).
    pub next: BTreeMap<Region, u64>,
    /// Every publicity end date up to and including this one has been applied.
    pub expired_through: Date,
    /// Within the day after `expired_through`, records up to this one have been applied.
    pub expired_within: Option<(Region, RecordId)>,
}

impl Cursor {
    /// A fresh subscription: nothing sent yet, the calendar applied through yesterday (what
    /// ended before is told by each record's status when it is sent).
    pub fn start(today: Date) -> Cursor {
        Cursor {
            next: BTreeMap::new(),
            expired_through: today.previous_day().unwrap_or(today),
            expired_within: None,
        }
    }

    pub fn next_seq(&self, origin: Region) -> u64 {
        self.next.get(&origin).copied().unwrap_or(1)
    }

    /// Records that `origin` has been sent through `seq`.
    pub fn advance(&mut self, origin: Region, seq: u64) {
        let next = self.next.entry(origin).or_insert(1);
        debug_assert!(seq + 1 >= *next, "cursors only move forward");
        *next = (*next).max(seq + 1);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.expired_through.to_julian_day().to_be_bytes());
        match &self.expired_within {
            Some((origin, id)) => {
                out.push(1);
                out.extend_from_slice(&origin.code().to_be_bytes());
                out.extend_from_slice(&id.0);
            }
            None => out.push(0),
        }
        out.push(self.next.len() as u8);
        for (origin, next) in &self.next {
            out.extend_from_slice(&origin.code().to_be_bytes());
            out.extend_from_slice(&next.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Cursor, CursorError> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], CursorError> {
            let s = bytes.get(at..at + n).ok_or(CursorError::Malformed("too short"))?;
            at += n;
            Ok(s)
        };
        if take(1)?[0] != VERSION {
            return Err(CursorError::Malformed("unknown version"));
        }
        let day = i32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
        let expired_through = Date::from_julian_day(day).map_err(|_| CursorError::Malformed("bad date"))?;
        let expired_within = match take(1)?[0] {
            0 => None,
            1 => {
                let code = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
                let origin = Region::from_code(code).map_err(|_| CursorError::Malformed("bad region"))?;
                Some((origin, RecordId(take(16)?.try_into().expect("16 bytes"))))
            }
            _ => return Err(CursorError::Malformed("bad expiry mark")),
        };
        let n = usize::from(take(1)?[0]);
        if n > CURSOR_ORIGINS_MAX {
            return Err(CursorError::Malformed("too many origins"));
        }
        let mut next = BTreeMap::new();
        for _ in 0..n {
            let code = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
            let origin = Region::from_code(code).map_err(|_| CursorError::Malformed("bad region"))?;
            let seq = u64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
            if seq == 0 || next.insert(origin, seq).is_some() {
                return Err(CursorError::Malformed("bad origin position"));
            }
        }
        if at != bytes.len() {
            return Err(CursorError::Malformed("trailing bytes"));
        }
        Ok(Cursor {
            next,
            expired_through,
            expired_within,
        })
    }
}
