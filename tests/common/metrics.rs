//! Reading nexus's `/metrics` (Prometheus text format): single series, for tests that
//! wait on a counter instead of on the clock, and the whole exposition through the
//! official Prometheus client's parser.

use std::net::SocketAddr;

use super::client::{Client, Request};

/// The value of `series` (a metric name, with its `{labels}` exactly as nexus prints them)
/// in an exposition text; `None` when no sample line carries it.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            // `name 1` matches `name`, but `name_total 1` or `name{a="b"} 1` does not.
            let value = rest.strip_prefix(' ')?;
            value.split_whitespace().next()?.parse().ok()
        })
}

/// Fetches `/metrics` from the nexus at `addr` and returns `series`; panics (with the
/// exposition) when the request fails or the series is missing.
pub fn read(addr: SocketAddr, series: &str) -> f64 {
    read_with(Client::connect(addr), series)
}

/// [`read`] over a given connection (e.g. a TLS one).
pub fn read_with(mut client: Client, series: &str) -> f64 {
    let response = client.request(&Request::get("/metrics"));
    assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
    let text = response.text();
    value(&text, series).unwrap_or_else(|| panic!("no `{series}` sample in /metrics:\n{text}"))
}

/// Every sample of `text` as the official Prometheus client parses it
/// (tests/parse_metrics.py); panics, showing the text, when it does not parse.
pub fn parse_with_prometheus_client(text: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parse_metrics.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (run tests/install-deps.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client could not parse /metrics (run tests/install-deps.sh): {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
