//! What a forwarded request tells the side channels when it ends: the access-log line,
//! the telemetry event and the Slack message. The request path fills a [`Report`] with
//! what it learns anyway; [`Report::finish`] hands the events to the outbox and returns
//! at once. Nothing here waits for a webhook.

use std::borrow::Cow;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::Level;

use super::ledger_row::{self, LedgerNotes};
use super::outbox::{Job, Outbox, SlackJob};
use super::telemetry::TelemetryEvent;
use super::{logger, slack};
use crate::credentials::{domain_from_host, mask, DomainEntry, Entry, UpstreamAuth};
use crate::http::digits::push_decimal;
use crate::http::request::{Method, RequestHead};
use crate::request_id::RequestId;
use crate::stats::{registry, BodyScanner, RequestRecord, SpareScanners};
use crate::usage::{RequestClass, RequestKind, ResponseFacts};

/// How a forwarded request ended, as the side channels need to know it.
#[derive(Debug, Clone, Copy)]
pub enum Ending<'a> {
    /// The upstream's response was relayed to its end.
    Relayed,
    /// nexus answered the client itself with `status`, because of `why`.
    Answered { status: u16, why: &'a str },
    /// No answer could be given (the response had started, or the client left).
    Dropped { why: &'a str, client_gone: bool },
}

impl Ending<'_> {
    fn failure(&self) -> Option<&str> {
        match self {
            Ending::Relayed => None,
            Ending::Answered { why, .. } | Ending::Dropped { why, .. } => Some(why),
        }
    }
}

/// One request's side-channel state.
pub struct Report {
    method: Cow<'static, str>,
    telemetry: bool,
    /// `DEBUG=true`: print the request/response trace.
    pub trace: bool,
    /// Slack is on for this request's domain: `Some(its entry, if it has a file)`.
    slack: Option<Option<Arc<DomainEntry>>>,
    /// The credential that went upstream, masked; kept only for telemetry.
    api_key: Option<String>,
    /// The upstream's status, once its response head arrived.
    pub status: Option<u16>,
    /// The request body's classification (`POST /v1/messages`).
    pub class: Option<RequestClass>,
    /// What the response said (metered responses), once it ended.
    pub facts: Option<ResponseFacts>,
    /// The ledger keeps this request: what only it needs (boxed: most of a request's
    /// life is spent awaiting, and this future is held all that time).
    ledger: Option<Box<LedgerNotes>>,
    /// The response body's start is captured for the trace.
    trace_body: bool,
    /// The named client the request came from (`CLIENTS_FILE`), if any.
    pub client: Option<Arc<str>>,
}

impl Report {
    /// Starts the report of the request whose head is `head` (raw bytes in `raw_head`,
    /// for the method name of methods nexus does not name itself), begun at `started`.
    pub fn start(outbox: &Outbox, head: &RequestHead, raw_head: &[u8], started: Instant) -> Report {
        let hub = outbox.hub();
        let ledger = hub.ledger.enabled().then(|| {
            Box::new(LedgerNotes::new(
                head.session_id.as_deref(),
                hub.ledger.store_bodies(),
                started,
            ))
        });
        Report {
            method: method_name(head.method, raw_head),
            telemetry: hub.telemetry.is_some(),
            trace: hub.trace,
            slack: None,
            api_key: None,
            status: None,
            class: None,
            facts: None,
            ledger,
            trace_body: false,
            client: None,
        }
    }

    /// Whether the response body's start goes to the `DEBUG=true` trace.
    pub fn traces_body(&self) -> bool {
        self.trace_body
    }

    /// The upstream's response head arrived with `status`.
    pub fn response_head(&mut self, status: u16) {
        self.status = Some(status);
        if let Some(notes) = self.ledger.as_mut() {
            notes.first_byte = notes.started.map(|started| started.elapsed());
        }
    }

    /// The held request body (Messages requests), for the ledger.
    pub fn request_body(&mut self, body: &[u8]) {
        if let Some(notes) = self.ledger.as_mut() {
            notes.request_len = Some(body.len() as u64);
            if notes.bodies {
                notes.request_body = Some(body[..body.len().min(crate::ledger::BODY_CAP)].to_vec());
            }
        }
    }

    /// Sets the response scanner up to count (and, when bodies are kept, keep) what is
    /// relayed, for the ledger.
    pub fn watch_response(&mut self, scanner: &mut BodyScanner, trace_limit: Option<usize>) {
        self.trace_body = trace_limit.is_some();
        let keep = match &self.ledger {
            Some(notes) if notes.bodies => crate::ledger::BODY_CAP,
            Some(_) => 0,
            None => match trace_limit {
                Some(limit) => limit,
                None => return,
            },
        };
        scanner.capture(keep.max(trace_limit.unwrap_or(0)));
    }

    /// The response ended (or broke off): takes what its scanner read.
    pub fn response_scanned(&mut self, mut scanner: BodyScanner, spares: &SpareScanners) {
        if let (Some(notes), Some((body, total))) = (self.ledger.as_mut(), scanner.take_captured())
        {
            notes.response_len = total;
            if notes.bodies {
                notes.response_body = Some(body);
            }
        }
        self.facts = scanner.take_facts(spares);
    }

    /// Decides whether this request goes to Slack, from the domain's credential entry;
    /// only `POST /v1/messages` requests should ask.
    pub fn choose_slack(&mut self, outbox: &Outbox, entry: Option<&Entry>) {
        let entry = entry.and_then(|e| e.as_ref().ok());
        let domain = entry.and_then(|e| e.file.slack.as_ref());
        if outbox.hub().slack_enabled(domain) {
            self.slack = Some(entry.cloned());
        }
    }

    /// The model the request was answered by (the response's `model`), else the one it
    /// asked for (the request body's `model`): the one its cost is priced at.
    pub fn model(&self) -> Option<&str> {
        self.facts
            .as_ref()
            .and_then(|f| f.model.as_deref())
            .or_else(|| self.class.as_ref().and_then(|c| c.model.as_deref()))
    }

    /// Whether text must be collected for Slack (the request's last user message, the
    /// response's text and tool inputs).
    pub fn wants_text(&self) -> bool {
        self.slack.is_some()
    }

    /// Notes the credential that goes upstream (masked, for telemetry only).
    pub fn credential(&mut self, auth: &UpstreamAuth<'_>) {
        if self.telemetry {
            let secret = match auth {
                UpstreamAuth::ApiKey(s)
                | UpstreamAuth::OAuthBearer(s)
                | UpstreamAuth::ClientAuthorization(s) => s,
            };
            self.api_key = Some(mask(secret));
        }
    }

    /// The request is over: log it, and queue its telemetry event and Slack message.
    /// `credential`: the id of the domain file's pool member that served it, if one did.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        mut self,
        outbox: &Outbox,
        request_id: &RequestId,
        head: &RequestHead,
        domain: &str,
        credential: Option<&Arc<str>>,
        record: &RequestRecord,
        ending: Ending<'_>,
        duration: Duration,
    ) {
        let status = self.status.unwrap_or(match ending {
            // Nothing came back from upstream: the status is the one nexus answers with;
            // 499 (nginx's "client closed request") when there was no answer at all.
            Ending::Answered { status, .. } => status,
            Ending::Dropped { .. } => 499,
            Ending::Relayed => 0,
        });
        let access_log = log::log_enabled!(Level::Info);
        if !(access_log || self.telemetry || self.slack.is_some() || self.ledger.is_some()) {
            return;
        }
        let error = self.error(status, record, ending);
        if access_log {
            // A proxy error has its own warning line (same id); the API's is shown here.
            let api_error = error.as_deref().filter(|_| ending.failure().is_none());
            logger::info(|line| {
                access_line(
                    line,
                    request_id,
                    domain,
                    &self.method,
                    head.path(),
                    status,
                    duration,
                );
                push_tokens(line, record);
                if let Some(member) = credential {
                    line.extend_from_slice(b" credential=");
                    line.extend_from_slice(member.as_bytes());
                }
                if let Some(client) = &self.client {
                    line.extend_from_slice(b" client=");
                    line.extend_from_slice(client.as_bytes());
                }
                if let Some(error) = api_error {
                    let _ = write!(line, " error={error:?}");
                }
            });
        }
        let model = self
            .facts
            .as_mut()
            .and_then(|f| f.model.take())
            .or_else(|| self.class.as_mut().and_then(|c| c.model.take()));
        if let Some(notes) = self.ledger.take() {
            let row = ledger_row::row(
                *notes,
                ledger_row::Ended {
                    request_id,
                    head,
                    method: &self.method,
                    domain,
                    record,
                    class: self.class.as_ref(),
                    model: model.as_deref(),
                    status,
                    duration,
                    error: error.as_deref(),
                    credential: credential.map(|id| &**id),
                    client: self.client.as_deref(),
                },
            );
            outbox.record_row(row);
        }
        if let Some(entry) = self.slack.take() {
            self.queue_slack(
                outbox,
                request_id,
                domain,
                entry,
                status,
                error.as_deref(),
                ending,
            );
        }
        if self.telemetry {
            let class = self.class.as_ref();
            let event = TelemetryEvent {
                at: SystemTime::now(),
                request_id: *request_id,
                method: self.method,
                path: head.path().to_string(),
                domain: domain.to_string(),
                api_key: self.api_key,
                credential: credential.cloned(),
                client: self.client,
                model,
                input_tokens: record.input_tokens,
                output_tokens: record.output_tokens,
                cache_creation_input_tokens: record.cache_creation_input_tokens,
                cache_read_input_tokens: record.cache_read_input_tokens,
                cost: record.cost(),
                duration_ms: duration.as_millis() as u64,
                status,
                error,
                request_kind: class.map(|c| c.kind),
                tool_calls: record.tool_calls,
                stream: class.is_some_and(|c| c.stream),
            };
            outbox.push(Job::Telemetry(Box::new(event)));
        }
    }

    /// What went wrong, if anything: the proxy's error, the API's `error.type`, or the
    /// status; a stream that ended without `message_stop` counts too.
    fn error(&self, status: u16, record: &RequestRecord, ending: Ending<'_>) -> Option<String> {
        if let Some(why) = ending.failure() {
            return Some(why.to_string());
        }
        let api_error = self.facts.as_ref().and_then(|f| f.error_type.clone());
        if status >= 400 {
            return Some(api_error.unwrap_or_else(|| format!("HTTP {status}")));
        }
        api_error.or_else(|| record.error.then(|| "the response ended early".to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    fn queue_slack(
        &mut self,
        outbox: &Outbox,
        request_id: &RequestId,
        domain: &str,
        entry: Option<Arc<DomainEntry>>,
        status: u16,
        error: Option<&str>,
        ending: Ending<'_>,
    ) {
        // A client that hung up is not news; nor is a query evaluation.
        if matches!(
            ending,
            Ending::Dropped {
                client_gone: true,
                ..
            }
        ) {
            return;
        }
        let kind = self
            .class
            .as_ref()
            .map_or(RequestKind::Unclassified, |c| c.kind);
        if !slack::wanted(kind) {
            return;
        }
        let user = self
            .class
            .as_mut()
            .and_then(|c| c.last_user_text.take())
            .filter(|text| outbox.hub().user_changed(domain, text));
        let error = error.map(|e| {
            if status >= 400 {
                format!("{e} (HTTP {status})")
            } else {
                e.to_string()
            }
        });
        let facts = self.facts.take().unwrap_or_default();
        let Some(text) = slack::message(&slack::Content {
            user: user.as_deref(),
            text: &facts.text,
            tools: &facts.tools,
            tool_calls: facts.tool_calls,
            error: error.as_deref(),
        }) else {
            return;
        };
        outbox.push(Job::Slack(Box::new(SlackJob {
            request_id: *request_id,
            domain: entry,
            client: self.client.clone(),
            text,
        })));
    }
}

/// The access log's common part: `<id> <domain> <method> <path> <status> <ms>ms`.
fn access_line(
    line: &mut Vec<u8>,
    request_id: &RequestId,
    domain: &str,
    method: &str,
    path: &str,
    status: u16,
    duration: Duration,
) {
    for part in [
        request_id.as_bytes(),
        domain.as_bytes(),
        method.as_bytes(),
        path.as_bytes(),
    ] {
        line.extend_from_slice(part);
        line.push(b' ');
    }
    push_decimal(line, status as u64);
    line.push(b' ');
    push_decimal(line, duration.as_millis() as u64);
    line.extend_from_slice(b"ms");
}

/// ` tokens in=… out=… cache_read=… cache_write=… cost_usd=…` for Messages requests
/// (`cost_usd=unpriced` when the model has no price).
fn push_tokens(line: &mut Vec<u8>, r: &RequestRecord) {
    if !r.is_messages {
        return;
    }
    for (name, n) in [
        (&b" tokens in="[..], r.input_tokens),
        (b" out=", r.output_tokens),
        (b" cache_read=", r.cache_read_input_tokens),
        (b" cache_write=", r.cache_creation_input_tokens),
    ] {
        line.extend_from_slice(name);
        push_decimal(line, n);
    }
    match r.cost() {
        Some(cost) => {
            line.extend_from_slice(b" cost_usd=");
            cost.push_to(line);
        }
        None => line.extend_from_slice(b" cost_usd=unpriced"),
    }
}

/// The access-log line of a request nexus answered itself (`/`, `/metrics`, …).
pub fn log_local(
    request_id: &RequestId,
    head: &RequestHead,
    raw_head: &[u8],
    status: u16,
    duration: Duration,
) {
    if !log::log_enabled!(Level::Info) {
        return;
    }
    let domain = match head.host.as_deref().map(domain_from_host) {
        None => registry::NO_HOST.into(),
        Some(None) => registry::INVALID_HOST.into(),
        Some(Some(d)) => Cow::Owned(d.name),
    };
    let method = method_name(head.method, raw_head);
    logger::info(|line| {
        access_line(
            line,
            request_id,
            &domain,
            &method,
            head.path(),
            status,
            duration,
        )
    });
}

/// The method's name: nexus names three; any other is read from the request line.
fn method_name(method: Method, raw_head: &[u8]) -> Cow<'static, str> {
    match method {
        Method::Get => Cow::Borrowed("GET"),
        Method::Head => Cow::Borrowed("HEAD"),
        Method::Post => Cow::Borrowed("POST"),
        Method::Other => {
            let end = raw_head
                .iter()
                .position(|&b| b == b' ')
                .unwrap_or(0)
                .min(32);
            Cow::Owned(String::from_utf8_lossy(&raw_head[..end]).into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_log_shows_the_exact_cost() {
        let mut r = RequestRecord {
            is_messages: true,
            input_tokens: 1,
            cost_picos: 3_000_000,
            ..RequestRecord::default()
        };
        let tokens = |r: &RequestRecord| {
            let mut line = Vec::new();
            push_tokens(&mut line, r);
            String::from_utf8(line).unwrap()
        };
        assert_eq!(
            tokens(&r),
            " tokens in=1 out=0 cache_read=0 cache_write=0 cost_usd=0.000003"
        );
        r.unpriced = true;
        assert!(tokens(&r).ends_with(" cost_usd=unpriced"));
        r.is_messages = false;
        assert_eq!(tokens(&r), "");
    }

    #[test]
    fn method_names() {
        assert_eq!(method_name(Method::Post, b"POST / HTTP/1.1"), "POST");
        assert_eq!(
            method_name(Method::Other, b"DELETE /v1/files/x HTTP/1.1"),
            "DELETE"
        );
        assert_eq!(method_name(Method::Other, b""), "");
    }
}
