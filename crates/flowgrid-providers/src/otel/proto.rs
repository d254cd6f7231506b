//! The OTLP protobuf messages Flowgrid sends (`ExportTraceServiceRequest`,
//! `ExportMetricsServiceRequest` of opentelemetry-proto v1), encoded by hand: a span and a
//! histogram are a few dozen lines of protobuf, and prost with generated types would add a code
//! generator's dependencies to every handler for them. Field numbers are those of the `.proto`
//! files; the test kit's OTLP receiver decodes what this writes with the generated types of the
//! `opentelemetry-proto` crate, so a wrong number fails a test.

use super::{Attr, Histogram, Kind, SpanData, Value};

/// A protobuf writer: varints, length-delimited fields and fixed-width numbers.
#[derive(Default)]
pub(crate) struct Buf(pub(crate) Vec<u8>);

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

impl Buf {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u64, wire: u64) {
        self.varint((field << 3) | wire);
    }

    fn uint(&mut self, field: u64, v: u64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v);
        }
    }

    fn fixed64(&mut self, field: u64, v: u64) {
        self.key(field, FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn fixed32(&mut self, field: u64, v: u32) {
        self.key(field, FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn double(&mut self, field: u64, v: f64) {
        self.fixed64(field, v.to_bits());
    }

    fn bytes(&mut self, field: u64, b: &[u8]) {
        self.key(field, LEN);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u64, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    /// A nested message written by `f`.
    fn message(&mut self, field: u64, f: impl FnOnce(&mut Buf)) {
        let mut inner = Buf::default();
        f(&mut inner);
        self.bytes(field, &inner.0);
    }
}

/// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string 1; bool 2; int64 3; double 4 }`.
fn key_value(b: &mut Buf, field: u64, attr: &Attr) {
    b.message(field, |kv| {
        kv.string(1, attr.0);
        kv.message(2, |v| match &attr.1 {
            Value::Str(s) => v.bytes(1, s.as_bytes()),
            Value::Bool(x) => {
                v.key(2, VARINT);
                v.varint(u64::from(*x));
            }
            Value::Int(i) => {
                v.key(3, VARINT);
                v.varint(*i as u64);
            }
            Value::F64(x) => v.double(4, *x),
        });
    });
}

/// `Resource { repeated KeyValue attributes = 1 }` and
/// `InstrumentationScope { name = 1; version = 2 }`.
fn resource_and_scope(b: &mut Buf, resource: &[Attr]) {
    b.message(1, |r| {
        for a in resource {
            key_value(r, 1, a);
        }
    });
}

fn scope(b: &mut Buf) {
    b.message(1, |s| {
        s.string(1, "flowgrid");
        s.string(2, env!("CARGO_PKG_VERSION"));
    });
}

/// `ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }` of `spans`.
pub(crate) fn traces(resource: &[Attr], spans: &[SpanData]) -> Vec<u8> {
    let mut out = Buf::default();
    // ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2 }
    out.message(1, |rs| {
        resource_and_scope(rs, resource);
        // ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2 }
        rs.message(2, |ss| {
            scope(ss);
            for span in spans {
                ss.message(2, |s| encode_span(s, span));
            }
        });
    });
    out.0
}

fn encode_span(s: &mut Buf, span: &SpanData) {
    s.bytes(1, &span.context.trace_id);
    s.bytes(2, &span.context.span_id);
    if let Some(parent) = &span.parent {
        s.bytes(4, parent);
    }
    s.string(5, &span.name);
    s.uint(
        6,
        match span.kind {
            Kind::Internal => 1,
            Kind::Server => 2,
            Kind::Client => 3,
            Kind::Producer => 4,
            Kind::Consumer => 5,
        },
    );
    s.fixed64(7, span.start_ns);
    s.fixed64(8, span.end_ns);
    for a in &span.attributes {
        key_value(s, 9, a);
    }
    for link in &span.links {
        // Link { trace_id = 1; span_id = 2; flags = 6 }
        s.message(13, |l| {
            l.bytes(1, &link.trace_id);
            l.bytes(2, &link.span_id);
            // A link's context came from another process: remoteness known (bit 8), remote (bit 9).
            l.fixed32(6, u32::from(link.flags) | 0x300);
        });
    }
    // Status { message = 2; code = 3 } (1 ok, 2 error); unset when neither.
    if let Some(error) = &span.error {
        s.message(15, |st| {
            st.string(2, error);
            st.uint(3, 2);
        });
    }
    // flags: the W3C trace flags, and bit 8 "the parent's remoteness is known" (bit 9 remote).
    let remote = if span.remote_parent { 0x200 } else { 0 };
    s.fixed32(16, u32::from(span.context.flags) | 0x100 | remote);
}

/// `ExportMetricsServiceRequest { repeated ResourceMetrics resource_metrics = 1 }`: one
/// cumulative histogram metric per name, one data point per attribute set.
pub(crate) fn metrics(
    resource: &[Attr],
    start_ns: u64,
    now_ns: u64,
    hists: &[Histogram],
) -> Vec<u8> {
    let mut out = Buf::default();
    out.message(1, |rm| {
        resource_and_scope(rm, resource);
        rm.message(2, |sm| {
            scope(sm);
            let mut names: Vec<&'static str> = hists.iter().map(|h| h.name).collect();
            names.dedup();
            for name in names {
                let points: Vec<&Histogram> = hists.iter().filter(|h| h.name == name).collect();
                let Some(first) = points.first() else {
                    continue;
                };
                // Metric { name = 1; description = 2; unit = 3; Histogram histogram = 9 }
                sm.message(2, |m| {
                    m.string(1, name);
                    m.string(2, first.description);
                    m.string(3, first.unit);
                    m.message(9, |h| {
                        for p in &points {
                            h.message(1, |dp| histogram_point(dp, p, start_ns, now_ns));
                        }
                        // AggregationTemporality CUMULATIVE
                        h.uint(2, 2);
                    });
                });
            }
        });
    });
    out.0
}

fn histogram_point(dp: &mut Buf, h: &Histogram, start_ns: u64, now_ns: u64) {
    dp.fixed64(2, start_ns);
    dp.fixed64(3, now_ns);
    dp.fixed64(4, h.count);
    dp.double(5, h.sum);
    // packed repeated fixed64 bucket_counts = 6; packed repeated double explicit_bounds = 7
    let mut counts = Buf::default();
    for c in &h.buckets {
        counts.0.extend_from_slice(&c.to_le_bytes());
    }
    dp.bytes(6, &counts.0);
    let mut bounds = Buf::default();
    for b in h.bounds {
        bounds.0.extend_from_slice(&b.to_bits().to_le_bytes());
    }
    dp.bytes(7, &bounds.0);
    for a in &h.attributes {
        key_value(dp, 9, a);
    }
    if h.count > 0 {
        dp.double(11, h.min);
        dp.double(12, h.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_little_endian_groups_of_seven_bits() {
        let mut b = Buf::default();
        b.varint(1);
        b.varint(300);
        b.varint(u64::MAX);
        assert_eq!(&b.0[..3], &[0x01, 0xac, 0x02]);
        assert_eq!(b.0.len(), 3 + 10);
        assert_eq!(b.0[12], 0x01);
    }

    #[test]
    fn a_negative_int_attribute_is_ten_bytes_twos_complement() {
        let mut b = Buf::default();
        key_value(&mut b, 1, &("n", Value::Int(-1)));
        // field 1 LEN, len, key "n", value message: 3<<3 varint -1 (10 bytes)
        assert_eq!(b.0[0], 0x0a);
        assert_eq!(*b.0.last().unwrap_or(&0), 0x01);
    }
}
