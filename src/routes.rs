//! Which requests nexus answers itself, and those answers.

use crate::client_setup;
use crate::http::error::{write_error, write_response, ErrorReply};
use crate::http::request::{Method, RequestHead};
use crate::request_id::RequestId;
use crate::server::worker::Worker;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /`, `HEAD /`: health and configuration summary.
    Health,
    /// `GET /token-stats`: per-domain usage as JSON.
    TokenStats,
    /// `GET /metrics`: Prometheus text format.
    Metrics,
    /// `GET /dashboard`: the live stats page (polls `/token-stats`).
    Dashboard,
    /// `GET /client-setup/:filename`: a file from `CLIENT_SETUP_DIR`.
    ClientSetup,
    /// Any `/v1/*` request: forwarded upstream.
    Proxy,
    /// A known path with a method it does not take.
    MethodNotAllowed,
    /// Anything else.
    NotFound,
}

/// Routes by path, then method.
pub fn route(head: &RequestHead) -> Route {
    let local = match head.path() {
        "/" => Route::Health,
        "/token-stats" => Route::TokenStats,
        "/metrics" => Route::Metrics,
        "/dashboard" => Route::Dashboard,
        path if path.starts_with(client_setup::ROUTE_PREFIX) => Route::ClientSetup,
        path if path.starts_with("/v1/") => return Route::Proxy,
        _ => return Route::NotFound,
    };
    match head.method {
        Method::Get | Method::Head => local,
        _ => Route::MethodNotAllowed,
    }
}

/// Writes the full response for a local route into `out`.
pub fn local_response(
    out: &mut Vec<u8>,
    worker: &Worker,
    head: &RequestHead,
    route: Route,
    request_id: &RequestId,
    close: bool,
) {
    let id = request_id.as_str();
    let head_only = head.method == Method::Head;
    let stats = &worker.shared.stats;
    match route {
        Route::Health => {
            write_response(
                out,
                200,
                "application/json",
                &health_body(worker),
                id,
                &[],
                close,
                head_only,
            );
        }
        Route::TokenStats => {
            write_response(
                out,
                200,
                "application/json",
                &stats.token_stats_json(),
                id,
                &[],
                close,
                head_only,
            );
        }
        Route::Metrics => {
            let body = stats.metrics_text();
            let content_type = "text/plain; version=0.0.4; charset=utf-8";
            write_response(
                out,
                200,
                content_type,
                body.as_bytes(),
                id,
                &[],
                close,
                head_only,
            );
        }
        Route::Dashboard => {
            write_response(
                out,
                200,
                "text/html; charset=utf-8",
                DASHBOARD_HTML.as_bytes(),
                id,
                &[
                    ("cache-control", "no-cache"),
                    ("content-security-policy", DASHBOARD_CSP),
                    ("x-content-type-options", "nosniff"),
                ],
                close,
                head_only,
            );
        }
        Route::ClientSetup => {
            let raw = &head.path()[client_setup::ROUTE_PREFIX.len()..];
            match client_setup::load(&worker.shared.config.client_setup_dir, raw) {
                Ok(file) => {
                    let disposition = format!("attachment; filename=\"{}\"", file.name);
                    write_response(
                        out,
                        200,
                        file.content_type,
                        &file.body,
                        id,
                        &[
                            ("cache-control", "public, max-age=3600"),
                            ("content-disposition", &disposition),
                            ("x-content-type-options", "nosniff"),
                        ],
                        close,
                        head_only,
                    );
                }
                Err(reply) => write_error(out, &reply, id, close, head_only),
            }
        }
        Route::MethodNotAllowed => {
            let reply = ErrorReply::new(405, format!("method not allowed on {}", head.path()));
            write_error(out, &reply, id, close, head_only);
        }
        Route::NotFound | Route::Proxy => {
            let reply = ErrorReply::new(
                404,
                format!("no route for {}; the Claude API is under /v1/", head.path()),
            );
            write_error(out, &reply, id, close, head_only);
        }
    }
}

/// The live stats page: one self-contained file, no external assets, no build step.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// The page may talk to nexus itself and nothing else; inline script and style only.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Health and configuration summary: nothing secret, only whether things are set.
fn health_body(worker: &Worker) -> Vec<u8> {
    let shared = &worker.shared;
    let config = &shared.config;
    serde_json::to_vec(&serde_json::json!({
        "status": "ok",
        "service": "nexus",
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": shared.started.elapsed().as_secs(),
        "config": {
            "upstream": shared.upstream.display,
            "workers": config.workers,
            "driver": worker.driver.to_string(),
            "credentialsDir": config.credentials_dir.display().to_string(),
            "domainCredentials": shared.credentials.len(),
            "hasDefaultApiKey": config.claude_api_key.is_some(),
            "clientKeysRequired": !config.client_api_keys.is_empty(),
            "telemetry": config.telemetry_endpoint.is_some(),
            "slack": config.slack.enabled && config.slack.webhook_url.is_some(),
        },
    }))
    .expect("a JSON value always serializes")
}
