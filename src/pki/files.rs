//! File helpers for the PKI: reads that name the file on failure, atomic replacement (temp file in
//! the same directory, fsync, rename, fsync of the directory) and private files created 0600 from
//! the start, so a key is never readable by others even for an instant.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::PkiError;

pub(crate) fn read_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn open_options(private: bool) -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The mode applies at creation, before any byte is written, unlike a chmod afterwards.
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    options
}

/// Creates `path`, failing if it exists (O_EXCL), and writes `bytes` durably.
pub(crate) fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), PkiError> {
    let mut file = open_options(private).create_new(true).open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::AlreadyExists {
                path: path.to_path_buf(),
            }
        } else {
            PkiError::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    file.write_all(bytes).map_err(write_error(path))?;
    file.sync_all().map_err(write_error(path))?;
    sync_parent(path)
}

/// Replaces `path` with `bytes` so that readers see either the old or the new content, never a
/// torn file: a node reloading the CRL must never read half of one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), PkiError> {
    let tmp = tmp_path(path);
    // A stale temp file from a crash is ours to replace.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = open_options(private)
            .create_new(true)
            .open(&tmp)
            .map_err(write_error(&tmp))?;
        file.write_all(bytes).map_err(write_error(&tmp))?;
        file.sync_all().map_err(write_error(&tmp))?;
        fs::rename(&tmp, path).map_err(write_error(path))?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Appends one line; used for the issued-certificate ledger, where a torn last line is tolerable
/// (it is only a lookup aid) but a lost earlier line is not.
pub(crate) fn append_line(path: &Path, line: &str) -> Result<(), PkiError> {
    let mut file = open_options(false)
        .append(true)
        .create(true)
        .open(path)
        .map_err(write_error(path))?;
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    file.write_all(&bytes).map_err(write_error(path))?;
    file.sync_all().map_err(write_error(path))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn sync_parent(path: &Path) -> Result<(), PkiError> {
    // The rename or create is only durable once the directory entry is; not every platform
    // lets a directory be opened, so failure to open it is not an error.
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(dir) = File::open(parent) {
            dir.sync_all().map_err(write_error(parent))?;
        }
    }
    Ok(())
}
