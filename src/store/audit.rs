//! The audit trail of access to credit data: one JSON line per Subscribe, Profile and Acknowledge
//! (who, when, from where, the filter or subject, how many records were returned), appended to
//! `data_dir/audit/audit.jsonl` and fdatasync'ed before the call is answered, so a row survives a
//! kill -9 of the node. Subjects are never written in clear: a row holds the masked form
//! (`3301**********123X`) and a keyed digest (HMAC-SHA-256 under `audit/audit.key`, made at first
//! use, readable by the node's user only), so operators can look rows up by subject without the
//! file itself listing the people it is about. Invariants: rows are only appended; a torn final
//! line (a crash mid-write) is cut at open, never mistaken for a row.

use ring::hmac;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const FILE: &str = "audit.jsonl";
const KEY_FILE: &str = "audit.key";
/// Longest line read back (a row is a few hundred bytes; a filter is bounded by
/// `feed::FILTER_TERMS_MAX` terms).
const ROW_BYTES_MAX: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("audit log {path}: line {line} is not an audit row ({reason}); the file was changed by something other than cxnode")]
    Corrupt { path: String, line: u64, reason: String },
}

/// One audited call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub at_unix_seconds: i64,
    /// The caller's identity URI.
    pub caller: String,
    pub remote: String,
    /// `Subscribe`, `Subscribe.end`, `Profile`, `Acknowledge`.
    pub call: String,
    /// Masked subjects (a profile's, or a filter's).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Keyed digests of the same subjects, for look-ups.
    #[serde(default)]
    pub subject_keys: Vec<String>,
    /// The filter as asked (categories, regions, public-only), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Records returned (for a subscription's end row: sent in all).
    pub records: u64,
    /// `ok`, or the refusal's status and message.
    pub outcome: String,
}

/// What to look for.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// `SubjectKey::index_bytes` of the subject.
    pub subject: Option<Vec<u8>>,
    pub caller: Option<String>,
    pub since_unix_seconds: Option<i64>,
}

pub struct AuditLog {
    path: PathBuf,
    key: hmac::Key,
    file: Mutex<File>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn load_key(dir: &Path) -> Result<hmac::Key, AuditError> {
    let path = dir.join(KEY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&path).map_err(io(&path))?;
            f.write_all(&key).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
            File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
            key.to_vec()
        }
        Err(e) => return Err(io(&path)(e)),
    };
    if bytes.len() != 32 {
        return Err(AuditError::Corrupt {
            path: path.display().to_string(),
            line: 0,
            reason: format!("the key must be 32 bytes, it has {}", bytes.len()),
        });
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

impl AuditLog {
    /// Opens (or creates) the audit log in `dir`, cutting a torn final line.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = load_key(dir)?;
        let path = dir.join(FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        if len > 0 {
            let text = std::fs::read(&path).map_err(io(&path))?;
            let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) as u64;
            if keep < len {
                tracing::warn!(
                    bytes = len - keep,
                    "audit log ended in a torn row (a crash mid-write); cut it"
                );
                file.set_len(keep).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
            }
        }
        file.flush().map_err(io(&path))?;
        Ok(AuditLog {
            path,
            key,
            file: Mutex::new(file),
        })
    }

    /// The keyed digest of a subject (`SubjectKey::index_bytes`).
    pub fn subject_key(&self, subject: &[u8]) -> String {
        hex::encode(&hmac::sign(&self.key, subject).as_ref()[..16])
    }

    /// Appends `row` and makes it durable. Blocking (an fdatasync).
    pub fn append(&self, row: &AuditRow) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(row).expect("an audit row serialises");
        line.push(b'\n');
        let mut f = self.file.lock().expect("audit file lock");
        f.write_all(&line).map_err(io(&self.path))?;
        f.sync_data().map_err(io(&self.path))
    }

    /// Rows of the log in `dir` matching `q`, in the order they were written.
    pub fn query(dir: &Path, q: &AuditQuery) -> Result<Vec<AuditRow>, AuditError> {
        let path = dir.join(FILE);
        let key = match &q.subject {
            Some(s) => Some(hex::encode(&hmac::sign(&load_key(dir)?, s).as_ref()[..16])),
            None => None,
        };
        let f = File::open(&path).map_err(io(&path))?;
        let mut out = Vec::new();
        let mut reader = BufReader::new(f);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            let n = (&mut reader)
                .take(ROW_BYTES_MAX as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(io(&path))?;
            if n == 0 {
                break;
            }
            number += 1;
            if line.last() != Some(&b'\n') {
                if n > ROW_BYTES_MAX {
                    return Err(AuditError::Corrupt {
                        path: path.display().to_string(),
                        line: number,
                        reason: format!("longer than {ROW_BYTES_MAX} bytes"),
                    });
                }
                // A torn final row of a node still running (or killed): not a row yet.
                break;
            }
            let row: AuditRow = serde_json::from_slice(&line).map_err(|e| AuditError::Corrupt {
                path: path.display().to_string(),
                line: number,
                reason: e.to_string(),
            })?;
            let wanted = key.as_ref().is_none_or(|k| row.subject_keys.contains(k))
                && q.caller.as_ref().is_none_or(|c| &row.caller == c)
                && q.since_unix_seconds.is_none_or(|t| row.at_unix_seconds >= t);
            if wanted {
                out.push(row);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(caller: &str, subjects: &[&[u8]], log: &AuditLog, at: i64) -> AuditRow {
        AuditRow {
            at_unix_seconds: at,
            caller: caller.to_string(),
            remote: "127.0.0.1:1".to_string(),
            call: "Profile".to_string(),
            subjects: subjects
                .iter()
                .map(|s| crate::feed::mask(&String::from_utf8_lossy(&s[1..])))
                .collect(),
            subject_keys: subjects.iter().map(|s| log.subject_key(s)).collect(),
            filter: None,
            records: 2,
            outcome: "ok".to_string(),
        }
    }

    #[test]
    fn rows_are_found_by_subject_caller_and_time_and_never_hold_an_id_in_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path()).expect("open");
        let person: &[u8] = b"R11010519491231002X";
        let company: &[u8] = b"U91110000600037341L";
        log.append(&row("cx://department/330000/amr", &[person], &log, 100))
            .expect("append");
        log.append(&row("cx://department/330000/tax", &[company], &log, 200))
            .expect("append");
        drop(log);
        let text = std::fs::read_to_string(dir.path().join(FILE)).expect("read");
        assert!(!text.contains("11010519491231002X"), "{text}");
        assert!(text.contains("1101**********002X"), "{text}");
        let by_subject = |s: &[u8]| {
            AuditLog::query(
                dir.path(),
                &AuditQuery {
                    subject: Some(s.to_vec()),
                    ..AuditQuery::default()
                },
            )
            .expect("query")
        };
        assert_eq!(by_subject(person).len(), 1);
        assert_eq!(by_subject(person)[0].caller, "cx://department/330000/amr");
        assert_eq!(by_subject(b"U000000000000000000").len(), 0);
        let by_caller = AuditLog::query(
            dir.path(),
            &AuditQuery {
                caller: Some("cx://department/330000/tax".into()),
                ..AuditQuery::default()
            },
        )
        .expect("query");
        assert_eq!(by_caller.len(), 1);
        let since = AuditLog::query(
            dir.path(),
            &AuditQuery {
                since_unix_seconds: Some(150),
                ..AuditQuery::default()
            },
        )
        .expect("query");
        assert_eq!(since.len(), 1);
        assert_eq!(since[0].at_unix_seconds, 200);
    }

    #[test]
    fn a_torn_final_row_is_cut_at_open_and_rows_before_it_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path()).expect("open");
        log.append(&row("cx://department/330000/amr", &[], &log, 1))
            .expect("append");
        drop(log);
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"at_unix_seconds\":2,\"cal").expect("torn write");
        drop(f);
        assert_eq!(
            AuditLog::query(dir.path(), &AuditQuery::default())
                .expect("query")
                .len(),
            1
        );
        let log = AuditLog::open(dir.path()).expect("reopen");
        log.append(&row("cx://department/330000/amr", &[], &log, 3))
            .expect("append");
        let rows = AuditLog::query(dir.path(), &AuditQuery::default()).expect("query");
        assert_eq!(rows.iter().map(|r| r.at_unix_seconds).collect::<Vec<_>>(), vec![1, 3]);
        std::fs::write(&path, b"not json\n").expect("overwrite");
        let e = AuditLog::query(dir.path(), &AuditQuery::default()).expect_err("corrupt");
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
