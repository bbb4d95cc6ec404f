//! Sync health as this node sees it: for the latest entries of each origin that arrived here by
//! replication, the delay from the origin's append to their arrival. Kept in memory since the
//! node started (the journal does not record arrival times), bounded per origin.

use super::report::SyncDelay;
use crate::record::Region;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use time::Date;

/// Arrivals remembered per origin at most (the oldest are forgotten first).
pub const ARRIVALS_KEPT_PER_ORIGIN: usize = 8192;

#[derive(Debug, Default)]
pub struct Arrivals {
    since_unix_seconds: i64,
    by_origin: Mutex<BTreeMap<Region, VecDeque<(i64, i64)>>>,
}

impl Arrivals {
    pub fn new(since_unix_seconds: i64) -> Arrivals {
        Arrivals {
            since_unix_seconds,
            by_origin: Mutex::default(),
        }
    }

    pub fn since_unix_seconds(&self) -> i64 {
        self.since_unix_seconds
    }

    /// Entries of `origin` appended at `appended_at_micros` arrived at `now_micros`.
    pub fn record(&self, origin: Region, appended_at_micros: impl IntoIterator<Item = i64>, now_micros: i64) {
        let mut all = self.by_origin.lock().unwrap_or_else(|p| p.into_inner());
        let q = all.entry(origin).or_default();
        for at in appended_at_micros {
            if q.len() == ARRIVALS_KEPT_PER_ORIGIN {
                q.pop_front();
            }
            q.push_back((at, now_micros));
        }
    }

    /// Per origin, the arrivals on days (China Standard Time) in `[from, to]`: count, median and
    /// 95th percentile delay in milliseconds (nearest rank).
    pub fn delays(&self, from: Date, to: Date) -> Vec<SyncDelay> {
        let all = self.by_origin.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (origin, q) in all.iter() {
            let mut ms: Vec<u64> = q
                .iter()
                .filter(|(_, arrived)| super::facts::day_of(*arrived).is_some_and(|d| (from..=to).contains(&d)))
                .map(|(at, arrived)| (arrived.saturating_sub(*at).max(0) / 1000) as u64)
                .collect();
            if ms.is_empty() {
                continue;
            }
            ms.sort_unstable();
            let rank = |p: usize| ms[(ms.len() * p).div_ceil(100).saturating_sub(1).min(ms.len() - 1)];
            out.push(SyncDelay {
                origin: origin.code(),
                arrivals: ms.len() as u64,
                p50_ms: rank(50),
                p95_ms: rank(95),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_per_origin_bounded_and_in_the_period() {
        let a = Arrivals::new(0);
        let zj = Region::parse("330000").expect("region");
        let day = time::macros::datetime!(2025-06-02 04:00 UTC).unix_timestamp() * 1_000_000;
        // 100 arrivals with delays 1..=100 ms.
        for i in 1..=100i64 {
            a.record(zj, [day], day + i * 1000);
        }
        let d = a.delays(time::macros::date!(2025 - 06 - 02), time::macros::date!(2025 - 06 - 02));
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].arrivals, d[0].p50_ms, d[0].p95_ms), (100, 50, 95));
        assert!(a
            .delays(time::macros::date!(2025 - 06 - 03), time::macros::date!(2025 - 06 - 30))
            .is_empty());
        a.record(zj, std::iter::repeat_n(day, ARRIVALS_KEPT_PER_ORIGIN + 5), day);
        let d = a.delays(time::macros::date!(2025 - 06 - 01), time::macros::date!(2025 - 06 - 30));
        assert_eq!(d[0].arrivals, ARRIVALS_KEPT_PER_ORIGIN as u64);
    }
}
