//! Host name resolution, off the worker threads: one background thread for the process.
//!
//! monoio's `TcpStream::connect` with a host name would call the blocking resolver on the
//! worker. Instead every origin holds a [`Host`] here; the `nexus-resolver` thread
//! resolves it and connects read the latest addresses. A *watched* host (the upstream)
//! is re-resolved every minute (every second while it fails) whether or not anyone
//! connects; any other host (webhooks, the token endpoint) is resolved when a connect
//! asks and its answer kept for a minute. IP literals need no lookup at all.
//!
//! A host that keeps failing is logged once when the failure streak starts and once when
//! it recovers, not on every retry.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

/// A watched host is re-resolved this often while it resolves…
const WATCH_REFRESH: Duration = Duration::from_secs(60);
/// …and this often while it does not.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// An on-demand host's addresses are looked up again after this.
const FRESH_FOR: Duration = Duration::from_secs(60);
/// A failed on-demand lookup is retried no sooner than this.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Hosts remembered at most (per-domain Slack webhooks come and go with credential files).
const MAX_HOSTS: usize = 1024;

/// What is known about a host's addresses right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Addresses to try, in the resolver's order.
    Ready(Arc<[SocketAddr]>),
    /// Being resolved; ask again shortly.
    Pending,
    /// The last attempt failed with this and no earlier answer is kept.
    Failed(String),
}

#[derive(Default)]
struct Answer {
    /// The last good addresses, kept through later failures: a DNS hiccup must not take
    /// a working origin down.
    addrs: Option<Arc<[SocketAddr]>>,
    /// Why the latest attempt failed, while it is failing.
    error: Option<String>,
    /// When the latest attempt ended.
    at: Option<Instant>,
    /// Failed attempts in the current failure streak.
    failures: u64,
}

/// One host name (or IP literal) and port, and what resolving it produced.
pub struct Host {
    name: String,
    port: u16,
    watched: bool,
    answer: RwLock<Answer>,
    /// Queued for the resolver thread (never twice).
    queued: Mutex<bool>,
    resolver: Weak<Resolver>,
}

impl Host {
    /// The host name or IP literal.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The addresses to connect to. An on-demand host whose answer is stale is queued
    /// for the resolver thread (its stale addresses are still returned meanwhile).
    pub fn lookup(&self) -> Lookup {
        let (lookup, due) = {
            let answer = self.answer.read().unwrap_or_else(|e| e.into_inner());
            let age = answer.at.map(|at| at.elapsed());
            let due = !self.watched
                && match (&answer.addrs, age) {
                    (_, None) => true,
                    (Some(_), Some(age)) => age >= FRESH_FOR,
                    (None, Some(age)) => age >= RETRY_AFTER,
                };
            let lookup = match (&answer.addrs, &answer.error) {
                (Some(addrs), _) => Lookup::Ready(Arc::clone(addrs)),
                (None, Some(error)) if !due => Lookup::Failed(error.clone()),
                _ => Lookup::Pending,
            };
            (lookup, due)
        };
        if due {
            if let Some(resolver) = self.resolver.upgrade() {
                resolver.enqueue(self);
            }
        }
        lookup
    }

    /// Why this host has no address to connect to, if it has none: never resolved, and
    /// the latest attempt failed. `None` while it resolves or kept an earlier answer.
    pub fn problem(&self) -> Option<String> {
        let answer = self.answer.read().unwrap_or_else(|e| e.into_inner());
        match (&answer.addrs, &answer.error) {
            (None, Some(error)) => Some(error.clone()),
            _ => None,
        }
    }

    /// Resolves now, on the calling thread, and records the outcome.
    fn resolve(&self) {
        let result = (self.name.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.name))
            .and_then(|found| {
                let found: Arc<[SocketAddr]> = found.collect();
                if found.is_empty() {
                    Err(format!("{} resolved to no address", self.name))
                } else {
                    Ok(found)
                }
            });
        let mut answer = self.answer.write().unwrap_or_else(|e| e.into_inner());
        let was_failing = answer.error.is_some();
        answer.at = Some(Instant::now());
        match result {
            Ok(found) => {
                if was_failing {
                    log::info!("{} resolves again, to {:?}", self.name, &*found);
                } else if self.watched && answer.addrs.as_deref() != Some(&*found) {
                    log::info!("{} resolves to {:?}", self.name, &*found);
                }
                answer.addrs = Some(found);
                answer.error = None;
                answer.failures = 0;
            }
            Err(why) => {
                answer.failures += 1;
                if was_failing {
                    log::debug!("{why} (attempt {} of this failure streak)", answer.failures);
                } else {
                    let kept = if answer.addrs.is_some() {
                        "; keeping its last addresses"
                    } else {
                        ""
                    };
                    log::warn!("{why}{kept} (retrying quietly; logged again when it resolves)");
                }
                answer.error = Some(why);
            }
        }
        *self.queued.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }

    /// When the resolver thread should next resolve this watched host.
    fn next_due(&self) -> Option<Instant> {
        let answer = self.answer.read().unwrap_or_else(|e| e.into_inner());
        let wait = if answer.error.is_some() {
            WATCH_RETRY
        } else {
            WATCH_REFRESH
        };
        Some(answer.at? + wait)
    }
}

#[derive(Default)]
struct State {
    hosts: HashMap<(String, u16), Arc<Host>>,
    queue: VecDeque<Arc<Host>>,
    thread_started: bool,
}

/// The process's resolver: a table of hosts and the one thread that resolves them.
#[derive(Default)]
pub struct Resolver {
    state: Mutex<State>,
    wake: Condvar,
}

impl Resolver {
    /// A resolver of its own (tests); nexus uses [`Resolver::shared`].
    pub fn new() -> Arc<Resolver> {
        Arc::new(Resolver::default())
    }

    /// The one resolver every origin in the process uses.
    pub fn shared() -> Arc<Resolver> {
        static SHARED: OnceLock<Arc<Resolver>> = OnceLock::new();
        Arc::clone(SHARED.get_or_init(Resolver::new))
    }

    /// A host resolved when a connect asks (and cached for a minute).
    pub fn host(self: &Arc<Self>, name: &str, port: u16) -> Arc<Host> {
        self.entry(name, port, false)
    }

    /// A host kept resolved in the background. Resolved once now, on the calling thread
    /// (start-up, never a worker), so its state is known before anything connects.
    pub fn watch(self: &Arc<Self>, name: &str, port: u16) -> Arc<Host> {
        let host = self.entry(name, port, true);
        if host.name.parse::<IpAddr>().is_err()
            && host
                .answer
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .at
                .is_none()
        {
            host.resolve();
            self.start_thread();
        }
        host
    }

    fn entry(self: &Arc<Self>, name: &str, port: u16, watched: bool) -> Arc<Host> {
        let literal = name.parse::<IpAddr>().ok();
        let host = Arc::new(Host {
            name: name.to_string(),
            port,
            // An IP literal is never looked up, so never scheduled.
            watched: watched || literal.is_some(),
            answer: RwLock::new(Answer {
                addrs: literal.map(|ip| Arc::from([SocketAddr::new(ip, port)])),
                error: None,
                at: literal.map(|_| Instant::now()),
                failures: 0,
            }),
            queued: Mutex::new(false),
            resolver: Arc::downgrade(self),
        });
        if literal.is_some() {
            return host;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), port);
        if let Some(known) = state.hosts.get(&key) {
            if known.watched || !watched {
                return Arc::clone(known);
            }
        }
        if state.hosts.len() >= MAX_HOSTS {
            // Forget on-demand hosts nobody holds any more; watched ones stay.
            state
                .hosts
                .retain(|_, host| host.watched || Arc::strong_count(host) > 1);
        }
        state.hosts.insert(key, Arc::clone(&host));
        host
    }

    fn enqueue(self: &Arc<Self>, host: &Host) {
        {
            let mut queued = host.queued.lock().unwrap_or_else(|e| e.into_inner());
            if *queued {
                return;
            }
            *queued = true;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = (host.name.clone(), host.port);
        if let Some(entry) = state.hosts.get(&key).cloned() {
            state.queue.push_back(entry);
        }
        drop(state);
        self.start_thread();
        self.wake.notify_one();
    }

    fn start_thread(self: &Arc<Self>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if std::mem::replace(&mut state.thread_started, true) {
            return;
        }
        let resolver = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("nexus-resolver".into())
            .spawn(move || loop {
                resolver.next().resolve();
            });
        if let Err(e) = spawned {
            log::error!("cannot start the resolver thread: {e}");
        }
    }

    /// The next host to resolve: a queued one, or a watched one that is due. Waits.
    fn next(&self) -> Arc<Host> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(host) = state.queue.pop_front() {
                return host;
            }
            let now = Instant::now();
            let mut soonest: Option<Instant> = None;
            for host in state.hosts.values().filter(|h| h.watched) {
                match host.next_due() {
                    Some(due) if due <= now => return Arc::clone(host),
                    Some(due) => soonest = Some(soonest.map_or(due, |s| s.min(due))),
                    None => return Arc::clone(host),
                }
            }
            let wait = soonest.map_or(WATCH_REFRESH, |s| s - now);
            state = self
                .wake
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_ready(host: &Host) -> Arc<[SocketAddr]> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match host.lookup() {
                Lookup::Ready(addrs) => return addrs,
                Lookup::Pending if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        let r = Resolver::new();
        for host in [r.host("127.0.0.1", 80), r.watch("::1", 443)] {
            assert!(matches!(host.lookup(), Lookup::Ready(a) if a.len() == 1));
        }
        assert_eq!(
            r.host("127.0.0.1", 80).lookup(),
            Lookup::Ready(Arc::new(["127.0.0.1:80".parse().unwrap()]))
        );
        assert!(
            !r.state.lock().unwrap().thread_started,
            "no thread for literals"
        );
    }

    #[test]
    fn names_resolve_in_the_background() {
        let r = Resolver::new();
        let host = r.host("localhost", 8080);
        let addrs = wait_ready(&host);
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8080));
        assert!(
            Arc::ptr_eq(&host, &r.host("localhost", 8080)),
            "one entry per host"
        );
    }

    #[test]
    fn a_watched_host_is_resolved_before_watch_returns() {
        let r = Resolver::new();
        let local = r.watch("localhost", 443);
        assert!(matches!(local.lookup(), Lookup::Ready(a) if a.iter().all(|a| a.port() == 443)));
        assert_eq!(local.problem(), None);
        let bad = r.watch("nexus-test-unresolvable.invalid", 9);
        assert!(matches!(bad.lookup(), Lookup::Failed(_)));
        let why = bad.problem().expect("a failed watched host says why");
        assert!(why.contains("nexus-test-unresolvable.invalid"), "{why}");
    }
}
