//! The file operations the journal needs, behind a small trait: the real file system in
//! production, and in tests a simulated one that loses everything not yet synced at a simulated
//! crash (`sim`), so recovery is tested against the writes a real crash can lose. Invariant: the
//! journal touches its files only through this trait.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// A segment open for appending.
pub trait SegmentFile: Send {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// fdatasync: everything written so far is durable when this returns.
    fn sync_data(&mut self) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// A segment open for reading.
pub trait SegmentRead: Read + Seek + Send {}
impl<T: Read + Seek + Send> SegmentRead for T {}

pub trait JournalFs: Send + Sync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the files in `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a file that must not exist yet.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn SegmentRead>>;
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// fsync of the directory: a file created (or removed) in it survives a crash.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFs;

struct OsSegment(File);

impl SegmentFile for OsSegment {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl JournalFs for OsFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in fs::read_dir(dir)? {
            if let Some(name) = item?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().create_new(true).read(true).append(true).open(path)?;
        Ok(Box::new(OsSegment(file)))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        Ok(Box::new(OsSegment(file)))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn SegmentRead>> {
        Ok(Box::new(File::open(path)?))
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The file system a store's journal lives on, as a config value (the real one by default).
#[derive(Clone)]
pub struct SharedFs(pub std::sync::Arc<dyn JournalFs>);

impl Default for SharedFs {
    fn default() -> Self {
        SharedFs(std::sync::Arc::new(OsFs))
    }
}

impl std::fmt::Debug for SharedFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JournalFs")
    }
}

/// Makes the files a process creates from now on private to its user (umask 077: directories
/// 0700, files 0600), whatever the umask it was started with.
pub fn private_files_from_now_on() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Makes `dir` (created if missing) and everything in it private: directories 0700, files 0600.
/// A store made by an older release, or copied in with a looser umask, is tightened at start.
/// Returns how many entries had to be changed.
pub fn make_private(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mut changed = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let meta = fs::symlink_metadata(&d)?;
        if meta.permissions().mode() & 0o777 != 0o700 {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700))?;
            changed += 1;
        }
        for item in fs::read_dir(&d)? {
            let item = item?;
            let kind = item.file_type()?;
            if kind.is_dir() {
                pending.push(item.path());
            } else if kind.is_file() {
                let mode = item.metadata()?.permissions().mode() & 0o777;
                if mode != 0o600 {
                    fs::set_permissions(item.path(), fs::Permissions::from_mode(0o600))?;
                    changed += 1;
                }
            }
        }
    }
    Ok(changed)
}
