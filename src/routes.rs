//! Which requests nexus answers itself, and those answers.

use std::borrow::Cow;

use crate::client_setup;
use crate::credentials::{client_keys, ClientCredentials};
use crate::http::basic_auth;
use crate::http::error::{error_body, ErrorReply};
use crate::http::request::{Method, RequestHead};
use crate::ledger::api as ledger_api;
use crate::shared::Shared;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /`, `HEAD /`: health and configuration summary.
    Health,
    /// `GET /token-stats`: per-domain usage as JSON.
    TokenStats,
    /// `GET /metrics`: Prometheus text format.
    Metrics,
    /// `GET /dashboard`: the live stats page (polls `/token-stats`), the history view
    /// and a request's page (the views are chosen by the URL's fragment, in the page).
    Dashboard,
    /// `GET /dashboard/<name>.js`: the page's scripts (see [`DASHBOARD_SCRIPTS`]).
    DashboardScript,
    /// `GET /client-setup/:filename`: a file from `CLIENT_SETUP_DIR`.
    ClientSetup,
    /// `GET /api/*`: the ledger's JSON API and `/api/clients` (answered by
    /// [`answer_api`]).
    Api,
    /// `GET /api/me`: a named client's own figures, for its own key.
    ApiMe,
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
        path if path.starts_with(DASHBOARD_SCRIPT_PREFIX) => Route::DashboardScript,
        path if path.starts_with(client_setup::ROUTE_PREFIX) => Route::ClientSetup,
        "/api/me" => Route::ApiMe,
        path if path.starts_with(ledger_api::PREFIX) => Route::Api,
        path if path.starts_with("/v1/") => return Route::Proxy,
        _ => return Route::NotFound,
    };
    match head.method {
        Method::Get | Method::Head => local,
        _ => Route::MethodNotAllowed,
    }
}

/// A local route's answer: the server writes it as the response.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Cow<'static, [u8]>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn ok(content_type: &'static str, body: impl Into<Cow<'static, [u8]>>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// An Anthropic-shaped error.
    pub fn error(reply: &ErrorReply) -> Reply {
        let page = Reply {
            status: reply.status,
            content_type: "application/json",
            body: error_body(reply).into(),
            headers: Vec::new(),
        };
        if reply.status == 405 {
            return page.header("allow", "GET, HEAD");
        }
        page
    }
}

/// The 401 a request to a guarded route gets without `NEXUS_ADMIN_KEY`; `None` when the
/// route is open, or the key was presented (`Authorization: Bearer` or `x-api-key`, or
/// as the password of `Authorization: Basic` — what a browser sends for the dashboard and
/// its fetches once its user typed the key in; compared in constant time).
pub fn admin_denied(shared: &Shared, head: &RequestHead, route: Route) -> Option<Reply> {
    let key = shared.config.admin_key.as_ref()?;
    let guarded = matches!(
        route,
        Route::TokenStats | Route::Metrics | Route::Dashboard | Route::DashboardScript | Route::Api
    );
    let presented = ClientCredentials {
        x_api_key: head.x_api_key.as_deref(),
        authorization: head.authorization.as_deref(),
    };
    let basic = head.authorization.as_deref().and_then(basic_auth::password);
    let by_basic = basic
        .as_ref()
        .is_some_and(|p| client_keys::constant_time_eq(p.as_bytes(), key.as_bytes()));
    if !guarded || client_keys::accepted(std::slice::from_ref(key), presented) || by_basic {
        return None;
    }
    let message = match client_keys::any_presented(presented) || basic.is_some() {
        true => "the admin key presented is not valid",
        false => "this endpoint requires the admin key (NEXUS_ADMIN_KEY) as x-api-key, Authorization: Bearer, or the password of Authorization: Basic",
    };
    // The challenge lets a browser ask for the key and then send it with every request.
    Some(
        Reply::error(&ErrorReply::new(401, message))
            .header("www-authenticate", basic_auth::CHALLENGE),
    )
}

/// `/token-stats` with the named clients' top-level `clients` section, when there are any.
fn with_clients(mut body: Vec<u8>, shared: &Shared) -> Vec<u8> {
    let clients = shared.clients.current();
    if clients.is_empty() || body.last() != Some(&b'}') {
        return body;
    }
    let now = crate::stats::now_ms();
    let section: serde_json::Map<String, serde_json::Value> = clients
        .all()
        .iter()
        .map(|c| (c.name().to_string(), c.to_json(now)))
        .collect();
    body.pop();
    body.extend_from_slice(b",\"clients\":");
    serde_json::to_writer(&mut body, &section).expect("a JSON value always serializes");
    body.push(b'}');
    body
}

/// `GET /api/me`: the figures of the named client whose key the request presents.
fn answer_me(shared: &Shared, head: &RequestHead) -> Reply {
    let presented = ClientCredentials {
        x_api_key: head.x_api_key.as_deref(),
        authorization: head.authorization.as_deref(),
    };
    let local = crate::clients::watch::LocalClients::default();
    match shared
        .clients
        .identify(&local, client_keys::presented(presented))
    {
        (_, Some(client)) => {
            let mut json = client.to_json(crate::stats::now_ms());
            json["name"] = client.name().as_ref().into();
            Reply::ok("application/json", json.to_string().into_bytes())
                .header("cache-control", "no-store")
        }
        (_, None) => Reply::error(&ErrorReply::new(
            401,
            "GET /api/me needs a named client's key (CLIENTS_FILE) as x-api-key or \
             Authorization: Bearer",
        )),
    }
}

/// Answers `GET /api/*` from the ledger. The query runs on the ledger's own thread; this
/// waits for it without blocking the worker.
pub async fn answer_api(shared: &Shared, head: &RequestHead) -> Reply {
    if let Some(denied) = admin_denied(shared, head, Route::Api) {
        return denied;
    }
    if head.path() == "/api/clients" {
        let now = crate::stats::now_ms();
        let clients: Vec<_> = shared
            .clients
            .current()
            .all()
            .iter()
            .map(|c| {
                let mut json = c.to_json(now);
                json["name"] = c.name().as_ref().into();
                json
            })
            .collect();
        let body = serde_json::json!({ "clients": clients }).to_string();
        return Reply::ok("application/json", body.into_bytes())
            .header("cache-control", "no-store");
    }
    let query = head.target.get(head.path().len() + 1..).unwrap_or("");
    match ledger_api::answer(&shared.ledger, head.path(), query).await {
        Ok(body) => Reply::ok("application/json", body).header("cache-control", "no-store"),
        Err(reply) => Reply::error(&reply),
    }
}

/// Answers a local route. `driver` names the worker's I/O driver, for `GET /`.
pub fn answer(shared: &Shared, driver: &str, head: &RequestHead, route: Route) -> Reply {
    let stats = &shared.stats;
    if let Some(denied) = admin_denied(shared, head, route) {
        return denied;
    }
    match route {
        Route::Health => {
            let (status, body) = health_body(shared, driver);
            Reply {
                status,
                ..Reply::ok("application/json", body)
            }
        }
        Route::TokenStats => Reply::ok(
            "application/json",
            with_clients(
                stats.token_stats_json(&shared.credentials.pool_figures()),
                shared,
            ),
        ),
        Route::ApiMe => answer_me(shared, head),
        Route::Metrics => {
            let mut text = stats.metrics_text(&shared.credentials.pool_figures());
            shared.ledger.metrics_text(&mut text);
            let clients = shared.clients.current();
            crate::clients::metrics::render(&clients, crate::stats::now_ms(), &mut text);
            if let Some(tls) = &shared.tls {
                tls.metrics_text(&mut text);
            }
            Reply::ok(
                "text/plain; version=0.0.4; charset=utf-8",
                text.into_bytes(),
            )
        }
        Route::Dashboard => Reply::ok("text/html; charset=utf-8", DASHBOARD_HTML.as_bytes())
            .header("cache-control", "no-cache")
            .header("content-security-policy", DASHBOARD_CSP)
            .header("x-content-type-options", "nosniff"),
        Route::DashboardScript => {
            let name = &head.path()[DASHBOARD_SCRIPT_PREFIX.len()..];
            match DASHBOARD_SCRIPTS.iter().find(|(n, _)| *n == name) {
                Some((_, script)) => Reply::ok("text/javascript; charset=utf-8", script.as_bytes())
                    .header("cache-control", "no-cache")
                    .header("x-content-type-options", "nosniff"),
                None => Reply::error(&ErrorReply::new(
                    404,
                    format!("no dashboard script {name:?}"),
                )),
            }
        }
        Route::ClientSetup => {
            let raw = &head.path()[client_setup::ROUTE_PREFIX.len()..];
            match client_setup::load(&shared.config.client_setup_dir, raw) {
                Ok(file) => {
                    let disposition = format!("attachment; filename=\"{}\"", file.name);
                    Reply::ok(file.content_type, file.body)
                        .header("cache-control", "public, max-age=3600")
                        .header("content-disposition", disposition)
                        .header("x-content-type-options", "nosniff")
                }
                Err(reply) => Reply::error(&reply),
            }
        }
        Route::MethodNotAllowed => Reply::error(&ErrorReply::new(
            405,
            format!("method not allowed on {}", head.path()),
        )),
        Route::NotFound | Route::Proxy | Route::Api => Reply::error(&ErrorReply::new(
            404,
            format!("no route for {}; the Claude API is under /v1/", head.path()),
        )),
    }
}

/// The live stats page: one self-contained file, no external assets, no build step.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Where the page's scripts are served.
const DASHBOARD_SCRIPT_PREFIX: &str = "/dashboard/";

/// The page's scripts beyond the live view's (inline in the page), compiled in as well:
/// one file per job, so the history view and a request's page read on their own.
const DASHBOARD_SCRIPTS: &[(&str, &str)] = &[
    ("page.js", include_str!("dashboard/page.js")),
    ("history.js", include_str!("dashboard/history.js")),
    ("conversation.js", include_str!("dashboard/conversation.js")),
    ("request.js", include_str!("dashboard/request.js")),
    ("clients.js", include_str!("dashboard/clients.js")),
];

/// The page may talk to nexus itself and nothing else; its own scripts (inline and from
/// nexus) and inline style only.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Health and configuration summary: nothing secret, only whether things are set.
///
/// `degraded` with 503 (so load balancers and `--check-health` notice) when the upstream
/// host does not resolve or every connect to it in the last minute failed
/// ([`crate::client::Origin::problem`]); `ok` with 200 otherwise.
fn health_body(shared: &Shared, driver: &str) -> (u16, Vec<u8>) {
    let config = &shared.config;
    let problem = shared.upstream.problem();
    let status = if problem.is_some() { 503 } else { 200 };
    let mut body = serde_json::json!({
        "status": if problem.is_some() { "degraded" } else { "ok" },
        "service": "nexus",
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": shared.started.elapsed().as_secs(),
        "config": {
            "upstream": shared.upstream.display,
            "workers": config.workers,
            "driver": driver,
            "credentialsDir": config.credentials_dir.display().to_string(),
            "domainCredentials": shared.credentials.len(),
            "hasDefaultApiKey": config.claude_api_key.is_some(),
            "clientKeysRequired": !config.client_api_keys.is_empty(),
            "telemetry": config.telemetry_endpoint.is_some(),
            "slack": config.slack.enabled && config.slack.webhook_url.is_some(),
            "ledger": shared.ledger.enabled(),
            "adminKeyRequired": config.admin_key.is_some(),
        },
    });
    if let Some(why) = problem {
        body["reason"] = format!("upstream unreachable: {why}").into();
    }
    let body = serde_json::to_vec(&body).expect("a JSON value always serializes");
    (status, body)
}
