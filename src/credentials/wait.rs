//! The request side of OAuth refresh: a request whose member's token has expired, or
//! expires within a minute, waits for the one refresh in flight instead of starting its
//! own.
//!
//! This is the rare path. The wait is a short async sleep polling the store's generation,
//! so the worker thread keeps serving every other connection meanwhile; it is bounded by
//! the refresh timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::counters::COUNTERS;
use super::file::Credential;
use super::refresh_board::RefreshBoard;
use super::store::{CredentialStore, DomainEntry, LocalView, RefreshState};
use super::token_client::now_ms;
use super::{CredentialError, Renew};

/// A token this close to expiry is not sent while a refresh can replace it.
pub const EXPIRY_MARGIN_MS: u64 = 60 * 1000;
/// How often a waiting request looks for the refreshed token.
const POLL: Duration = Duration::from_millis(20);

/// What a request does with the entry it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Go with the entry as it is.
    Use,
    /// A refresh is due or running: look again shortly.
    Wait,
    /// The token has expired and cannot be refreshed.
    Renew(Renew),
    /// The token has expired and refreshing it failed for now.
    RefreshFailed,
}

/// What the waiting request saw first, to recognise the refresh's outcome.
pub(super) struct Start {
    access_token: String,
    failures: u32,
}

impl Start {
    fn of(credential: &Credential, refresh: RefreshState) -> Start {
        Start {
            access_token: match credential {
                Credential::OAuth(tokens) => tokens.access_token.clone(),
                Credential::ApiKey { api_key } => api_key.clone(),
            },
            failures: failures(refresh),
        }
    }
}

fn failures(state: RefreshState) -> u32 {
    match state {
        RefreshState::Failing { failures, .. } => failures,
        _ => 0,
    }
}

/// Whether the credential is an OAuth token that expires within [`EXPIRY_MARGIN_MS`].
fn near_expiry(credential: &Credential, now_ms: u64) -> bool {
    match credential {
        Credential::OAuth(tokens) => tokens
            .expires_at
            .is_some_and(|at| now_ms.saturating_add(EXPIRY_MARGIN_MS) >= at),
        Credential::ApiKey { .. } => false,
    }
}

/// The rule, as a pure function of what the request can see.
pub(super) fn decide(
    credential: &Credential,
    refresh: RefreshState,
    start: &Start,
    now_ms: u64,
    refreshing: impl FnOnce() -> bool,
) -> Decision {
    if !near_expiry(credential, now_ms) {
        return Decision::Use;
    }
    let Credential::OAuth(tokens) = credential else {
        return Decision::Use;
    };
    let expires_at = tokens.expires_at.unwrap_or(0);
    let expired = now_ms >= expires_at;
    if tokens.access_token != start.access_token && !expired {
        return Decision::Use; // refreshed, even if the new token is short-lived
    }
    let unless_expired = |failure| if expired { failure } else { Decision::Use };
    if tokens.refresh_token.is_none() {
        return unless_expired(Decision::Renew(Renew::NoRefreshToken));
    }
    match refresh {
        RefreshState::InvalidGrant => unless_expired(Decision::Renew(Renew::InvalidGrant)),
        RefreshState::Failing { failures, .. } if failures > start.failures => {
            unless_expired(Decision::RefreshFailed)
        }
        // Failing already when the request came: wait for a retry in flight, if any.
        RefreshState::Failing { .. } if expired && refreshing() => Decision::Wait,
        RefreshState::Failing { .. } => unless_expired(Decision::RefreshFailed),
        RefreshState::Ok => Decision::Wait,
    }
}

/// Makes member `*index` of `*entry` ready to use: an OAuth token near expiry has been
/// refreshed (or the request waited for the refresh in flight), or the error says why it
/// cannot be. When a refresh published a new entry, `entry` and `index` are updated to it.
pub async fn ready_member(
    store: &CredentialStore,
    view: &LocalView,
    domain: &str,
    entry: &mut Arc<DomainEntry>,
    index: &mut usize,
) -> Result<(), CredentialError> {
    let member = &entry.file.members[*index];
    // The hot path: an API key, or a token not about to expire. No lock, no allocation.
    if !near_expiry(&member.credential, now_ms()) {
        return Ok(());
    }
    let id = member.id.clone();
    let key = RefreshBoard::key(domain, &id);
    let who = who(domain, entry, &id);
    let start = Start::of(&member.credential, entry.members[*index].refresh);
    let _waiting = COUNTERS.waiting();
    let deadline = Instant::now() + store.refresh_board().wait_limit();
    let mut asked = false;
    loop {
        // A member removed meanwhile keeps the request on what it had.
        if let Some(Ok(now_entry)) = store.lookup(view, domain) {
            if let Some(i) = now_entry.file.position(&id) {
                *entry = now_entry;
                *index = i;
            }
        }
        let credential = &entry.file.members[*index].credential;
        let now = now_ms();
        match decide(
            credential,
            entry.members[*index].refresh,
            &start,
            now,
            || store.refresh_board().is_refreshing(&key),
        ) {
            Decision::Use => return Ok(()),
            Decision::Renew(why) => return Err(CredentialError::Renew(who, why)),
            Decision::RefreshFailed => return Err(CredentialError::RefreshFailed(who)),
            Decision::Wait => {}
        }
        if Instant::now() >= deadline {
            let expired = match credential {
                Credential::OAuth(tokens) => tokens.expires_at.is_some_and(|at| now >= at),
                Credential::ApiKey { .. } => false,
            };
            return if expired {
                Err(CredentialError::RefreshFailed(who))
            } else {
                Ok(())
            };
        }
        if !asked {
            store.refresh_board().demand();
            asked = true;
        }
        monoio::time::sleep(POLL).await;
    }
}

/// After the upstream refused member `*index`'s OAuth token (401/403): has it refreshed
/// once, out of turn, and waits for the outcome. True when a new token is in place
/// (`entry` and `index` then name it); false when the member cannot be refreshed, the
/// refresh failed, or it took longer than a refresh may.
pub async fn refresh_refused(
    store: &CredentialStore,
    view: &LocalView,
    domain: &str,
    entry: &mut Arc<DomainEntry>,
    index: &mut usize,
) -> bool {
    let member = &entry.file.members[*index];
    let Credential::OAuth(tokens) = &member.credential else {
        return false;
    };
    let state = entry.members[*index].refresh;
    let wait_limit = store.refresh_board().wait_limit();
    if tokens.refresh_token.is_none() || state == RefreshState::InvalidGrant || wait_limit.is_zero()
    {
        return false;
    }
    let id = member.id.clone();
    let refused = tokens.access_token.clone();
    let failures_before = failures(state);
    store
        .refresh_board()
        .force(&RefreshBoard::key(domain, &id), &refused);
    let _waiting = COUNTERS.waiting();
    let deadline = Instant::now() + wait_limit;
    while Instant::now() < deadline {
        monoio::time::sleep(POLL).await;
        let Some(Ok(now_entry)) = store.lookup(view, domain) else {
            return false;
        };
        let Some(i) = now_entry.file.position(&id) else {
            return false;
        };
        match (
            &now_entry.file.members[i].credential,
            now_entry.members[i].refresh,
        ) {
            (Credential::OAuth(tokens), _) if tokens.access_token != refused => {
                *entry = now_entry;
                *index = i;
                return true;
            }
            (_, RefreshState::InvalidGrant) => return false,
            (_, state) if failures(state) > failures_before => return false,
            _ => {}
        }
    }
    false
}

/// How messages name a credential: the domain, and the member of a pool.
pub fn who(domain: &str, entry: &DomainEntry, id: &str) -> String {
    if entry.file.pool {
        format!("{domain} (member {id})")
    } else {
        domain.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::file::OAuthTokens;

    /// A member as `decide` sees it: its credential and its refresh state.
    struct Seen(Credential, RefreshState);

    fn entry(access: &str, refresh: Option<&str>, expires_at: u64, state: RefreshState) -> Seen {
        Seen(
            Credential::OAuth(OAuthTokens {
                access_token: access.into(),
                refresh_token: refresh.map(Into::into),
                expires_at: Some(expires_at),
            }),
            state,
        )
    }

    impl Start {
        fn at(seen: &Seen) -> Start {
            Start::of(&seen.0, seen.1)
        }
    }

    fn decide(
        seen: &Seen,
        start: &Start,
        now_ms: u64,
        refreshing: impl FnOnce() -> bool,
    ) -> Decision {
        super::decide(&seen.0, seen.1, start, now_ms, refreshing)
    }

    const NOW: u64 = 10_000_000;

    #[test]
    fn fresh_tokens_are_used_and_near_expiry_waits() {
        let fresh = entry("a", Some("r"), NOW + 120_000, RefreshState::Ok);
        assert_eq!(
            decide(&fresh, &Start::at(&fresh), NOW, || false),
            Decision::Use
        );
        let near = entry("a", Some("r"), NOW + 30_000, RefreshState::Ok);
        assert_eq!(
            decide(&near, &Start::at(&near), NOW, || true),
            Decision::Wait
        );
        let expired = entry("a", Some("r"), NOW - 1, RefreshState::Ok);
        assert_eq!(
            decide(&expired, &Start::at(&expired), NOW, || false),
            Decision::Wait
        );
        // Refreshed to a new (if short-lived) token: go.
        let start = Start::at(&near);
        let refreshed = entry("b", Some("r2"), NOW + 30_000, RefreshState::Ok);
        assert_eq!(decide(&refreshed, &start, NOW, || false), Decision::Use);
    }

    #[test]
    fn failures_serve_the_old_token_while_valid_then_fail() {
        let ok = entry("a", Some("r"), NOW + 30_000, RefreshState::Ok);
        let start = Start::at(&ok);
        let dead = entry("a", Some("r"), NOW + 30_000, RefreshState::InvalidGrant);
        assert_eq!(decide(&dead, &start, NOW, || false), Decision::Use);
        let dead = entry("a", Some("r"), NOW, RefreshState::InvalidGrant);
        assert_eq!(
            decide(&dead, &start, NOW, || false),
            Decision::Renew(Renew::InvalidGrant)
        );
        let failing = RefreshState::Failing {
            failures: 1,
            retry_at: Instant::now(),
        };
        let flaky = entry("a", Some("r"), NOW + 30_000, failing);
        assert_eq!(decide(&flaky, &start, NOW, || true), Decision::Use);
        let flaky = entry("a", Some("r"), NOW - 5, failing);
        assert_eq!(
            decide(&flaky, &start, NOW, || true),
            Decision::RefreshFailed,
            "a new failure"
        );
        // Already failing when the request came: wait for the retry in flight, if any.
        let start = Start::at(&flaky);
        assert_eq!(decide(&flaky, &start, NOW, || true), Decision::Wait);
        assert_eq!(
            decide(&flaky, &start, NOW, || false),
            Decision::RefreshFailed
        );
        let no_refresh = entry("a", None, NOW, RefreshState::Ok);
        assert_eq!(
            decide(&no_refresh, &Start::at(&no_refresh), NOW, || false),
            Decision::Renew(Renew::NoRefreshToken)
        );
    }
}
