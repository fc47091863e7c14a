//! What the listener's TLS did: handshakes finished, handshakes that failed and why,
//! certificate reloads. Atomics shared by every worker, read by `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a TLS client never got to send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It spoke plain HTTP to the TLS port (answered with a 400).
    PlainHttp,
    /// No complete handshake within the header timeout: a slow or half-open client.
    Timeout,
    /// It closed or reset the connection mid-handshake.
    Closed,
    /// The handshake itself failed: no common version, cipher or ALPN protocol, a bad
    /// record, an alert from the client (e.g. it does not trust the certificate).
    Protocol,
}

impl Failure {
    const ALL: [Failure; 4] = [
        Failure::PlainHttp,
        Failure::Timeout,
        Failure::Closed,
        Failure::Protocol,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::PlainHttp => "plain_http",
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
            Failure::Protocol => "protocol",
        }
    }
}

/// The listener's TLS counters.
#[derive(Default)]
pub struct TlsCounters {
    handshakes: AtomicU64,
    failures: [AtomicU64; Failure::ALL.len()],
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl TlsCounters {
    /// A handshake finished.
    pub fn handshake(&self) {
        self.handshakes.fetch_add(1, Relaxed);
    }

    /// A client failed before its first request, for `why`.
    pub fn failed(&self, why: Failure) {
        self.failures[why as usize].fetch_add(1, Relaxed);
    }

    /// A reload ran: every file read (`clean`), or some kept their previous pair.
    pub fn reloaded(&self, clean: bool) {
        let counter = if clean {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Writes the series in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP nexus_tls_handshakes_total TLS handshakes completed on the listening port.\n\
             # TYPE nexus_tls_handshakes_total counter\n\
             nexus_tls_handshakes_total {}",
            self.handshakes.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP nexus_tls_handshake_failures_total Clients of the TLS port that never sent \
             a request over TLS, by reason.\n# TYPE nexus_tls_handshake_failures_total counter"
        );
        for why in Failure::ALL {
            let _ = writeln!(
                out,
                "nexus_tls_handshake_failures_total{{reason=\"{}\"}} {}",
                why.label(),
                self.failures[why as usize].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP nexus_tls_certificate_reloads_total Certificate reloads after a file \
             changed: ok, or failed (a file kept its previous version).\n\
             # TYPE nexus_tls_certificate_reloads_total counter\n\
             nexus_tls_certificate_reloads_total{{result=\"ok\"}} {}\n\
             nexus_tls_certificate_reloads_total{{result=\"failed\"}} {}",
            self.reloads_ok.load(Relaxed),
            self.reloads_failed.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_rendered_with_its_count() {
        let counters = TlsCounters::default();
        counters.failed(Failure::Timeout);
        counters.failed(Failure::Timeout);
        counters.failed(Failure::PlainHttp);
        counters.handshake();
        counters.reloaded(false);
        let mut text = String::new();
        counters.render(&mut text);
        assert!(text.contains("nexus_tls_handshakes_total 1\n"), "{text}");
        assert!(text.contains("nexus_tls_handshake_failures_total{reason=\"timeout\"} 2\n"));
        assert!(text.contains("nexus_tls_handshake_failures_total{reason=\"plain_http\"} 1\n"));
        assert!(text.contains("nexus_tls_handshake_failures_total{reason=\"protocol\"} 0\n"));
        assert!(text.contains("nexus_tls_certificate_reloads_total{result=\"failed\"} 1\n"));
    }
}
