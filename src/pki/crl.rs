//! How the revocation list in force stands, for operators: its number and `nextUpdate`, and
//! whether the last reload failed. A CRL past its `nextUpdate` is stale (a certificate revoked
//! since is still accepted), one close to it is about to be, and a reload that failed leaves the
//! previous list in force: each is an alarm in the sync status and an ERROR or WARN in the log,
//! said once when it begins, not on every tick.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::PkiError;

/// A CRL whose `nextUpdate` is this close is warned about (CRLs are typically re-issued weekly).
pub const CRL_RENEWAL_WARNING_SECONDS: i64 = 24 * 3600;

/// The `nextUpdate` of the CRLs in a PEM file: the earliest one (unix seconds), None when no CRL
/// has one.
pub fn crl_next_update_of(path: &Path) -> Result<Option<i64>, PkiError> {
    let mut earliest: Option<i64> = None;
    for der in super::tls::load_crls(path)? {
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| PkiError::PemInvalid {
            path: path.to_path_buf(),
            what: "X509 CRL",
            reason: e.to_string(),
        })?;
        if let Some(next) = crl.next_update() {
            let t = next.timestamp();
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
    }
    Ok(earliest)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condition {
    Fine,
    RenewSoon,
    Stale,
}

#[derive(Debug, Default)]
struct State {
    next_update: Option<i64>,
    reload_error: Option<String>,
    said: Option<Condition>,
}

/// The revocation list in force at a node, and what is wrong with it.
#[derive(Debug)]
pub struct CrlStatus {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

impl CrlStatus {
    /// The status of the list at `path` (None: revocation is off), as loaded at start.
    pub fn new(path: Option<&Path>) -> Result<CrlStatus, PkiError> {
        let next_update = match path {
            Some(p) => crl_next_update_of(p)?,
            None => None,
        };
        Ok(CrlStatus {
            path: path.map(Path::to_path_buf),
            state: Mutex::new(State {
                next_update,
                ..State::default()
            }),
        })
    }

    /// A new list is in force.
    pub fn reloaded(&self, next_update: Option<i64>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.reload_error.take().is_some() {
            tracing::info!("revocation list alarm cleared: a good list is in force again");
        }
        s.next_update = next_update;
    }

    /// A reload failed: the previous list stays in force; an alarm until a good one loads.
    pub fn reload_failed(&self, error: String) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.reload_error = Some(error);
    }

    /// Says (once per change) when the list becomes due for renewal or stale at `now`.
    pub fn check(&self, now: i64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let condition = condition(s.next_update, now);
        if s.said == Some(condition) {
            return;
        }
        let path = self
            .path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match condition {
            Condition::Stale => {
                tracing::error!(crl = %path, next_update = %unix_text(s.next_update), "the revocation list is past its nextUpdate: certificates revoked since are still accepted; publish a new CRL (`cxnode certs crl`) and copy it to every node")
            }
            Condition::RenewSoon => {
                tracing::warn!(crl = %path, next_update = %unix_text(s.next_update), "the revocation list reaches its nextUpdate within a day; publish a new CRL (`cxnode certs crl`) and copy it to every node")
            }
            Condition::Fine => {}
        }
        s.said = Some(condition);
    }

    /// Whether a CRL is configured at all (without one, revocation is off; said at start).
    pub fn is_on(&self) -> bool {
        self.path.is_some()
    }

    /// What an operator must act on, one sentence each: a failed reload, a list stale or about
    /// to be.
    pub fn alarms(&self, now: i64) -> Vec<String> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        if let Some(e) = &s.reload_error {
            out.push(format!(
                "the revocation list {} could not be reloaded ({e}); the previous list stays in force",
                path.display()
            ));
        }
        match condition(s.next_update, now) {
            Condition::Stale => out.push(format!(
                "the revocation list {} is past its nextUpdate ({}): publish a new CRL",
                path.display(),
                unix_text(s.next_update)
            )),
            Condition::RenewSoon => out.push(format!(
                "the revocation list {} reaches its nextUpdate at {}: publish a new CRL",
                path.display(),
                unix_text(s.next_update)
            )),
            Condition::Fine => {}
        }
        out
    }

    /// The earliest `nextUpdate` of the list in force (unix seconds).
    pub fn next_update(&self) -> Option<i64> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).next_update
    }
}

fn condition(next_update: Option<i64>, now: i64) -> Condition {
    match next_update {
        Some(t) if t <= now => Condition::Stale,
        Some(t) if t - now <= CRL_RENEWAL_WARNING_SECONDS => Condition::RenewSoon,
        _ => Condition::Fine,
    }
}

fn unix_text(t: Option<i64>) -> String {
    use time::format_description::well_known::Rfc3339;
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "none".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_or_nearly_stale_list_and_a_failed_reload_are_alarms() {
        let status = CrlStatus {
            path: Some(PathBuf::from("certs/crl.pem")),
            state: Mutex::new(State {
                next_update: Some(1_000_000),
                ..State::default()
            }),
        };
        assert!(status.alarms(1_000_000 - 2 * CRL_RENEWAL_WARNING_SECONDS).is_empty());
        let soon = status.alarms(1_000_000 - 3600);
        assert!(
            soon.len() == 1 && soon[0].contains("reaches its nextUpdate"),
            "{soon:?}"
        );
        let stale = status.alarms(1_000_001);
        assert!(
            stale.len() == 1 && stale[0].contains("past its nextUpdate"),
            "{stale:?}"
        );
        status.reload_failed("certs/crl.pem holds no X509 CRL".to_string());
        let failed = status.alarms(0);
        assert!(
            failed.len() == 1 && failed[0].contains("could not be reloaded"),
            "{failed:?}"
        );
        status.reloaded(Some(5_000_000));
        assert!(status.alarms(1_000_001).is_empty(), "a good reload clears both");
        let off = CrlStatus::new(None).expect("no crl");
        assert!(!off.is_on() && off.alarms(0).is_empty());
    }
}
