//! Reading single series out of nexus's `/metrics` (Prometheus text format). The full
//! exposition is checked with the official parser in tests/accounting.rs; these helpers
//! only pick one value, for tests that wait on a counter instead of on the clock.

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
