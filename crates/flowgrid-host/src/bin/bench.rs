//! Benchmark of the local host (run in release: `cargo run --release -p flowgrid-host --bin flowgrid-host-bench`).
//!
//! Prints what the host adds per forwarded request (p50/p99 through the host against direct to the
//! handler), the Service Bus throughput (messages/s through a trigger) and the enqueue-to-handler
//! latency. Arguments: `[http_requests] [messages] [latency_samples]` (defaults 5000 5000 300).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flowgrid_host::bus::{Outgoing, Target};
use flowgrid_host::{Host, HostOptions};
use http_body_util::{BodyExt, Empty};
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a small vector"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn write(path: PathBuf, v: &serde_json::Value) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, v.to_string())?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n_http = args.first().copied().unwrap_or(5000);
    let n_msgs = args.get(1).copied().unwrap_or(5000);
    let n_lat = args.get(2).copied().unwrap_or(300);
    // The access log is formatted as in `flowgrid dev`, into a sink.
    tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .init();

    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let fixture = std::env::current_exe()?.with_file_name("flowgrid-host-fixture");
    if !fixture.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p flowgrid-host --bins`",
            fixture.display()
        );
    }
    let log = root.join("fixture.log");
    write(
        root.join("host.json"),
        &json!({"version": "2.0",
        "customHandler": {"description": {"defaultExecutablePath": "handler"}, "enableForwardingHttpRequest": true},
        "extensions": {"http": {"routePrefix": "api"}}}),
    )?;
    write(
        root.join("local.settings.json"),
        &json!({"IsEncrypted": false, "Values": {
        "ServiceBusConnection": "local", "FIXTURE_LOG": log.display().to_string(), "FLOWGRID_RATE_LIMIT_RPS": "0"}}),
    )?;
    write(
        root.join("functions/edge/Echo/function.json"),
        &json!({"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get"], "route": "echo/{*rest}"},
        {"type": "http", "direction": "out", "name": "res"}]}),
    )?;
    write(
        root.join("functions/worker/Work/function.json"),
        &json!({"bindings": [
        {"type": "serviceBusTrigger", "direction": "in", "name": "msg", "queueName": "work", "connection": "ServiceBusConnection"}]}),
    )?;
    std::fs::create_dir_all(root.join("bin"))?;
    for app in ["edge", "worker"] {
        std::os::unix::fs::symlink(&fixture, root.join("bin").join(format!("flowgrid-{app}")))?;
    }
    let host = Host::start(
        HostOptions {
            root: root.to_owned(),
            bin_dir: root.join("bin"),
            data_dir: root.join("data"),
            listen: "127.0.0.1:0".parse()?,
            app_settings: Default::default(),
            scaling: Default::default(),
        },
        &mut |n| eprintln!("{n}"),
    )
    .await?;
    host.settle(Duration::from_secs(30)).await;
    let direct_port = host
        .statuses()
        .into_iter()
        .find(|(n, _)| n == "edge")
        .and_then(|(_, s)| s.port)
        .context("the edge app did not start")?;

    // 1. Forwarded HTTP: alternate direct, through-host, and through-host with a bearer token
    // (verified by the host for the per-tenant rate limit) on keep-alive connections.
    let key = flowgrid_http::auth::DevKey::load_or_create(&root.join("data"))?;
    let token = key.mint(&flowgrid_http::auth::TokenRequest {
        tenant: "bench".into(),
        role: flowgrid_http::auth::Role::Viewer,
        user: "bench".into(),
        issuer: flowgrid_domain::config::DEFAULT_ISSUER.into(),
        audience: flowgrid_domain::config::DEFAULT_AUDIENCE.into(),
        ttl_secs: 3600,
    })?;
    let data_dir = root.join("data");
    let core_config = flowgrid_domain::config::Config::from_lookup(|name| {
        (name == "FLOWGRID_DATA_DIR").then(|| data_dir.display().to_string())
    })?;
    let accepted = flowgrid_http::auth::TokenVerifier::from_config(&core_config)?
        .authenticate(&token)
        .await
        .is_ok();
    println!("bench token accepted by the verifier the host uses: {accepted}");
    let bearer = format!("Bearer {token}");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let direct = format!("http://127.0.0.1:{direct_port}/api/echo/bench");
    let through = format!("{}/api/echo/bench", host.url());
    let mut times = [
        Vec::with_capacity(n_http),
        Vec::with_capacity(n_http),
        Vec::with_capacity(n_http),
    ];
    for i in 0..(n_http + 500) {
        for (k, url) in [&direct, &through, &through].iter().enumerate() {
            let mut req = hyper::Request::get(url.as_str());
            if k == 2 {
                req = req.header("authorization", &bearer);
            }
            let req = req.body(Empty::new())?;
            let t = Instant::now();
            let res = client.request(req).await?;
            let status = res.status();
            res.into_body().collect().await?;
            let us = t.elapsed().as_secs_f64() * 1e6;
            if !status.is_success() {
                bail!("{url} answered {status}");
            }
            if i >= 500 {
                times[k].push(us);
            }
        }
    }
    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    let (d50, d99, h50, h99) = (
        percentile(&times[0], 0.5),
        percentile(&times[0], 0.99),
        percentile(&times[1], 0.5),
        percentile(&times[1], 0.99),
    );
    println!("forwarded GET, {n_http} requests each (µs):");
    println!("  direct to handler : p50 {d50:8.1}  p99 {d99:8.1}");
    println!("  through the host  : p50 {h50:8.1}  p99 {h99:8.1}");
    println!(
        "  added by the host : p50 {:8.1}  p99 {:8.1}",
        h50 - d50,
        h99 - d99
    );
    let (a50, a99) = (percentile(&times[2], 0.5), percentile(&times[2], 0.99));
    println!(
        "  through, with token: p50 {a50:8.1}  p99 {a99:8.1}  (added p50 {:.1})",
        a50 - d50
    );

    // 2. Queue throughput: enqueue n messages, measure until all are completed.
    let bus = host.bus();
    let t = Instant::now();
    let b = bus.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        for i in 0..n_msgs {
            b.send(
                &Target::Queue("work".into()),
                Outgoing {
                    body: format!("m{i}").into_bytes(),
                    ..Outgoing::default()
                },
            )?;
        }
        Ok(())
    })
    .await??;
    let sent = t.elapsed();
    loop {
        let b = bus.clone();
        let active = tokio::task::spawn_blocking(move || b.list())
            .await??
            .iter()
            .map(|e| e.active)
            .sum::<i64>();
        if active == 0 {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("the queue did not drain within 300 s ({active} left)");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all = t.elapsed();
    #[expect(clippy::cast_precision_loss, reason = "message counts are small")]
    let rate = n_msgs as f64 / all.as_secs_f64();
    println!(
        "queue: {n_msgs} messages sent in {:.0} ms, all handled and completed in {:.0} ms: {rate:.0} msgs/s",
        sent.as_secs_f64() * 1e3,
        all.as_secs_f64() * 1e3
    );

    // 3. Enqueue-to-handler latency, one message at a time.
    std::fs::write(&log, "")?;
    for i in 0..n_lat {
        let now = chrono::Utc::now().timestamp_micros();
        let b = bus.clone();
        tokio::task::spawn_blocking(move || {
            b.send(
                &Target::Queue("work".into()),
                Outgoing {
                    body: format!("lat:{now}").into_bytes(),
                    ..Outgoing::default()
                },
            )
        })
        .await??;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = std::fs::read_to_string(&log)?.lines().count();
            if n > i {
                break;
            }
            if Instant::now() > deadline {
                bail!("message {i} was not handled within 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let mut lat: Vec<f64> = std::fs::read_to_string(&log)?
        .lines()
        .filter_map(|l| l.strip_prefix("latency_us="))
        .filter_map(|v| v.parse::<f64>().ok())
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "enqueue-to-handler latency, {} messages (ms): p50 {:.2}  p99 {:.2}",
        lat.len(),
        percentile(&lat, 0.5) / 1e3,
        percentile(&lat, 0.99) / 1e3
    );
    host.shutdown().await;
    Ok(())
}
