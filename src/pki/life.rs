//! Certificate life, for operators: this node's certificate and those of the peers and callers
//! connected now, warned about when they expire within the warning window
//! (`tls.expiry_warning_days`), and a reload of the TLS material that failed. Each is an alarm in
//! the sync status (and on the status page), and a WARN or ERROR in the log said once per
//! certificate and condition, not on every tick. The CRL's own `nextUpdate` is `CrlStatus`'s.

use std::collections::HashMap;
use std::sync::Mutex;

/// Certificates are warned about this long before they expire, unless configured otherwise.
pub const EXPIRY_WARNING_DAYS_DEFAULT: u32 = 30;

/// A certificate the node depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub identity: String,
    /// "node" (this node's own) or "peer" (another node connected now).
    pub role: &'static str,
    pub not_after: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condition {
    Fine,
    ExpiresSoon,
    Expired,
}

#[derive(Debug, Default)]
struct State {
    reload_error: Option<String>,
    /// (identity, role) -> (not_after, condition) last said.
    said: HashMap<(String, &'static str), (i64, Condition)>,
}

/// The warning window and what has been said.
#[derive(Debug)]
pub struct CertLife {
    warning_seconds: i64,
    state: Mutex<State>,
}

fn condition(not_after: i64, now: i64, warning: i64) -> Condition {
    if not_after <= now {
        Condition::Expired
    } else if not_after - now <= warning {
        Condition::ExpiresSoon
    } else {
        Condition::Fine
    }
}

fn days(seconds: i64) -> f64 {
    (seconds as f64 / 86_400.0 * 10.0).round() / 10.0
}

impl CertLife {
    pub fn new(warning_days: u32) -> CertLife {
        CertLife {
            warning_seconds: i64::from(warning_days) * 86_400,
            state: Mutex::default(),
        }
    }

    /// The warning window in seconds.
    pub fn warning_seconds(&self) -> i64 {
        self.warning_seconds
    }

    /// A reload of the TLS material failed: the previous material stays in force.
    pub fn reload_failed(&self, error: String) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).reload_error = Some(error);
    }

    /// New material is in force.
    pub fn reloaded(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.reload_error.take().is_some() {
            tracing::info!("tls material alarm cleared: good material is in force again");
        }
    }

    /// Logs (once per certificate and condition) the certificates that expire within the window
    /// or have expired.
    pub fn check(&self, held: &[Held], now: i64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for h in held {
            let c = condition(h.not_after, now, self.warning_seconds);
            let key = (h.identity.clone(), h.role);
            if s.said.get(&key) == Some(&(h.not_after, c)) {
                continue;
            }
            match c {
                Condition::Expired => tracing::error!(
                    identity = %h.identity,
                    role = h.role,
                    not_after = h.not_after,
                    "certificate has expired: connections with it are refused; renew it (`cxnode certs renew`)"
                ),
                Condition::ExpiresSoon => tracing::warn!(
                    identity = %h.identity,
                    role = h.role,
                    not_after = h.not_after,
                    days_left = days(h.not_after - now),
                    "certificate expires within the warning window; renew it (`cxnode certs renew`) and replace the files: the node reloads them without a restart"
                ),
                Condition::Fine => {}
            }
            s.said.insert(key, (h.not_after, c));
        }
    }

    /// What an operator must act on now, one sentence each.
    pub fn alarms(&self, held: &[Held], now: i64) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        if let Some(e) = &s.reload_error {
            out.push(format!(
                "the tls material (CA bundle, node certificate, key or CRL) could not be reloaded ({e}); the previous material stays in force"
            ));
        }
        for h in held {
            match condition(h.not_after, now, self.warning_seconds) {
                Condition::Expired => out.push(format!(
                    "the {} certificate of {} has expired: renew it",
                    h.role, h.identity
                )),
                Condition::ExpiresSoon => out.push(format!(
                    "the {} certificate of {} expires in {} days: renew it",
                    h.role,
                    h.identity,
                    days(h.not_after - now)
                )),
                Condition::Fine => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_in_the_window_or_expired_are_alarms_and_a_failed_reload_until_a_good_one() {
        let life = CertLife::new(30);
        let now = 1_000_000_000;
        let held = vec![
            Held {
                identity: "cx://node/330000".into(),
                role: "node",
                not_after: now + 31 * 86_400,
            },
            Held {
                identity: "cx://node/320000".into(),
                role: "peer",
                not_after: now + 29 * 86_400,
            },
            Held {
                identity: "cx://node/310000".into(),
                role: "peer",
                not_after: now - 1,
            },
        ];
        let alarms = life.alarms(&held, now);
        assert_eq!(alarms.len(), 2, "{alarms:?}");
        assert!(alarms[0].contains("cx://node/320000 expires in 29 days"), "{alarms:?}");
        assert!(alarms[1].contains("cx://node/310000 has expired"), "{alarms:?}");
        assert!(
            life.alarms(&held[..1], now).is_empty(),
            "31 days left is outside the window"
        );
        assert_eq!(
            life.alarms(&held[..1], now + 86_400 + 1).len(),
            1,
            "a day later it is inside"
        );
        life.reload_failed("key does not match certificate".into());
        assert!(life.alarms(&[], now)[0].contains("could not be reloaded"));
        life.reloaded();
        assert!(life.alarms(&[], now).is_empty());
    }
}
