//! The local emulators the storage tests run against: Cosmos DB (`@vercel/cosmosdb-server`
//! through `tools/cosmos-emulator.js`) and Blob Storage (Azurite through `tools/azurite.js`).
//!
//! Both come from `tools/emulators/package-lock.json` (exact versions); the first test that
//! needs them runs `npm ci --prefix tools/emulators` when `node_modules` is missing. Each
//! emulator listens on a free loopback port, is shared by the tests of one process (nextest runs
//! each test in its own process, so each gets its own; start-up takes well under a second),
//! and is stopped when the last handle is dropped. Should the test process die without
//! dropping it (a panic across threads, a kill), the emulator still exits: it watches its
//! stdin, a pipe from this process, and stops when the pipe closes.
//!
//! Anything missing (Node, npm, the lockfile) fails the test with a message saying what to do;
//! nothing is skipped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::free_port;

/// The account name and key Azurite accepts (public, documented by Microsoft).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known account key (public).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How long an emulator may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running emulator, stopped on drop.
pub struct Emulator {
    child: Mutex<Child>,
    port: u16,
    kind: &'static str,
}

impl Emulator {
    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// For Cosmos: the account endpoint (`http://127.0.0.1:<port>/`). For Azurite: the
    /// service URL of the well-known account (`http://127.0.0.1:<port>/devstoreaccount1`).
    pub fn endpoint(&self) -> String {
        match self.kind {
            "azurite" => format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port),
            _ => format!("http://127.0.0.1:{}/", self.port),
        }
    }

    /// Stops the emulator now (for tests of an unreachable store).
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Cosmos DB emulator of this test process (started on first use).
pub fn cosmos() -> Arc<Emulator> {
    static SHARED: Mutex<Weak<Emulator>> = Mutex::new(Weak::new());
    shared(&SHARED, || {
        start(
            "cosmos",
            "cosmos-emulator.js",
            &["--no-ssl"],
            "Ready to accept",
        )
    })
}

/// A Cosmos DB emulator of its own (for tests that stop it).
pub fn cosmos_private() -> Arc<Emulator> {
    Arc::new(start(
        "cosmos",
        "cosmos-emulator.js",
        &["--no-ssl"],
        "Ready to accept",
    ))
}

/// The Azurite (Blob) emulator of this test process (started on first use).
pub fn azurite() -> Arc<Emulator> {
    static SHARED: Mutex<Weak<Emulator>> = Mutex::new(Weak::new());
    shared(&SHARED, || {
        start("azurite", "azurite.js", &[], "successfully listens")
    })
}

fn shared(slot: &Mutex<Weak<Emulator>>, make: impl FnOnce() -> Emulator) -> Arc<Emulator> {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(running) = slot.upgrade() {
        return running;
    }
    let emulator = Arc::new(make());
    *slot = Arc::downgrade(&emulator);
    emulator
}

/// The workspace root (two levels above this crate).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_owned()
}

/// Installs the emulators from the lockfile unless already installed. Several test processes
/// may get here at once: a lock file makes one of them install while the others wait.
pub fn ensure_installed() -> PathBuf {
    let tools = workspace_root().join("tools");
    crate::tools::npm_ci(&tools.join("emulators"), "the storage tests' emulators");
    tools
}

/// Starts `node tools/<script> <port> <args> --exit-with-stdin` and waits for `ready` on its
/// output and for the port to accept connections.
fn start(kind: &'static str, script: &str, args: &[&str], ready: &str) -> Emulator {
    let tools = ensure_installed();
    let port = free_port();
    let mut child = Command::new("node")
        .arg(tools.join(script))
        .arg(port.to_string())
        .args(args)
        .arg("--exit-with-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node ({e}): the {kind} emulator needs Node.js"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_owned();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(&ready)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    let emulator = Emulator {
        child: Mutex::new(child),
        port,
        kind,
    };
    let started = Instant::now();
    let said_ready = rx.recv_timeout(START_TIMEOUT).is_ok();
    if !said_ready {
        let status = emulator
            .child
            .lock()
            .ok()
            .and_then(|mut c| c.try_wait().ok().flatten());
        panic!("the {kind} emulator did not start within {START_TIMEOUT:?} (exit: {status:?})");
    }
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < START_TIMEOUT,
            "the {kind} emulator does not accept connections on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    emulator
}
