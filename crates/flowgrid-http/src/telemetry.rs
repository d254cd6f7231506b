//! Structured JSON logs for every process.
//!
//! Logs go to stdout as one JSON object per line (the Functions host turns stdout lines into
//! Information logs): `timestamp` (RFC 3339, UTC, microseconds), `level`, `message`, then the
//! event's fields in order. The filter comes from `FLOWGRID_LOG` (default `info`). Field names are
//! dotted with units in the name (`duration_ms`, `http.status`); secrets and tokens are never logged.
//!
//! Lines are written off the request path: an event is formatted on its thread into a queue, and
//! one background thread writes what has gathered (about a millisecond's worth) to stdout in one
//! write, so a request never waits for the pipe to the host and the host reads one chunk per batch
//! instead of one per line. Nothing is dropped: past [`MAX_QUEUED`] bytes, a logging thread waits
//! for the writer. Warnings and errors wait until they (and every line before them) are written.
//! [`flush`] writes out the queue; `serve` calls it when the server stops.
//!
//! A line written inside a request or a run carries its `correlation_id`, and its `trace_id` and
//! `span_id` when OpenTelemetry export is on ([`crate::otel`], started here when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; see docs/observability.md).

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Bytes of log lines queued before a logging thread waits for the writer.
pub const MAX_QUEUED: usize = 1 << 20;
/// How long the writer lets lines gather before it writes them.
const LINGER: Duration = Duration::from_millis(1);

static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();

/// Initialises logging for `app` once; later calls are ignored.
pub fn init(app: &'static str) {
    let filter = EnvFilter::try_from_env("FLOWGRID_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let queue = QUEUE.get_or_init(|| Queue::start(std::io::stdout)).clone();
    let _ = tracing_subscriber::fmt()
        .event_format(JsonLine)
        .with_writer(Stdout(queue))
        .with_env_filter(filter)
        .try_init();
    let exporting = crate::otel::init(&format!("flowgrid-{app}"));
    tracing::debug!(app, otel = exporting, "telemetry initialised");
}

/// Writes out every log line queued so far, and exports the spans and metrics not yet sent.
/// Call it before the process exits.
pub fn flush() {
    crate::otel::flush();
    if let Some(queue) = QUEUE.get() {
        queue.flush();
    }
}

/// Quiet logging for tests: only warnings and errors, through the test harness's capture.
pub fn init_for_tests() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_test_writer()
        .try_init();
}

/// The lines waiting for the writer thread.
struct Queue {
    state: Mutex<State>,
    /// Signalled when lines arrive for an idle writer.
    arrived: Condvar,
    /// Signalled after every write.
    written: Condvar,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// Bytes queued since start.
    queued: u64,
    /// Bytes written since start.
    done: u64,
    /// The writer waits for `arrived`.
    idle: bool,
    /// No writer thread: loggers write to stdout themselves.
    direct: bool,
}

impl Queue {
    /// A queue whose writer thread writes to what `open` gives (a handle on stdout).
    fn start<W: std::io::Write>(open: impl Fn() -> W + Send + 'static) -> Arc<Queue> {
        let queue = Arc::new(Queue {
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
            written: Condvar::new(),
        });
        let writer = queue.clone();
        let spawned = std::thread::Builder::new()
            .name("flowgrid-log".into())
            .spawn(move || writer.run(open));
        if let Err(e) = spawned {
            eprintln!("cannot start the log writer thread, logging to stdout directly: {e}");
            queue.lock().direct = true;
        }
        queue
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `line`; waits for room past [`MAX_QUEUED`], and when `urgent`, until it is written.
    fn push(&self, line: &[u8], urgent: bool) {
        let mut state = self.lock();
        if state.direct {
            drop(state);
            let _ = std::io::stdout().write_all(line);
            return;
        }
        while state.pending.len() >= MAX_QUEUED {
            state = self
                .written
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.pending.extend_from_slice(line);
        state.queued += line.len() as u64;
        let mine = state.queued;
        if state.idle {
            state.idle = false;
            self.arrived.notify_one();
        }
        if urgent {
            while state.done < mine {
                state = self
                    .written
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    fn flush(&self) {
        let mut state = self.lock();
        let target = state.queued;
        while state.done < target && !state.direct {
            state = self
                .written
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The writer thread: waits for lines, lets more gather for [`LINGER`], writes them at once.
    fn run<W: std::io::Write>(&self, open: impl Fn() -> W) {
        let mut batch = Vec::with_capacity(64 * 1024);
        loop {
            {
                let mut state = self.lock();
                while state.pending.is_empty() {
                    state.idle = true;
                    state = self
                        .arrived
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                state.idle = false;
            }
            std::thread::sleep(LINGER);
            std::mem::swap(&mut self.lock().pending, &mut batch);
            // A closed stdout (the host gone) loses the lines; the process is on its way out.
            let _ = open().write_all(&batch);
            let written = batch.len() as u64;
            batch.clear();
            self.lock().done += written;
            self.written.notify_all();
        }
    }
}

/// The writer given to the fmt layer: every event's line goes to the queue in one call.
struct Stdout(Arc<Queue>);

/// One event's line on its way to the queue.
struct Line<'a> {
    queue: &'a Queue,
    urgent: bool,
}

impl std::io::Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.queue.push(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Stdout {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            queue: &self.0,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line {
            queue: &self.0,
            urgent: matches!(*meta.level(), Level::WARN | Level::ERROR),
        }
    }
}

/// The JSON line of an event, written straight into the line buffer (no intermediate values):
/// the same object tracing-subscriber's flattened JSON format gives, for less than a fifth of
/// the instructions.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, SystemTime::now())?;
        write!(writer, "\",\"level\":\"{}\"", event.metadata().level())?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        // Every line written while a request or a run is served carries its correlation id
        // (and, when traces are exported, the trace and span it belongs to), unless it names
        // them itself, as the access log does.
        // (The task-locals are looked at first: the access log is written outside the request's
        // scope, so its line costs two thread-local reads and no scan of its field names.)
        let named = event.metadata().fields();
        crate::correlation::with_current(|id| {
            if named.field("correlation_id").is_some() {
                return Ok(());
            }
            writer.write_str(",\"correlation_id\":\"")?;
            Escaped(&mut writer).write_str(id)?;
            writer.write_char('"')
        })
        .unwrap_or(Ok(()))?;
        if let Some(span) = crate::otel::current()
            && named.field("trace_id").is_none()
        {
            let tp = span.traceparent();
            write!(
                writer,
                ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
                &tp[3..35],
                &tp[36..52]
            )?;
        }
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`.
struct Fields<'w, 'a> {
    out: &'w mut Writer<'a>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.out.write_str(",\"")?;
                Escaped(&mut *self.out).write_str(field.name())?;
                self.out.write_str("\":")?;
                value(self.out)
            })();
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| {
            out.write_char('"')?;
            Escaped(&mut *out).write_str(value)?;
            out.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaped(&mut *out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// Escapes what it is given as the inside of a JSON string, as serde_json does.
struct Escaped<W>(W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        if !needs_escape(bytes) {
            return self.0.write_str(s);
        }
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// Whether `bytes` holds a control character, `"` or `\\`: eight bytes a step (most text has
/// none, and a byte-by-byte scan was a tenth of a line's cost).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Nonzero when a byte of `x` is below `n` (n <= 128), or is zero.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGHS;
    let zero = |x: u64| below(x, 1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let x = <[u8; 8]>::try_from(word).map_or(0, u64::from_le_bytes);
        if below(x, 0x20) | zero(x ^ (ONES * 0x22)) | zero(x ^ (ONES * 0x5c)) != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `2026-01-31T23:59:59.123456` (UTC) of `time`.
fn write_timestamp(out: &mut impl fmt::Write, time: SystemTime) -> fmt::Result {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date of day `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Lines written by a subscriber with [`JsonLine`] into memory.
    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Memory {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Memory {
        type Writer = Memory;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines_of(log: impl FnOnce()) -> Vec<String> {
        let memory = Memory::default();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLine)
            .with_writer(memory.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(memory.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_line_written_inside_a_request_carries_its_correlation_id_unless_it_names_one() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inside = runtime.block_on(crate::correlation::scope("corr-42".into(), async {
            lines_of(|| {
                tracing::info!(job.id = 7u64, "step retried");
                tracing::info!(correlation_id = "its-own", "access");
            })
        }));
        let plain: serde_json::Value = serde_json::from_str(&inside[0]).unwrap();
        assert_eq!(plain["correlation_id"], "corr-42");
        assert_eq!(plain["job.id"], 7);
        assert_eq!(
            inside[1].matches("correlation_id").count(),
            1,
            "{}",
            inside[1]
        );
        assert!(inside[1].contains("\"correlation_id\":\"its-own\""));
        assert!(
            !inside[0].contains("trace_id"),
            "no trace ids while export is off"
        );
        let outside = lines_of(|| tracing::info!("startup"));
        assert!(!outside[0].contains("correlation_id"), "{}", outside[0]);
    }

    #[test]
    fn an_event_is_one_json_object_with_timestamp_level_message_and_fields_in_order() {
        let lines = lines_of(|| {
            let method = "GET";
            tracing::info!(
                app = "agents", http.method = %method, http.status = 200u16, duration_ms = 0.25,
                tenant = "t\"1\n", ok = true, delta = -3i64, nan = f64::NAN,
                error = ?"x\u{1}y", "request served"
            );
        });
        assert_eq!(lines.len(), 1);
        let keys = [
            "timestamp",
            "level",
            "message",
            "app",
            "http.method",
            "http.status",
            "duration_ms",
            "tenant",
            "ok",
            "delta",
            "nan",
            "error",
        ];
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| lines[0].find(&format!("\"{k}\":")).unwrap_or(usize::MAX))
            .collect();
        assert!(
            positions.is_sorted() && positions[11] != usize::MAX,
            "{}",
            lines[0]
        );
        let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line.as_object().unwrap().len(), keys.len());
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "request served");
        assert_eq!(line["http.method"], "GET");
        assert_eq!(line["http.status"], 200);
        assert_eq!(line["duration_ms"], 0.25);
        assert_eq!(line["tenant"], "t\"1\n");
        assert_eq!(line["ok"], true);
        assert_eq!(line["delta"], -3);
        assert!(line["nan"].is_null());
        assert_eq!(line["error"], "\"x\\u{1}y\"");
    }

    #[test]
    fn the_line_holds_what_tracing_subscribers_flattened_json_format_gives() {
        let event = || {
            let route = "/api/agents/{id}";
            tracing::warn!(
                app = "agents", http.route = %route, http.status = 503u16, duration_ms = 12.5,
                tenant = "t1", error = "unavailable: sqlite: database is locked", "request failed"
            );
        };
        let ours: serde_json::Value = serde_json::from_str(&lines_of(event)[0]).unwrap();
        let memory = Memory::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .with_writer(memory.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, event);
        let theirs: serde_json::Value =
            serde_json::from_slice(memory.0.lock().unwrap().as_slice()).unwrap();
        let without_time = |v: &serde_json::Value| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove("timestamp");
            v
        };
        assert_eq!(without_time(&ours), without_time(&theirs));
        assert!(ours["timestamp"].is_string() && theirs["timestamp"].is_string());
    }

    #[test]
    fn a_special_byte_anywhere_is_found_and_plain_text_passes() {
        let plain = "GET /api/agents/{id} 0123456789 abc-DEF_ghi.jkl ünï 🚨 ~\u{7f}";
        assert!(!needs_escape(plain.as_bytes()));
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
            for at in 0..=plain.len().min(40) {
                if !plain.is_char_boundary(at) {
                    continue;
                }
                let text = format!("{}{special}{}", &plain[..at], &plain[at..]);
                assert!(needs_escape(text.as_bytes()), "{text:?}");
            }
        }
        for b in 0u8..=0x7f {
            let text = format!("{}{}", "x".repeat(9), char::from(b));
            let expected = b < 0x20 || b == b'"' || b == b'\\';
            assert_eq!(needs_escape(text.as_bytes()), expected, "byte {b:#x}");
        }
    }

    #[test]
    fn the_timestamp_is_rfc3339_utc_with_microseconds() {
        let mut out = String::new();
        let t = UNIX_EPOCH + Duration::from_micros(1_709_251_199_123_456); // 2024-02-29T23:59:59.123456Z
        write_timestamp(&mut out, t).unwrap();
        assert_eq!(out, "2024-02-29T23:59:59.123456Z");
        let parsed = chrono::DateTime::parse_from_rfc3339(&out).unwrap();
        assert_eq!(parsed.timestamp_micros(), 1_709_251_199_123_456);
        out.clear();
        write_timestamp(&mut out, UNIX_EPOCH).unwrap();
        assert_eq!(out, "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn every_day_of_four_centuries_has_the_date_chrono_gives() {
        for days in (-800_000..800_000).step_by(97) {
            let expected = chrono::DateTime::from_timestamp(days * 86_400, 0)
                .unwrap()
                .date_naive();
            let (y, m, d) = civil_from_days(days);
            assert_eq!(
                (y, m, d),
                (
                    i64::from(chrono::Datelike::year(&expected)),
                    chrono::Datelike::month(&expected),
                    chrono::Datelike::day(&expected)
                ),
                "day {days}"
            );
        }
    }

    #[test]
    fn queued_lines_are_written_in_order_and_flush_waits_for_them() {
        let memory = Memory::default();
        let sink = memory.clone();
        let queue = Queue::start(move || sink.clone());
        let expected: String = (0..1000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        for (i, line) in expected.lines().enumerate() {
            queue.push(format!("{line}\n").as_bytes(), false);
            if i == 500 {
                // An urgent line returns once it and every line before it are written.
                queue.push(b"{\"warn\":1}\n", true);
                let written = memory.0.lock().unwrap().len();
                assert!(
                    written
                        >= expected
                            .lines()
                            .take(501)
                            .map(|l| l.len() + 1)
                            .sum::<usize>()
                            + 11
                );
            }
        }
        queue.flush();
        let text = String::from_utf8(memory.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.replace("{\"warn\":1}\n", ""), expected);
        assert!(text.contains("{\"n\":500}\n{\"warn\":1}\n{\"n\":501}"));
    }
}
