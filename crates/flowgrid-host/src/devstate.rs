//! One `flowgrid dev` per data folder: `dev.lock` in the folder is held with an OS file lock
//! (`flock`) for as long as the host runs, and holds what other commands need to know about it
//! (`{"pid", "url", "issuer"}`: `flowgrid token` mints for that issuer, the API commands can
//! find the URL). The OS releases the lock when the process ends, however it ends, so a crash
//! never leaves a stale lock: a file whose lock nobody holds describes nothing.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The lock file's name in the data folder.
pub const LOCK_FILE: &str = "dev.lock";

/// The host admin key's file in the data folder (mode 0600, written by each `flowgrid dev`):
/// the admin endpoints (`/admin/...`) want it in [`ADMIN_KEY_HEADER`], as the Functions host
/// wants its master key.
pub const ADMIN_KEY_FILE: &str = "host-admin.key";

/// The header carrying the host admin key (the Functions host's name for its keys).
pub const ADMIN_KEY_HEADER: &str = "x-functions-key";

/// The admin key of the host that runs (or last ran) on `data_dir`.
pub fn read_admin_key(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(ADMIN_KEY_FILE);
    let key = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the host admin key {} (is `flowgrid dev` running on this data folder?)",
            path.display()
        )
    })?;
    Ok(key.trim().to_owned())
}

/// Writes a new random admin key to `data_dir` (readable by its owner only) and returns it.
pub fn write_admin_key(data_dir: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let path = data_dir.join(ADMIN_KEY_FILE);
    // A new file each time: an old one may have had wider permissions.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(key.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

/// What a running `flowgrid dev` says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevState {
    /// Its process id.
    pub pid: u32,
    /// The URL it serves on (`http://localhost:7071`).
    pub url: String,
    /// The issuer its apps expect in tokens (`FLOWGRID_JWT_ISSUER` as given to the handlers).
    pub issuer: String,
}

impl DevState {
    /// The state of the `flowgrid dev` running on `data_dir`, when one is.
    pub fn read(data_dir: &Path) -> Option<DevState> {
        let mut file = File::open(data_dir.join(LOCK_FILE)).ok()?;
        match file.try_lock_shared() {
            // Nobody holds it: no host is running (the file is left from an earlier one).
            Ok(()) => None,
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                file.read_to_string(&mut text).ok()?;
                serde_json::from_str(&text).ok()
            }
            Err(TryLockError::Error(_)) => None,
        }
    }
}

/// The held lock on a data folder; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the data folder (creating it), or says which `flowgrid dev` has it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data folder {}", data_dir.display()))?;
        let path = data_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { file, path }),
            Err(TryLockError::WouldBlock) => {
                let other = DevState::read(data_dir).map_or_else(String::new, |s| {
                    format!(" (process {}, serving {})", s.pid, s.url)
                });
                bail!(
                    "another `flowgrid dev` is already running on the data folder {}{other}; stop it first, or pass another --data-dir",
                    data_dir.display()
                )
            }
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// Writes what the running host is, for other commands to read.
    pub fn publish(&mut self, state: &DevState) -> Result<()> {
        let text = serde_json::to_string(state)?;
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file
            .write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_folder_is_refused_and_released_with_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = DataDirLock::acquire(dir.path()).expect("first");
        assert_eq!(DevState::read(dir.path()), None, "nothing published yet");
        let state = DevState {
            pid: 42,
            url: "http://localhost:7171".into(),
            issuer: "http://localhost:7171/api/auth".into(),
        };
        first.publish(&state).expect("publish");
        assert_eq!(DevState::read(dir.path()), Some(state));
        let second = DataDirLock::acquire(dir.path()).expect_err("second");
        let text = second.to_string();
        assert!(
            text.contains("already running") && text.contains("process 42"),
            "{text}"
        );
        drop(first);
        assert_eq!(
            DevState::read(dir.path()),
            None,
            "a released lock describes nothing"
        );
        DataDirLock::acquire(dir.path()).expect("free again");
    }
}
