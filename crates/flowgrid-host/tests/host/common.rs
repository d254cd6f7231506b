//! Throw-away app roots served by the fixture handler.

#![expect(
    clippy::unwrap_used,
    reason = "test support: a failed set-up should fail the test loudly"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowgrid_host::{Host, HostOptions};
use serde_json::{Value, json};

/// A temporary app root: host.json, local.settings.json, functions/, bin/, data/.
pub struct AppRoot {
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl AppRoot {
    /// `apps`: (app, [(function, function.json)]); `values`: extra app settings.
    pub fn new(apps: &[(&str, Vec<(&str, Value)>)], values: Value) -> Self {
        Self::with_host_json(apps, values, json!({}))
    }

    pub fn with_host_json(
        apps: &[(&str, Vec<(&str, Value)>)],
        values: Value,
        extra_host: Value,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut host = json!({
            "version": "2.0",
            "customHandler": {"description": {"defaultExecutablePath": "handler"}, "enableForwardingHttpRequest": true},
            "extensions": {"http": {"routePrefix": "api"}},
        });
        merge(&mut host, extra_host);
        std::fs::write(root.join("host.json"), host.to_string()).unwrap();
        let log = root.join("fixture.log");
        let mut all = json!({
            "FUNCTIONS_WORKER_RUNTIME": "custom",
            "ServiceBusConnection": "local",
            "FIXTURE_LOG": log.display().to_string(),
            "FLOWGRID_LOG": "warn",
        });
        merge(&mut all, values);
        std::fs::write(
            root.join("local.settings.json"),
            json!({"IsEncrypted": false, "Values": all}).to_string(),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        for (app, functions) in apps {
            for (name, def) in functions {
                let d = root.join("functions").join(app).join(name);
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("function.json"), def.to_string()).unwrap();
            }
            std::os::unix::fs::symlink(
                env!("CARGO_BIN_EXE_flowgrid-host-fixture"),
                root.join("bin").join(format!("flowgrid-{app}")),
            )
            .unwrap();
        }
        Self { dir, log }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn options(&self) -> HostOptions {
        HostOptions {
            root: self.root().to_owned(),
            bin_dir: self.root().join("bin"),
            data_dir: self.root().join("data"),
            listen: "127.0.0.1:0".parse().unwrap(),
            app_settings: Default::default(),
            scaling: Default::default(),
        }
    }

    /// Starts a host and waits until every app has settled.
    pub async fn start(&self) -> Host {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::WARN)
            .try_init();
        let host = Host::start(self.options(), &mut |_| {}).await.unwrap();
        host.settle(Duration::from_secs(20)).await;
        host
    }

    /// Waits until every app of `host` has settled (a host started with other options).
    pub async fn start_settled(&self, host: &Host) {
        host.settle(Duration::from_secs(20)).await;
    }

    /// The fixture's log lines.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Polls the log until `pred` holds (bounded deadline), returning the lines.
    pub async fn wait_for_lines(
        &self,
        what: &str,
        pred: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.lines();
            if pred(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log: {lines:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn merge(a: &mut Value, b: Value) {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        for (k, v) in b {
            match a.get_mut(&k) {
                Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                _ => {
                    a.insert(k, v);
                }
            }
        }
    }
}

pub fn http_fn(route: &str, methods: &[&str]) -> Value {
    json!({"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous", "methods": methods, "route": route},
        {"type": "http", "direction": "out", "name": "res"}]})
}

pub fn sb_fn(queue: &str) -> Value {
    json!({"bindings": [{"type": "serviceBusTrigger", "direction": "in", "name": "msg", "queueName": queue, "connection": "ServiceBusConnection"}]})
}

pub fn health_fns(app: &str) -> Vec<(&'static str, Value)> {
    vec![(
        "Health",
        http_fn(&format!("health/{app}/{{probe?}}"), &["get"]),
    )]
}

/// Polls `f` until it returns `Some` (bounded deadline).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.1 client for the tests (reqwest is not a dependency of this crate).
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut b = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.unwrap_or("").to_owned(),
        )))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("no answer within 20 s")
        .unwrap();
    let status = res.status().as_u16();
    let hs = res
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let text =
        String::from_utf8_lossy(&res.into_body().collect().await.unwrap().to_bytes()).into_owned();
    (status, hs, text)
}

pub fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
