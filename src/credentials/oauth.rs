//! OAuth refresh: ahead of expiry, single-flight per pool member, persisted atomically
//! into the domain's file (every other member and field kept), coordinated across
//! processes with `flock` on the file.
//!
//! One scheduler thread looks at the snapshot every second (and at once when a request
//! asks) and starts a refresh job thread for each credential that is due and has none
//! running. A job takes the credential's lock file, re-reads the file (another process
//! may have refreshed it already), POSTs the refresh token, writes the new tokens with
//! every other field kept, and publishes them: the file and the in-memory copy switch
//! together. Workers never block on any of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::counters::COUNTERS;
use super::file::{apply_tokens, parse_value, Credential, OAuthTokens};
use super::mask::mask;
use super::persist::{lock_path, write_atomically, FileLock};
use super::refresh_board::RefreshBoard;
use super::refresh_errors;
use super::store::{read_bounded, CredentialStore, RefreshState};
use super::token_client::{now_ms, RefreshError, TokenEndpoint};
use super::wait::who;
use crate::config::Config;

/// Background refresh starts this long before a token expires.
pub const REFRESH_AHEAD_MS: u64 = 5 * 60 * 1000;
/// How often the scheduler looks for due credentials without being asked.
const TICK: Duration = Duration::from_secs(1);
/// Retry delays after transient failures: 1 s, 2 s, 4 s, … up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Whether the background refresh should run for these tokens now.
pub fn due(tokens: &OAuthTokens, now_ms: u64) -> bool {
    tokens.refresh_token.is_some()
        && tokens
            .expires_at
            .is_some_and(|at| at <= now_ms.saturating_add(REFRESH_AHEAD_MS))
}

/// Refreshes the store's OAuth credentials: a scheduler thread plus one job thread per
/// refresh. It changes the store only through the store's publishing methods, and tells
/// waiting requests what it does through the store's [`RefreshBoard`].
///
/// [`RefreshBoard`]: super::refresh_board::RefreshBoard
pub struct OAuthRefresher {
    store: Arc<CredentialStore>,
    endpoint: TokenEndpoint,
}

impl OAuthRefresher {
    /// Starts the refresh scheduler for `store` with `OAUTH_TOKEN_URL` (TLS roots as for
    /// the upstream). A second call for the same store does nothing.
    pub fn start(store: &Arc<CredentialStore>, config: &Config) -> Result<(), String> {
        let endpoint = TokenEndpoint::new(
            &config.oauth_token_url,
            || crate::client::tls::client_config(config.upstream_ca_file.as_deref()),
            config.oauth_timeout,
        )?;
        // A request may wait for the token request itself, plus for another process that
        // holds the lock, plus slack.
        let wait_limit = endpoint.timeout * 2 + Duration::from_secs(2);
        if !store.refresh_board().open(wait_limit) {
            return Ok(());
        }
        let refresher = Arc::new(OAuthRefresher {
            store: Arc::clone(store),
            endpoint,
        });
        std::thread::Builder::new()
            .name("nexus-oauth".into())
            .spawn(move || refresher.schedule_forever())
            .map_err(|e| format!("cannot start the OAuth refresh thread: {e}"))?;
        Ok(())
    }

    fn schedule_forever(self: Arc<Self>) {
        loop {
            self.start_due_jobs();
            COUNTERS.checked_refreshes();
            self.store.refresh_board().wait_for_demand(TICK);
        }
    }

    /// Starts a job for every OAuth member that is due, not failed for good, past its
    /// backoff, and not already being refreshed.
    fn start_due_jobs(self: &Arc<Self>) {
        let now = now_ms();
        let instant = Instant::now();
        let board = self.store.refresh_board();
        for (domain, entry) in self.store.current().iter() {
            let Ok(entry) = entry else { continue };
            for (member, state) in entry.file.members.iter().zip(entry.members.iter()) {
                let Credential::OAuth(tokens) = &member.credential else {
                    continue;
                };
                let key = RefreshBoard::key(domain, &member.id);
                if !due(tokens, now) && !board.is_forced(&key, &tokens.access_token) {
                    continue;
                }
                match state.refresh {
                    RefreshState::InvalidGrant => continue,
                    RefreshState::Failing { retry_at, .. } if retry_at > instant => continue,
                    _ => {}
                }
                if !board.claim(&key) {
                    continue;
                }
                COUNTERS.started_refresh();
                let refresher = Arc::clone(self);
                let job = Job {
                    domain: domain.clone(),
                    id: Arc::clone(&member.id),
                    who: who(domain, entry, &member.id),
                };
                let spawned = std::thread::Builder::new()
                    .name("nexus-oauth-job".into())
                    .spawn({
                        let key = key.clone();
                        move || {
                            refresher.refresh_member(&job);
                            let board = refresher.store.refresh_board();
                            board.unforce(&key);
                            board.release(&key);
                        }
                    });
                if let Err(e) = spawned {
                    log::error!("credentials: cannot start a refresh for {domain}: {e}");
                    board.release(&key);
                }
            }
        }
    }

    /// One refresh of one member, start to end. Runs on its own thread.
    fn refresh_member(&self, job: &Job) {
        let Job { domain, id, who } = job;
        let (domain, id) = (domain.as_str(), &**id);
        let store = &*self.store;
        let endpoint = &self.endpoint;
        let path = store.file_path(domain);
        let lock_wait = endpoint.timeout + Duration::from_secs(2);
        let lock = match FileLock::try_acquire(&lock_path(&path)) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => {
                log::info!("credentials: {domain}: another process is refreshing; waiting for it");
                FileLock::acquire(&lock_path(&path), lock_wait)
            }
            Err(e) => Err(e),
        };
        let _lock = match lock {
            Ok(lock) => lock,
            Err(e) => {
                // Without the lock another process may be refreshing: stepping in could
                // spend the refresh token twice. Try again later.
                let why = format!("cannot lock {}: {e}", lock_path(&path).display());
                if let Some(refresh_token) = self.refresh_token_of(domain, id) {
                    self.record_failure(job, &refresh_token, &why);
                }
                return;
            }
        };

        // Under the lock, the file is the truth: another process may have refreshed it.
        let Ok(text) = read_bounded(&path) else {
            return; // deleted meanwhile: the scanner drops it
        };
        let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(&text) else {
            return; // broken meanwhile: the scanner reports it
        };
        let Ok(file) = parse_value(&doc) else { return };
        let Some(Credential::OAuth(tokens)) =
            file.position(id).map(|i| &file.members[i].credential)
        else {
            store.publish_file(domain, file, text);
            return;
        };
        let forced = store
            .refresh_board()
            .is_forced(&RefreshBoard::key(domain, id), &tokens.access_token);
        if !due(tokens, now_ms()) && !forced {
            log::info!("credentials: {who}: token already refreshed (by another process)");
            store.publish_file(domain, file, text);
            return;
        }
        let Some(refresh_token) = tokens.refresh_token.clone() else {
            return;
        };
        // The file may hold other tokens than the snapshot (changed by hand or by another
        // process); publish them first so the outcome below is recorded against them.
        if !matches!(store.current().get(domain), Some(Ok(entry)) if entry.file == file) {
            store.publish_file(domain, file.clone(), text.clone());
        }
        let started = Instant::now();
        log::debug!(
            "credentials: {who}: refreshing with refresh token {}",
            mask(&refresh_token)
        );
        match endpoint.refresh(&refresh_token) {
            Ok(new) => {
                if let Err(why) = apply_tokens(&mut doc, id, &new) {
                    log::error!("credentials: {who}: cannot update the file: {why}");
                    return;
                }
                if read_bounded(&path).as_ref() != Ok(&text) {
                    // Replaced during the POST by something that does not take the lock (an
                    // operator renewing it): their file wins, ours would overwrite it.
                    log::warn!(
                        "credentials: {who}: {} changed during the refresh; keeping the \
                         new file and discarding the refreshed token",
                        path.display()
                    );
                    return;
                }
                let mut new_text = serde_json::to_vec_pretty(&doc).expect("JSON always serializes");
                new_text.push(b'\n');
                let written = write_atomically(&path, &new_text);
                let Ok(file) = parse_value(&doc) else { return };
                let previous = match store.current().get(domain) {
                    Some(Ok(entry)) => entry.file.position(id).map(|i| entry.members[i].refresh),
                    _ => None,
                };
                match written {
                    Ok(()) => store.publish_file(domain, file, new_text),
                    Err(e) => {
                        // The old refresh token may already be spent: keep the new one in
                        // memory so this process keeps working, and say so loudly.
                        log::error!(
                            "credentials: {who}: refreshed, but cannot save {}: {e}; \
                             the new token lives in memory only and the file must be \
                             renewed before nexus restarts",
                            path.display()
                        );
                        // The old file is still on disk: the scanner keeps this entry
                        // until the file really changes.
                        store.publish_file(domain, file, text);
                    }
                }
                refresh_errors::record(&refresh_errors::path_for(&path, domain), id, None);
                if let Some(RefreshState::Failing { failures, .. }) = previous {
                    log::info!(
                        "credentials: {who}: refresh recovered after {failures} failed attempt(s)"
                    );
                }
                log::info!(
                    "credentials: {who}: OAuth token refreshed in {} ms (new token {}, expires in {} s)",
                    started.elapsed().as_millis(),
                    mask(&new.access_token),
                    new.expires_at.saturating_sub(now_ms()) / 1000
                );
            }
            Err(RefreshError::InvalidGrant) => {
                let previous = store
                    .set_refresh_state(domain, id, &refresh_token, |_| RefreshState::InvalidGrant);
                refresh_errors::record(
                    &refresh_errors::path_for(&path, domain),
                    id,
                    Some((
                        "the token endpoint refused the refresh token (invalid_grant)",
                        now_ms(),
                    )),
                );
                if previous.is_some_and(|p| p != RefreshState::InvalidGrant) {
                    log::error!(
                        "credentials: {who}: the token endpoint refused the refresh token \
                         (invalid_grant); no further attempts until {} changes — renew it",
                        path.display()
                    );
                }
            }
            Err(RefreshError::Transient(why)) => {
                self.record_failure(job, &refresh_token, &why);
            }
        }
    }

    fn refresh_token_of(&self, domain: &str, id: &str) -> Option<String> {
        match self.store.current().get(domain) {
            Some(Ok(entry)) => match &entry.file.members[entry.file.position(id)?].credential {
                Credential::OAuth(tokens) => tokens.refresh_token.clone(),
                Credential::ApiKey { .. } => None,
            },
            _ => None,
        }
    }

    /// Counts a transient failure and schedules the retry; logs the first of a streak.
    fn record_failure(&self, job: &Job, refresh_token: &str, why: &str) {
        let Job { domain, id, who } = job;
        let mut failures = 0;
        self.store
            .set_refresh_state(domain, id, refresh_token, |previous| {
                failures = match previous {
                    RefreshState::Failing { failures, .. } => failures + 1,
                    _ => 1,
                };
                RefreshState::Failing {
                    failures,
                    retry_at: Instant::now() + backoff(failures),
                }
            });
        if failures == 1 {
            let record = refresh_errors::path_for(&self.store.file_path(domain), domain);
            refresh_errors::record(&record, id, Some((why, now_ms())));
        }
        match failures {
            0 => {}
            1 => log::warn!(
                "credentials: {who}: OAuth refresh failed: {why}; retrying with backoff, \
                 the current token is used while it is valid"
            ),
            n => log::debug!("credentials: {who}: OAuth refresh failed again ({n}): {why}"),
        }
    }
}

/// One refresh job: which member, and how the log names it.
struct Job {
    domain: String,
    id: Arc<str>,
    who: String,
}

/// Delay before retry number `failures` (1-based): 1 s, 2 s, 4 s, … capped.
fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn due_five_minutes_ahead_and_only_with_a_refresh_token() {
        let tokens = |expires_at, refresh: Option<&str>| OAuthTokens {
            access_token: "a".into(),
            refresh_token: refresh.map(Into::into),
            expires_at,
        };
        let now = 1_000_000_000;
        assert!(due(&tokens(Some(now), Some("r")), now));
        assert!(due(&tokens(Some(now + REFRESH_AHEAD_MS), Some("r")), now));
        assert!(!due(
            &tokens(Some(now + REFRESH_AHEAD_MS + 1), Some("r")),
            now
        ));
        assert!(!due(&tokens(Some(now), None), now));
        assert!(!due(&tokens(None, Some("r")), now));
    }
}
