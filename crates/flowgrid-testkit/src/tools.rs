//! Installing the test tools the repository pins (npm lockfiles under `tools/`, a Python venv)
//! on first use. Several test processes may get there at once: a lock file makes one of them
//! install while the others wait.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `make` once across test processes (holding the lock file `lock`), unless `done()`.
pub fn once(done: impl Fn() -> bool, lock: &Path, what: &str, make: impl FnOnce()) {
    if done() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(lock)
        {
            Ok(_) => break,
            Err(_) if done() => return,
            Err(_) => {
                assert!(
                    Instant::now() < deadline,
                    "waited 15 min for {} ({what}); remove it if stale",
                    lock.display()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    if done() {
        let _ = std::fs::remove_file(lock);
        return;
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(make));
    let _ = std::fs::remove_file(lock);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// `npm ci` in `dir` unless its `node_modules` was installed from the lockfile as it is now
/// (a stamp holding the lockfile's content, so a changed lockfile installs again). `needed_by`
/// says who needs it, for the message when Node.js or npm is missing.
pub fn npm_ci(dir: &Path, needed_by: &str) {
    let lockfile = dir.join("package-lock.json");
    let lock = std::fs::read(&lockfile).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: {needed_by} cannot be installed",
            lockfile.display()
        )
    });
    let stamp = dir.join("node_modules/.flowgrid-lock");
    let current = || std::fs::read(&stamp).ok().as_deref() == Some(&lock[..]);
    once(current, &dir.join(".npm.lock"), "npm ci", || {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir)
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("`npm ci --prefix {}` failed ({s})", dir.display()),
            Err(e) => panic!("cannot run npm ({e}): {needed_by} needs Node.js and npm"),
        }
        std::fs::write(&stamp, &lock).expect("write the install stamp");
    });
}

/// The platform binary of steady (`@stdy/cli`) installed under `node_modules`. Tests start it
/// directly: the package's launcher (a Node script) starts it as a child of its own, which
/// killing the launcher would leave running.
pub fn steady_binary(node_modules: &Path) -> PathBuf {
    std::fs::read_dir(node_modules.join("@stdy"))
        .expect("@stdy/cli installed")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/steady"))
        .find(|p| p.exists())
        .expect("the @stdy/cli platform binary for this machine")
}
