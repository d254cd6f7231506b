//! The test apps: an HTTP app (`edge`) and a Service Bus worker app, both served by the fixture.

use flowgrid_host::bus::{Outgoing, Target};
use serde_json::{Value, json};

use crate::common::{health_fns, http_fn, sb_fn};

pub fn echo_app() -> Vec<(&'static str, Value)> {
    let mut f = vec![
        (
            "Echo",
            http_fn("echo/{*rest}", &["get", "post", "put", "delete"]),
        ),
        (
            "Inspect",
            json!({"bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["post", "get"], "route": "inspect/{id:int}/{opt?}"},
            {"type": "http", "direction": "out", "name": "res"},
            {"type": "serviceBus", "direction": "out", "name": "unused", "queueName": "unused", "connection": "ServiceBusConnection"}]}),
        ),
    ];
    f.extend(health_fns("edge"));
    f
}

pub fn work_app(queue_fns: bool) -> Vec<(&'static str, Value)> {
    let mut f = vec![
        ("Work", sb_fn("work")),
        (
            "Enqueue",
            json!({"bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["post"], "route": "enqueue"},
            {"type": "http", "direction": "out", "name": "res"},
            {"type": "serviceBus", "direction": "out", "name": "out", "queueName": "work", "connection": "ServiceBusConnection"}]}),
        ),
    ];
    if queue_fns {
        f.extend(health_fns("worker"));
    }
    f
}

pub fn send(host: &flowgrid_host::Host, body: &str) {
    host.bus()
        .send(
            &Target::Queue("work".into()),
            Outgoing {
                body: body.as_bytes().to_vec(),
                ..Outgoing::default()
            },
        )
        .expect("the queue accepts the message");
}
