//! The Prometheus endpoint as a scraper sees it, and as a bad client does.

use kaon::telemetry::{serve_metrics, Metrics};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn metrics_are_served_in_prometheus_text_and_bad_clients_are_cut_off() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let scrapes = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&scrapes);
    let addr = serve_metrics(
        rt.handle(),
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            let mut m = Metrics::default();
            m.counter("kaon_scrapes_total", "Scrapes served", &[], n);
            m.gauge("kaon_height", "Height", &[("cn", "0")], 7.0);
            m.gauge("kaon_height", "Height", &[("cn", "1")], 8.0);
            m.gauge("kaon_label_escape", "Escaping", &[("v", "a\"b\\c")], 1.0);
            m.render()
        }),
    )
    .unwrap();

    let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
    let body = ok.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        body.matches("# TYPE kaon_height gauge").count(),
        1,
        "one TYPE line per family"
    );
    assert!(
        body.contains("kaon_height{cn=\"0\"} 7\n") && body.contains("kaon_height{cn=\"1\"} 8\n"),
        "{body}"
    );
    assert!(body.contains("kaon_scrapes_total 1\n"), "{body}");
    assert!(
        body.contains(r#"kaon_label_escape{v="a\"b\\c"} 1"#),
        "{body}"
    );

    // Every endpoint also carries the process' own families and the build.
    for family in [
        "# TYPE process_cpu_seconds_total counter\n",
        "# TYPE process_resident_memory_bytes gauge\n",
        "# TYPE process_open_fds gauge\n",
        "# TYPE kaon_build_info gauge\n",
    ] {
        assert_eq!(body.matches(family).count(), 1, "{family} in {body}");
    }
    assert!(
        body.contains(&format!(
            "kaon_build_info{{version=\"{}\"}} 1\n",
            kaon::telemetry::VERSION
        )),
        "{body}"
    );

    let missing = get(addr, b"GET /other HTTP/1.1\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // A head that never ends is cut off at the size limit without an answer.
    let flood = vec![b'a'; 64 * 1024];
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(&flood);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));

    // The server still answers, and only real scrapes rendered.
    let again = get(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(again.contains("kaon_scrapes_total 2\n"), "{again}");
    assert_eq!(scrapes.load(Ordering::Relaxed), 2);
}
