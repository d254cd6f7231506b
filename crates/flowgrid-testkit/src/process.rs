//! Spawning real binaries the way the Functions host does: a free port in
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, readiness by polling `GET /`, killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The path of workspace binary `name`, built first (once per test process) so it is never stale.
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let path = target_dir().join(name);
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", package, "--bin", name])
            .status()
            .expect("running cargo build");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {name} failed"
        );
        built.push(name.to_owned());
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// `target/<profile>`, found from the running test executable (`target/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_owned()
}

/// Runs the `flowgrid` CLI with `args` and `FLOWGRID_DATA_DIR=data_dir`; returns stdout.
pub fn run_cli(data_dir: &Path, args: &[&str]) -> String {
    run_cli_with(data_dir, args, &[])
}

/// [`run_cli`] with `envs` added to the CLI's environment (e.g. the storage settings).
pub fn run_cli_with(data_dir: &Path, args: &[&str], envs: &[(String, String)]) -> String {
    let output = Command::new(workspace_bin("flowgrid", "flowgrid"))
        .args(args)
        .env("FLOWGRID_DATA_DIR", data_dir)
        .env_remove("FLOWGRID_JWT_JWKS")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("running flowgrid");
    assert!(
        output.status.success(),
        "flowgrid {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A running handler process, killed on drop.
pub struct Handler {
    child: Child,
    port: u16,
    /// Time from spawn to the first answer on `GET /`.
    pub ready_after: Duration,
}

impl Handler {
    /// Spawns `binary` as the Functions host would, with `data_dir` as its data folder and
    /// `envs` added, and waits (at most 30 s, the host's initialization timeout) for `GET /`.
    pub fn spawn(binary: &Path, data_dir: &Path, envs: &[(&str, &str)]) -> Handler {
        let port = free_port();
        let started = Instant::now();
        let mut command = Command::new(binary);
        command
            .current_dir(data_dir)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", "test-worker")
            .env("FLOWGRID_DATA_DIR", data_dir)
            .env("FLOWGRID_LOG", "warn")
            .env_remove("FLOWGRID_JWT_JWKS")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        let mut handler = Handler {
            child,
            port,
            ready_after: Duration::ZERO,
        };
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = handler.child.try_wait() {
                panic!("{} exited before it was ready: {status}", binary.display());
            }
            if answers_http(port) {
                handler.ready_after = started.elapsed();
                return handler;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within 30 s",
                binary.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /` on the port gets any HTTP response (what the host's readiness poll checks).
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
