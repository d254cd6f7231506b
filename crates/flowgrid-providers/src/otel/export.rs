//! The exporter: finished spans and histograms gather in memory; one thread posts them as OTLP
//! protobuf to `<endpoint>/v1/traces` and `<endpoint>/v1/metrics` (spans every
//! `OTEL_BSP_SCHEDULE_DELAY` ms or at 512 waiting, metrics every `OTEL_METRIC_EXPORT_INTERVAL`
//! ms, both at [`flush`]). Past 8192 waiting spans, new ones are dropped (and counted in a
//! warning) rather than holding memory while the collector is away.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::{Attr, Histogram, SpanData, Value, now_ns, proto};

const BATCH: usize = 512;
const MAX_QUEUED: usize = 8192;

struct Exporter {
    resource: Vec<Attr>,
    traces_url: String,
    metrics_url: String,
    headers: Vec<(String, String)>,
    span_delay: Duration,
    metric_interval: Duration,
    start_ns: u64,
    state: Mutex<State>,
    wake: Condvar,
    flushed: Condvar,
    histograms: Mutex<Vec<Histogram>>,
}

#[derive(Default)]
struct State {
    spans: Vec<SpanData>,
    dropped: u64,
    flush_asked: u64,
    flush_done: u64,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// The settings of the exporter, from the OpenTelemetry environment variables; `None` when no
/// endpoint is set (or the SDK is disabled, or the protocol is not `http/protobuf`, which is
/// logged).
fn settings(service: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Option<Exporter> {
    let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    let base =
        var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|b| b.trim().trim_end_matches('/').to_owned());
    let traces_url = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| base.as_ref().map(|b| format!("{b}/v1/traces")))?;
    let metrics_url = var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .or_else(|| base.as_ref().map(|b| format!("{b}/v1/metrics")))
        .unwrap_or_default();
    if let Some(protocol) = var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && protocol.trim() != "http/protobuf"
    {
        tracing::error!(
            setting = "OTEL_EXPORTER_OTLP_PROTOCOL",
            protocol = %protocol.trim(),
            "only http/protobuf is supported: nothing is exported"
        );
        return None;
    }
    let millis = |name: &str, default: u64| {
        Duration::from_millis(
            var(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(default)
                .max(10),
        )
    };
    let pairs = |text: Option<String>| -> Vec<(String, String)> {
        text.unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (percent_decode(k.trim()), percent_decode(v.trim())))
            .filter(|(k, _)| !k.is_empty())
            .collect()
    };
    let mut resource: Vec<Attr> = Vec::new();
    let mut service_name = service.to_owned();
    for (k, v) in pairs(var("OTEL_RESOURCE_ATTRIBUTES")) {
        if k == "service.name" {
            service_name = v;
        } else {
            // Keys are static in spans; resource keys are few and live for the process.
            resource.push((Box::leak(k.into_boxed_str()), Value::Str(v)));
        }
    }
    if let Some(name) = var("OTEL_SERVICE_NAME") {
        service_name = name.trim().to_owned();
    }
    resource.push(("service.name", Value::Str(service_name)));
    resource.push(("service.namespace", Value::from("flowgrid")));
    resource.push(("service.version", Value::from(env!("CARGO_PKG_VERSION"))));
    resource.push((
        "service.instance.id",
        Value::Str(uuid::Uuid::new_v4().to_string()),
    ));
    resource.push(("telemetry.sdk.name", Value::from("flowgrid")));
    resource.push(("telemetry.sdk.language", Value::from("rust")));
    if let Some(site) = var("WEBSITE_SITE_NAME") {
        resource.push(("cloud.provider", Value::from("azure")));
        resource.push(("cloud.platform", Value::from("azure_functions")));
        resource.push(("faas.instance", Value::Str(site)));
    }
    Some(Exporter {
        resource,
        traces_url,
        metrics_url,
        headers: pairs(var("OTEL_EXPORTER_OTLP_HEADERS")),
        span_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5000),
        metric_interval: millis("OTEL_METRIC_EXPORT_INTERVAL", 60_000),
        start_ns: now_ns(),
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        flushed: Condvar::new(),
        histograms: Mutex::new(Vec::new()),
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| {
            char::from(c)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
        };
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            let v = h << 4 | l;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts exporting for `service` (its `service.name` unless `OTEL_SERVICE_NAME` says
/// otherwise) when an OTLP endpoint is configured; does nothing otherwise, or when already
/// started. Returns whether export is on.
pub fn init(service: &str) -> bool {
    start(settings(service, &|name| std::env::var(name).ok()))
}

/// [`init`] with `endpoint` as `OTEL_EXPORTER_OTLP_ENDPOINT` and `delay_ms` as both export
/// intervals, ignoring the environment: for tests, which cannot change a running process's
/// environment safely.
pub fn init_with_endpoint(service: &str, endpoint: &str, delay_ms: u64) -> bool {
    let delay = delay_ms.to_string();
    start(settings(service, &|name| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.to_owned()),
        "OTEL_BSP_SCHEDULE_DELAY" | "OTEL_METRIC_EXPORT_INTERVAL" => Some(delay.clone()),
        _ => None,
    }))
}

fn start(exporter: Option<Exporter>) -> bool {
    if enabled() {
        return true;
    }
    let Some(exporter) = exporter else {
        return false;
    };
    if EXPORTER.set(exporter).is_err() {
        return true;
    }
    let started = std::thread::Builder::new()
        .name("otel-export".into())
        .spawn(run);
    if let Err(e) = started {
        tracing::error!("cannot start the OpenTelemetry exporter: {e}");
    }
    true
}

/// Queues a finished span.
pub(super) fn push(span: SpanData) {
    let Some(x) = EXPORTER.get() else {
        return;
    };
    let mut state = lock(&x.state);
    if state.spans.len() >= MAX_QUEUED {
        state.dropped += 1;
        return;
    }
    state.spans.push(span);
    if state.spans.len() >= BATCH {
        x.wake.notify_one();
    }
}

/// Adds `value` to the histogram `name` with `attributes`.
pub(super) fn record(
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    bounds: &'static [f64],
    attributes: Vec<Attr>,
    value: f64,
) {
    let Some(x) = EXPORTER.get() else {
        return;
    };
    let mut hists = lock(&x.histograms);
    let i = match hists
        .iter()
        .position(|h| h.name == name && h.attributes == attributes)
    {
        Some(i) => i,
        None => {
            hists.push(Histogram {
                name,
                unit,
                description,
                bounds,
                attributes,
                buckets: vec![0; bounds.len() + 1],
                count: 0,
                sum: 0.0,
                min: 0.0,
                max: 0.0,
            });
            hists.len() - 1
        }
    };
    hists[i].record(value);
}

/// Exports every span and the metrics now; waits up to 5 s. Call it before the process exits.
pub fn flush() {
    let Some(x) = EXPORTER.get() else {
        return;
    };
    let mut state = lock(&x.state);
    state.flush_asked += 1;
    let asked = state.flush_asked;
    x.wake.notify_one();
    let deadline = Instant::now() + Duration::from_secs(5);
    while state.flush_done < asked {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        state = x
            .flushed
            .wait_timeout(state, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// The exporter thread.
fn run() {
    let Some(x) = EXPORTER.get() else {
        return;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the OpenTelemetry exporter: {e}");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot start the OpenTelemetry exporter: {e}");
            return;
        }
    };
    let mut failing = false;
    let mut next_spans = Instant::now() + x.span_delay;
    let mut next_metrics = Instant::now() + x.metric_interval;
    loop {
        let (spans, dropped, flush) = {
            let mut state = lock(&x.state);
            loop {
                let now = Instant::now();
                let due = next_spans.min(next_metrics);
                if state.flush_asked > state.flush_done || state.spans.len() >= BATCH || now >= due
                {
                    break;
                }
                state = x
                    .wake
                    .wait_timeout(state, due - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            let flush = (state.flush_asked > state.flush_done).then_some(state.flush_asked);
            (
                std::mem::take(&mut state.spans),
                std::mem::take(&mut state.dropped),
                flush,
            )
        };
        let now = Instant::now();
        if dropped > 0 {
            tracing::warn!(
                spans.dropped = dropped,
                "OpenTelemetry spans dropped: the collector is not keeping up"
            );
        }
        for chunk in spans.chunks(BATCH) {
            let body = proto::traces(&x.resource, chunk);
            let ok = runtime.block_on(post(&client, x, &x.traces_url, body));
            note(&mut failing, ok, &x.traces_url);
        }
        if now >= next_spans || flush.is_some() {
            next_spans = now + x.span_delay;
        }
        if (now >= next_metrics || flush.is_some()) && !x.metrics_url.is_empty() {
            next_metrics = now + x.metric_interval;
            let hists = lock(&x.histograms).clone();
            if !hists.is_empty() {
                let body = proto::metrics(&x.resource, x.start_ns, now_ns(), &hists);
                let ok = runtime.block_on(post(&client, x, &x.metrics_url, body));
                note(&mut failing, ok, &x.metrics_url);
            }
        }
        if let Some(asked) = flush {
            let mut state = lock(&x.state);
            state.flush_done = state.flush_done.max(asked);
            x.flushed.notify_all();
        }
    }
}

/// Logs the first failure of a series and the recovery, not every attempt.
fn note(failing: &mut bool, result: Result<(), String>, url: &str) {
    match result {
        Err(e) if !*failing => {
            *failing = true;
            tracing::warn!(url, "OpenTelemetry export failed: {e}");
        }
        Ok(()) if *failing => {
            *failing = false;
            tracing::info!(url, "OpenTelemetry export works again");
        }
        _ => {}
    }
}

async fn post(
    client: &reqwest::Client,
    x: &Exporter,
    url: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    let mut request = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body);
    for (k, v) in &x.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn header_values_are_percent_decoded() {
        assert_eq!(percent_decode("Bearer%20abc%3D"), "Bearer abc=");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%zzb"), "a%zzb");
    }
}
