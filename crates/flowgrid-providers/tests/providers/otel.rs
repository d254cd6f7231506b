//! OpenTelemetry export: what the hand-written OTLP encoder sends is decoded by the test kit's
//! receiver with the OpenTelemetry project's generated protobuf types, and says what a collector
//! needs (parents, kinds, attributes, links, status, the request histogram).

use std::time::Duration;

use flowgrid_providers::otel::{self, Kind, Span, SpanContext};
use flowgrid_testkit::otlp::{OtlpReceiver, attributes};

const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const LINKED: &str = "00-11111111111111111111111111111111-2222222222222222-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_request_metrics_reach_an_otlp_receiver_with_parents_links_and_attributes() {
    let receiver = OtlpReceiver::start().await;
    assert!(otel::init_with_endpoint(
        "flowgrid-test",
        &receiver.endpoint,
        100
    ));

    let mut server = Span::remote("GET /api/things/{id}", Kind::Server, Some(CALLER));
    otel::set(&mut server, "http.response.status_code", 200u16);
    let server_id = server.as_ref().map(Span::context).unwrap();
    let (client_id, header) = otel::within(&server, async {
        assert_eq!(otel::current(), Some(server_id));
        let url = url::Url::parse("https://user:pw@example.com:8443/path?token=secret").unwrap();
        let mut client = otel::http_client_span("POST", &url).unwrap();
        client.set("gen_ai.usage.input_tokens", 12u64);
        client.link(SpanContext::parse(LINKED).unwrap());
        client.fail("HTTP 503");
        (client.context(), client.traceparent())
    })
    .await;
    assert_eq!(otel::current(), None, "the span is current only inside");
    drop(server);
    otel::record_request("GET", "/api/things/{id}", 200, 0.02);
    otel::record_request("GET", "/api/things/{id}", 200, 2.0);
    otel::record_request("POST", "/api/things", 503, 0.5);
    otel::flush();

    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| s.len() >= 2)
        .await;
    assert_eq!(receiver.rejected(), Vec::<String>::new());
    let server = spans.iter().find(|s| s.kind == 2).expect("the server span");
    let client = spans.iter().find(|s| s.kind == 3).expect("the client span");
    assert_eq!(server.service, "flowgrid-test");
    assert_eq!(server.name, "GET /api/things/{id}");
    assert_eq!(server.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(server.parent_span_id, "b7ad6b7169203331");
    assert_eq!(server.attributes["http.response.status_code"], 200);
    assert!(server.end_ns >= server.start_ns && server.start_ns > 0);
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(
        header,
        format!("00-{}-{}-01", client.trace_id, client.span_id)
    );
    assert_eq!(header, client_id.traceparent());
    assert_eq!(client.name, "POST");
    assert_eq!(
        client.attr("url.full"),
        Some("https://example.com:8443/path")
    );
    assert_eq!(client.attr("server.address"), Some("example.com"));
    assert_eq!(client.attributes["server.port"], 8443);
    assert_eq!(client.attributes["gen_ai.usage.input_tokens"], 12);
    assert_eq!(client.status_code, 2, "an error status");
    assert_eq!(
        client.links,
        vec![(
            "11111111111111111111111111111111".to_owned(),
            "2222222222222222".to_owned()
        )]
    );

    // The request histogram: cumulative, one point per method/route/status, semconv buckets.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metric = loop {
        let found = receiver.metrics().into_iter().find_map(|m| {
            m.resource_metrics
                .into_iter()
                .flat_map(|r| r.scope_metrics)
                .flat_map(|s| s.metrics)
                .find(|m| m.name == "http.server.request.duration")
        });
        if let Some(m) = found {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "no request metrics");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(metric.unit, "s");
    let Some(flowgrid_testkit::otlp::metrics_proto::metric::Data::Histogram(h)) = metric.data
    else {
        panic!("not a histogram: {metric:?}");
    };
    assert_eq!(h.aggregation_temporality, 2, "cumulative");
    let get = h
        .data_points
        .iter()
        .find(|p| attributes(&p.attributes)["http.request.method"] == "GET")
        .expect("the GET point");
    assert_eq!(get.count, 2);
    assert!((get.sum.unwrap_or_default() - 2.02).abs() < 1e-9);
    assert_eq!(get.explicit_bounds, otel::DURATION_BOUNDS);
    assert_eq!(get.bucket_counts.len(), otel::DURATION_BOUNDS.len() + 1);
    assert_eq!(get.bucket_counts[2], 1, "0.02 s is in (0.01, 0.025]");
    assert_eq!(get.bucket_counts[10], 1, "2 s is in (1, 2.5]");
    assert_eq!((get.min, get.max), (Some(0.02), Some(2.0)));
    let attrs = attributes(&get.attributes);
    assert_eq!(attrs["http.route"], "/api/things/{id}");
    assert_eq!(attrs["http.response.status_code"], 200);
    assert_eq!(h.data_points.len(), 2);
}
