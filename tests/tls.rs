//! An https upstream: the same pass-through guarantees over TLS, and certificates nexus
//! must not trust.

mod common;

use common::scenarios;
use common::tls::TlsSetup;
use common::*;

#[test]
fn https_upstream_round_trip_passes_everything_through_unchanged() {
    scenarios::non_streaming_round_trip(Upstream::Tls);
}

#[test]
fn https_upstream_receives_a_chunked_request_body_decoded() {
    scenarios::chunked_request_body(Upstream::Tls);
}

#[test]
fn https_upstream_sse_is_relayed_one_event_at_a_time() {
    scenarios::sse_event_by_event(Upstream::Tls);
}

#[test]
fn a_self_signed_upstream_certificate_listed_in_upstream_ca_file_is_trusted() {
    let setup = TlsSetup::self_signed();
    let mock = MockUpstream::builder()
        .tls(setup.server_config())
        .start(|_| MockReply::json(200, r#"{"self_signed":true}"#));
    let nexus = Nexus::builder()
        .upstream(&mock.url())
        .ca_file(setup.ca_file())
        .start();

    let response = nexus.request(&messages_request("{}"));

    assert_eq!(
        (response.status, response.text().as_str()),
        (200, r#"{"self_signed":true}"#)
    );
}

/// Starts a TLS mock presenting `setup`'s certificate and a nexus trusting `ca_file`, then
/// asserts a request fails with 502 without any request reaching the mock.
fn assert_certificate_rejected(setup: &TlsSetup, trust: Option<&std::path::Path>) {
    let mock = MockUpstream::builder()
        .tls(setup.server_config())
        .start(|_| MockReply::json(200, "{}"));
    let mut nexus = Nexus::builder().upstream(&mock.url());
    if let Some(ca_file) = trust {
        nexus = nexus.ca_file(ca_file);
    }
    let nexus = nexus.start();

    let response = nexus.request(&messages_request("{}"));

    assert_anthropic_error(&response, 502, "api_error");
    assert!(
        mock.connections() >= 1,
        "nexus never tried the upstream, so the 502 proves nothing"
    );
    assert!(
        mock.requests().is_empty(),
        "a request crossed an untrusted TLS connection: {:?}",
        mock.requests()
    );
}

#[test]
fn certificate_from_a_ca_outside_upstream_ca_file_is_rejected_with_502() {
    let setup = TlsSetup::untrusted();
    assert_certificate_rejected(&setup, Some(setup.ca_file()));
}

#[test]
fn generated_certificate_is_rejected_when_no_ca_file_is_given() {
    assert_certificate_rejected(&TlsSetup::trusted(), None);
}
