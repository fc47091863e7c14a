//! A domain pool's attempts at one request: the chosen member first; when its answer
//! says the member cannot serve (429, 529 or a stream whose first event is
//! `overloaded_error`, 401/403), the same bytes go to the next usable member, each member
//! at most once.
//!
//! Only while no byte of the response has reached the client: the response head is read
//! into `conn.out` and nothing is written before the answer is kept, so a discarded answer
//! leaves no trace. A body that was streamed upstream (not held) cannot be sent twice, and
//! neither can anything after the answer is kept — the one answer that is kept is relayed
//! exactly as the upstream sent it, the last member's 429 included.

use std::sync::Arc;

use super::exchange::{self, Answer};
use super::first_event;
use super::upstream_head::{self, AuthSpan};
use super::{Proxy, ProxyError};
use crate::conn::{ClientConn, HeldBody};
use crate::credentials::affinity::ConversationKey;
use crate::credentials::member_state::{FailoverReason, MemberState};
use crate::credentials::pool::{self, Pick, Tried};
use crate::credentials::token_client::now_ms;
use crate::credentials::verdict::{self, ResponseNotes};
use crate::credentials::{self, Credential, DomainEntry, Member};
use crate::http::request::{BodyFraming, RequestHead};
use crate::notify::{trace, Report};
use crate::request_id::RequestId;
use crate::stats::Meter;

/// What the pool's attempts need besides the connection.
pub struct PoolRequest<'a> {
    pub id: &'a RequestId,
    /// The domain whose file holds the pool.
    pub domain: &'a str,
    pub entry: Arc<DomainEntry>,
    pub key: Option<ConversationKey>,
    /// Messages requests are metered (identity encoding asked for).
    pub metered: bool,
}

/// The member whose answer a request relays: the entry it was read from (the request's
/// own reference to it) and its place there.
pub struct Served {
    entry: Arc<DomainEntry>,
    index: usize,
}

impl Served {
    /// The member as its file names it.
    pub fn member(&self) -> &Member {
        &self.entry.file.members[self.index]
    }

    /// Its live state.
    pub fn live(&self) -> &MemberState {
        &self.entry.members[self.index].live
    }
}

/// Sends the request with the pool's chosen member, failing over as the module says, and
/// returns the answer to relay; `served` then names the member whose answer it is.
#[allow(clippy::too_many_arguments)]
pub async fn exchange(
    conn: &mut ClientConn,
    proxy: &Proxy,
    head: &RequestHead,
    limit: u64,
    body: &mut Option<HeldBody>,
    meter: &mut Meter<'_>,
    report: &mut Report,
    request: PoolRequest<'_>,
    served: &mut Option<Served>,
) -> Result<Answer, ProxyError> {
    let PoolRequest {
        id,
        domain,
        entry,
        key,
        metered,
    } = request;
    let shared = &proxy.shared;
    let pooled = entry.members.len() > 1;
    let replayable = body.is_some() || head.framing == BodyFraming::None;
    let mut tried = Tried::default();
    // The OAuth members refreshed out of turn for this request (once each).
    let mut refreshed = Tried::default();
    let index = first(&entry, key, domain)?;
    // The member being tried, kept where the request's record finds it however it ends.
    let at = served.insert(Served { entry, index });
    let mut span: Option<AuthSpan> = None;
    let answer = loop {
        // An OAuth member near expiry waits for its refresh; in a pool, one that cannot
        // be refreshed is passed over.
        let ready = credentials::ready_member(
            &shared.credentials,
            &proxy.credentials,
            domain,
            &mut at.entry,
            &mut at.index,
        )
        .await;
        if let Err(e) = ready {
            tried.add(at.index);
            match pool::pick(&at.entry, key, tried, now_ms()) {
                Pick::Member(next) if pooled => {
                    log::warn!("{id} {e}; trying another member of the pool");
                    at.index = next;
                    continue;
                }
                _ => return Err(ProxyError::Credential(e)),
            }
        }

        // Send the request with this member's credential.
        let member = &at.entry.file.members[at.index];
        let live = &at.entry.members[at.index].live;
        let auth = credentials::member_auth(member);
        log::debug!("{id} credential: member {} {auth}", member.id);
        report.credential(&auth);
        span = Some(match span {
            None => upstream_head::finish(conn, head, &auth, body.as_mut(), metered),
            Some(span) => upstream_head::replace_auth(conn, span, head, &auth),
        });
        if report.trace {
            trace::forwarded(id, &auth, conn.upstream_head());
        }
        live.attempted();
        let mut notes = ResponseNotes::default();
        let notes_wanted = pooled.then_some(&mut notes);
        let mut answer =
            exchange::exchange(conn, proxy, head, limit, body, meter, notes_wanted).await?;
        if !pooled {
            break answer;
        }

        // What the answer says of the member, and whether the request goes on.
        let now = now_ms();
        if let Some((left, reset_s)) = notes.figures().headroom() {
            live.headroom.set(left, reset_s);
        }
        let status = answer.head.status;
        let mut reason = verdict::failover_reason(status);
        if reason.is_none()
            && status == 200
            && answer.head.event_stream
            && replayable
            && first_event::overloaded(conn, proxy, &mut answer).await?
        {
            reason = Some(FailoverReason::Overloaded);
        }
        let Some(reason) = reason else {
            pool::pin(&at.entry, key, at.index, now);
            break answer;
        };
        let retry_oauth = reason == FailoverReason::Refused
            && replayable
            && refreshable(&at.entry, at.index)
            && !refreshed.has(at.index);
        if !retry_oauth {
            tried.add(at.index);
            if let Some(until) = rest(domain, &member.id, live, reason, status, &notes, now) {
                shared.ledger.share_rest(domain, &member.id, until);
            }
        }
        let next = match (retry_oauth, replayable) {
            (true, _) => at.index,
            (false, true) => match pool::pick(&at.entry, key, tried, now) {
                Pick::Member(next) => next,
                // No member left to try: the upstream's own answer goes to the client.
                _ => break answer,
            },
            (false, false) => break answer,
        };
        // Its body is not read: the connection goes, the buffer comes back.
        let Answer { buf, .. } = answer;
        proxy.give_buffer(buf);
        if !retry_oauth {
            live.failed_over(reason);
            log::info!(
                "{id} {domain}: member {} answered {status} ({}); sending the request to \
                 member {}",
                member.id,
                reason.label(),
                at.entry.file.members[next].id
            );
            at.index = next;
            continue;
        }

        // A refused OAuth token may have been revoked early: one refresh, out of turn,
        // and one more try with the new token before the member is disabled.
        refreshed.add(at.index);
        let renewed = credentials::refresh_refused(
            &shared.credentials,
            &proxy.credentials,
            domain,
            &mut at.entry,
            &mut at.index,
        )
        .await;
        if renewed {
            log::info!(
                "{id} {domain}: member {} refreshed after {status}; trying it again",
                at.entry.file.members[at.index].id
            );
            continue;
        }
        // Not renewed, and its answer is gone: the member is disabled and passed over;
        // with no member left, the client gets the refusal as nexus's own.
        let live = &at.entry.members[at.index].live;
        tried.add(at.index);
        rest(
            domain,
            &at.entry.file.members[at.index].id,
            live,
            reason,
            status,
            &notes,
            now_ms(),
        );
        live.failed_over(reason);
        match pool::pick(&at.entry, key, tried, now_ms()) {
            Pick::Member(next) => at.index = next,
            _ => return Err(ProxyError::PoolRefused(domain.to_string())),
        }
    };
    Ok(answer)
}

/// Whether member `index` holds an OAuth token that a refresh can replace.
fn refreshable(entry: &DomainEntry, index: usize) -> bool {
    matches!(
        &entry.file.members[index].credential,
        Credential::OAuth(tokens) if tokens.refresh_token.is_some()
    )
}

/// The member a request starts with, or the answer for a pool with none to give.
fn first(
    entry: &DomainEntry,
    key: Option<ConversationKey>,
    domain: &str,
) -> Result<usize, ProxyError> {
    match pool::pick(entry, key, Tried::default(), now_ms()) {
        Pick::Member(i) => Ok(i),
        Pick::Exhausted { retry_after_s } => Err(ProxyError::PoolExhausted {
            domain: domain.to_string(),
            retry_after_s,
        }),
        Pick::Refused => Err(ProxyError::PoolRefused(domain.to_string())),
    }
}

/// Takes a member out of service after an answer that said it cannot serve: a rest until
/// the moment the answer names, or, for a refused credential, until its file changes.
/// Returns the rest's end, which the fleet is told (a refusal stays this process's: the
/// others' files may hold another secret for the member).
fn rest(
    domain: &str,
    id: &str,
    live: &MemberState,
    reason: FailoverReason,
    status: u16,
    notes: &ResponseNotes,
    now: u64,
) -> Option<u64> {
    if reason == FailoverReason::Refused {
        if live.disable() {
            log::warn!(
                "credentials: {domain}: member {id} disabled: the upstream answered {status} \
                 to its credential; it stays out of service until the domain's file changes"
            );
        }
        return None;
    }
    let until = notes.rest_until_ms(reason, now);
    if live.cool_until(until, now) {
        log::warn!(
            "credentials: {domain}: member {id} cools down for {}s after {status} ({})",
            (until - now).div_ceil(1000),
            reason.label()
        );
    }
    Some(until)
}
