//! Why a request could not be forwarded, and the answer the client gets for it.

use std::fmt;

use super::Outcome;
use crate::client::ConnectError;
use crate::clients::client::Refusal;
use crate::conn::BodyError;
use crate::credentials::CredentialError;
use crate::http::chunked::ChunkError;
use crate::http::error::ErrorReply;
use crate::http::response::ResponseHeadError;
use crate::notify::report::Ending;

/// Why a request could not be forwarded.
#[derive(Debug)]
pub enum ProxyError {
    Credential(CredentialError),
    BodyTooLarge(u64),
    /// Holding this body would take request bodies past the process's budget (bytes).
    BodyBudget(u64),
    BadRequestBody(ChunkError),
    /// The client closed or broke its connection.
    ClientGone,
    /// The client paused sending its body for longer than the body timeout.
    ClientBodyTimeout,
    Connect(ConnectError),
    UpstreamWrite(std::io::Error),
    /// The upstream closed or failed before a complete response head.
    UpstreamRead(String),
    /// The upstream reset a reused connection before answering: it had closed the
    /// connection with the request unread (see `exchange`).
    UpstreamReset,
    UpstreamTimeout(u64),
    UpstreamHead(ResponseHeadError),
    UpstreamBody(ChunkError),
    /// The upstream failed after the response had started.
    UpstreamBroke(String),
    /// Every member of the domain's pool is resting; the first frees in this many seconds.
    PoolExhausted {
        domain: String,
        retry_after_s: u64,
    },
    /// The upstream refused the credential of every member of the domain's pool.
    PoolRefused(String),
    /// A named client's lists or limits refused the request (`CLIENTS_FILE`).
    Client(Refusal),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Credential(CredentialError::Missing) => f.write_str("no credential"),
            ProxyError::Credential(e) => write!(f, "{e}"),
            ProxyError::BodyTooLarge(limit) => write!(f, "request body over {limit} bytes"),
            ProxyError::BodyBudget(limit) => write!(
                f,
                "request bodies held in memory would exceed NEXUS_MAX_BUFFERED_MB ({} MiB)",
                limit >> 20
            ),
            ProxyError::BadRequestBody(e) => write!(f, "request body: {e}"),
            ProxyError::ClientGone => f.write_str("client went away"),
            ProxyError::ClientBodyTimeout => f.write_str("client stopped sending its body"),
            ProxyError::Connect(e) => write!(f, "upstream {e}"),
            ProxyError::UpstreamWrite(e) => write!(f, "sending to upstream failed: {e}"),
            ProxyError::UpstreamRead(e) => write!(f, "upstream {e}"),
            ProxyError::UpstreamReset => f.write_str("upstream reset the connection unanswered"),
            ProxyError::UpstreamTimeout(secs) => write!(f, "no upstream response within {secs}s"),
            ProxyError::UpstreamHead(e) => write!(f, "upstream response head: {e:?}"),
            ProxyError::UpstreamBody(e) => write!(f, "upstream response body: {e}"),
            ProxyError::UpstreamBroke(e) => write!(f, "upstream failed mid-response: {e}"),
            ProxyError::PoolExhausted {
                domain,
                retry_after_s,
            } => write!(
                f,
                "every credential of {domain} is cooling down after a rate limit; the first \
                 is free again in {retry_after_s}s"
            ),
            ProxyError::Client(Refusal::Forbidden(why)) => f.write_str(why),
            ProxyError::Client(Refusal::Limited { message, .. }) => f.write_str(message),
            ProxyError::PoolRefused(domain) => write!(
                f,
                "the upstream refused every credential of {domain}; they stay out of service \
                 until the domain's credential file changes"
            ),
        }
    }
}

impl ProxyError {
    /// The answer the client gets, if the response has not started. `None`: just close.
    pub fn reply(&self, upstream: &str) -> Option<ErrorReply> {
        Some(match self {
            ProxyError::Credential(CredentialError::Missing) => ErrorReply::new(
                401,
                "no API credential: send x-api-key or Authorization, set CLAUDE_API_KEY, \
                 or add <domain>.credentials.json to CREDENTIALS_DIR",
            ),
            ProxyError::Credential(CredentialError::InvalidFile(why)) => {
                ErrorReply::new(500, why.clone())
            }
            // Client key refused (401), credential to renew (401), refresh failed (503).
            ProxyError::Credential(e) => ErrorReply::new(e.status(), e.to_string()),
            ProxyError::BodyTooLarge(limit) => ErrorReply::new(
                413,
                format!("request body is larger than {} MiB", limit / (1024 * 1024)),
            ),
            ProxyError::BodyBudget(_) => ErrorReply::new(
                503,
                "nexus is holding as many request bodies in memory as it is allowed to; \
                 retry shortly",
            ),
            ProxyError::BadRequestBody(e) => {
                ErrorReply::new(400, format!("malformed request body: {e}"))
            }
            ProxyError::Connect(e) => {
                ErrorReply::new(502, format!("cannot reach upstream {upstream}: {e}"))
            }
            ProxyError::UpstreamWrite(_)
            | ProxyError::UpstreamRead(_)
            | ProxyError::UpstreamReset => ErrorReply::new(
                502,
                format!("upstream {upstream} closed the connection without a response"),
            ),
            ProxyError::UpstreamTimeout(secs) => ErrorReply::new(
                504,
                format!("upstream {upstream} sent no response within {secs}s"),
            ),
            ProxyError::UpstreamHead(_) | ProxyError::UpstreamBody(_) => {
                ErrorReply::new(502, format!("upstream {upstream} sent an invalid response"))
            }
            ProxyError::ClientBodyTimeout => ErrorReply::new(
                408,
                "the request body stopped arriving before it was complete",
            ),
            ProxyError::PoolExhausted { retry_after_s, .. } => {
                ErrorReply::new(429, self.to_string()).retry_after(*retry_after_s)
            }
            ProxyError::PoolRefused(_) => ErrorReply::new(401, self.to_string()),
            ProxyError::Client(Refusal::Forbidden(why)) => ErrorReply::new(403, why.clone()),
            ProxyError::Client(Refusal::Limited {
                message,
                retry_after,
            }) => ErrorReply::new(429, message.clone()).retry_after(*retry_after),
            ProxyError::ClientGone | ProxyError::UpstreamBroke(_) => return None,
        })
    }

    /// How the request ended, for the side channels (`reply` of the error, if any).
    pub fn ending<'a>(
        result: &Result<Outcome, ProxyError>,
        why: &'a Option<String>,
        upstream: &str,
    ) -> Ending<'a> {
        match (result, why) {
            (Err(e), Some(why)) => match e.reply(upstream) {
                Some(reply) => Ending::Answered {
                    status: reply.status,
                    why,
                },
                None => Ending::Dropped {
                    why,
                    client_gone: matches!(e, ProxyError::ClientGone),
                },
            },
            _ => Ending::Relayed,
        }
    }
}

impl From<BodyError> for ProxyError {
    fn from(e: BodyError) -> ProxyError {
        match e {
            BodyError::Gone => ProxyError::ClientGone,
            BodyError::Stalled => ProxyError::ClientBodyTimeout,
            BodyError::TooLarge(limit) => ProxyError::BodyTooLarge(limit),
            BodyError::OverBudget(limit) => ProxyError::BodyBudget(limit),
            BodyError::Malformed(e) => ProxyError::BadRequestBody(e),
            BodyError::Write(e) => ProxyError::UpstreamWrite(e),
        }
    }
}
