//! Whether this node can do its job, part by part. A node is *ready* once its store is recovered,
//! its TLS material loaded, and while its writer, merged-view indexer and sync driver are alive.
//! A part that dies makes the node unwell: the cause is said once as an ERROR, gRPC health and
//! `/readyz` report it, and the node stops and exits non-zero (the parts that die here do not
//! come back in-process: an fsync that failed leaves the page cache in an unknown state, and only
//! a restart, which re-reads the journal, is safe). No tonic, sled or tokio here.

use std::sync::Mutex;

/// The parts a node needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The journal recovered and the indexes opened.
    Store,
    /// The node certificate, key, CA bundle (and CRL) loaded.
    Tls,
    /// The thread that appends to the journal and fsyncs it.
    Writer,
    /// The thread that keeps the merged view behind the journal.
    Indexer,
    /// The tasks that replicate every peer's log.
    Sync,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Store,
        Component::Tls,
        Component::Writer,
        Component::Indexer,
        Component::Sync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Store => "store",
            Component::Tls => "tls",
            Component::Writer => "writer",
            Component::Indexer => "indexer",
            Component::Sync => "sync",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Not yet up (start-up).
    Starting,
    Up,
    Down(String),
}

/// The health of every part; shared by the node's tasks, the admin port and gRPC health.
#[derive(Debug)]
pub struct Health {
    parts: Mutex<[State; 5]>,
    /// The part that died first, and why (what stopped the node; others may follow from it).
    first: Mutex<Option<(Component, String)>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            parts: Mutex::new(std::array::from_fn(|_| State::Starting)),
            first: Mutex::new(None),
        }
    }
}

fn slot(c: Component) -> usize {
    Component::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

impl Health {
    /// `c` is up (a part that went down stays down: it does not recover in-process).
    pub fn up(&self, c: Component) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        if parts[slot(c)] == State::Starting {
            parts[slot(c)] = State::Up;
        }
    }

    /// `c` has died because of `reason`. Returns true the first time (the caller acts on it once).
    pub fn down(&self, c: Component, reason: &str) -> bool {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(parts[slot(c)], State::Down(_)) {
            return false;
        }
        parts[slot(c)] = State::Down(reason.to_string());
        self.first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| (c, reason.to_string()));
        tracing::error!(component = c.name(), reason, "node unwell: a part it needs has stopped");
        true
    }

    /// Ok when every part is up; otherwise the parts that are not, with why, one per line.
    pub fn ready(&self) -> Result<(), String> {
        let not: Vec<String> = self
            .report()
            .into_iter()
            .filter_map(|(c, up, reason)| (!up).then(|| format!("{}: {}", c.name(), reason)))
            .collect();
        if not.is_empty() {
            Ok(())
        } else {
            Err(not.join("\n"))
        }
    }

    /// The first part that died, with its reason (None while nothing has died).
    pub fn failure(&self) -> Option<(Component, String)> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every part: (part, up, why not).
    pub fn report(&self) -> Vec<(Component, bool, String)> {
        let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        Component::ALL
            .iter()
            .zip(parts.iter())
            .map(|(c, s)| match s {
                State::Up => (*c, true, String::new()),
                State::Starting => (*c, false, "starting".to_string()),
                State::Down(r) => (*c, false, r.clone()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_is_up() {
        let h = Health::default();
        let e = h.ready().unwrap_err();
        assert!(e.contains("store: starting") && e.contains("sync: starting"), "{e}");
        for c in Component::ALL {
            h.up(c);
        }
        assert_eq!(h.ready(), Ok(()));
        assert_eq!(h.failure(), None);
    }

    #[test]
    fn a_part_that_died_stays_down_and_is_reported_once() {
        let h = Health::default();
        for c in Component::ALL {
            h.up(c);
        }
        assert!(h.down(Component::Writer, "fsync failed: Input/output error"));
        assert!(!h.down(Component::Writer, "again"), "the second report is not news");
        h.up(Component::Writer);
        let e = h.ready().unwrap_err();
        assert_eq!(e, "writer: fsync failed: Input/output error");
        assert_eq!(
            h.failure(),
            Some((Component::Writer, "fsync failed: Input/output error".to_string()))
        );
        // A part that dies after is reported, but the first one is what stopped the node.
        assert!(h.down(Component::Store, "later"));
        assert_eq!(h.failure().map(|f| f.0), Some(Component::Writer));
    }
}
