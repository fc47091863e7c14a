//! Writing a credential file so a crash never leaves it empty or half-written, and the
//! cross-process lock that makes one refresh per credential across nexus processes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mode of every file nexus writes: the owner's only, it holds secrets.
const FILE_MODE: u32 = 0o600;

/// `<file>.lock`, beside the credential file.
pub fn lock_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    file.with_file_name(name)
}

/// `.tmp-<file>`, beside the credential file. Only the lock holder writes it; the scanner
/// ignores it (a leading dot is no host name) and `*.credentials.json` keeps it out of git.
pub fn temp_path(file: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".tmp-");
    name.push(file.file_name().unwrap_or_default());
    file.with_file_name(name)
}

/// Replaces `file` with `bytes` atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory. Readers (and a crash at any instant) see the old complete file
/// or the new complete file, never a mix. Call with the file's lock held.
pub fn write_atomically(file: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = temp_path(file);
    // A leftover from a holder that died mid-write: nobody else writes it while we hold
    // the lock.
    let _ = std::fs::remove_file(&temp);
    let result = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(&temp, file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    if let Some(dir) = file.parent() {
        File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?
        .sync_all()?;
    }
    Ok(())
}

/// An exclusive `flock(2)` on a lock file; released when dropped, or by the kernel when
/// the holder dies. Local file systems only: NFS and friends do not honour it reliably.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock if nobody holds it; `None` if somebody does.
    pub fn try_acquire(path: &Path) -> io::Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        Ok(try_lock(&file)?.then_some(FileLock { _file: file }))
    }

    /// Takes the lock, polling until `limit` has passed (a holder may be mid-refresh).
    pub fn acquire(path: &Path, limit: Duration) -> io::Result<FileLock> {
        let file = open_lock_file(path)?;
        let deadline = Instant::now() + limit;
        loop {
            if try_lock(&file)? {
                return Ok(FileLock { _file: file });
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "another process held {} for over {}s",
                        path.display(),
                        limit.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
}

/// One non-blocking `flock`; false when another open file description holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor the caller owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nexus-persist-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_the_file_with_mode_0600_and_no_leftovers() {
        let dir = scratch("write");
        let file = dir.join("a.credentials.json");
        std::fs::write(&file, "old").unwrap();
        std::fs::write(temp_path(&file), "stale half-written").unwrap();
        write_atomically(&file, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.credentials.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = scratch("lock");
        let path = lock_path(&dir.join("a.credentials.json"));
        assert!(path.ends_with("a.credentials.json.lock"));
        let held = FileLock::try_acquire(&path).unwrap().unwrap();
        assert!(FileLock::try_acquire(&path).unwrap().is_none());
        let err = FileLock::acquire(&path, Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(held);
        FileLock::acquire(&path, Duration::from_millis(50)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
