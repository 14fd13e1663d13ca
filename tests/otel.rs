//! OpenTelemetry export (cargo feature `otel`): spans of a real run reach an
//! OTLP/HTTP collector — here a stand-in that records what it is sent — and
//! the spans still batched at exit are flushed, not lost.
//!
//! Run with `cargo test -p mdp --features otel --test otel` (`scripts/test`
//! does).

#[path = "support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A collector that records each request's content type and body.
async fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(r): State<Received>, headers: axum::http::HeaderMap, body: Bytes| async move {
                    let kind = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    r.lock().unwrap().push((kind, body.to_vec()));
                    ""
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `mdp plugin test` of the router on the mixed fixture, exporting to
/// `endpoint` when given.
fn plugin_test(endpoint: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mdp"));
    command
        .args(["plugin", "test"])
        .arg(support::plugin_wasm("massive-router"))
        .arg("--events")
        .arg(support::repo_root().join("tests/fixtures/events/massive-mixed.jsonl"));
    match endpoint {
        Some(url) => command.env("OTEL_EXPORTER_OTLP_ENDPOINT", url),
        None => command.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"),
    };
    command.output().expect("run mdp")
}

#[tokio::test]
async fn a_plugin_run_exports_its_analyze_spans_and_flushes_them_at_exit() {
    let (url, received) = collector().await;
    let out = tokio::task::spawn_blocking(move || plugin_test(Some(&url)))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run takes well under the batch exporter's 5 s delay: whatever
    // arrived was flushed at exit.
    let received = received.lock().unwrap().clone();
    assert!(
        !received.is_empty(),
        "no export request reached the collector"
    );
    let (kind, body) = &received[0];
    assert_eq!(kind, "application/x-protobuf", "OTLP/HTTP protobuf");
    assert!(contains(body, "mdp"), "service name `mdp` in the resource");
    assert!(contains(body, "analyze"), "an `analyze` span");
    assert!(
        contains(body, "massive-router"),
        "the span names its plugin"
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_the_run_is_unaffected() {
    let (_url, received) = collector().await;
    let out = plugin_test(None);
    assert!(out.status.success());
    assert!(!out.stdout.is_empty());
    assert!(received.lock().unwrap().is_empty());
}
