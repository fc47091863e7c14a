//! Webhook host resolution on a background thread, so no worker ever calls the blocking
//! resolver. Workers ask for a host; the thread resolves it and caches the addresses for a
//! minute. Only the outbox's delivery tasks ask, and only when they open a connection.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Addresses are looked up again after this.
const FRESH_FOR: Duration = Duration::from_secs(60);
/// A failed lookup is retried no sooner than this.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Hosts remembered at most (per-domain Slack webhooks come and go with credential files).
const MAX_HOSTS: usize = 1024;

/// What the resolver knows about a host right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Ready(Arc<[SocketAddr]>),
    /// Being resolved; ask again shortly.
    Pending,
    /// The last attempt failed with this.
    Failed(String),
}

#[derive(Default)]
struct Slot {
    addrs: Option<Arc<[SocketAddr]>>,
    error: Option<String>,
    at: Option<Instant>,
    queued: bool,
}

#[derive(Default)]
struct State {
    hosts: HashMap<(String, u16), Slot>,
    queue: VecDeque<(String, u16)>,
    thread_started: bool,
}

/// The shared resolver for webhook hosts.
#[derive(Default)]
pub struct HostResolver {
    state: Mutex<State>,
    wake: Condvar,
}

impl HostResolver {
    /// A resolver; its thread starts with the first host name it is asked for.
    pub fn new() -> Arc<HostResolver> {
        Arc::new(HostResolver::default())
    }

    /// The host's addresses if known (stale ones are served while a refresh runs).
    pub fn lookup(self: &Arc<Self>, host: &str, port: u16) -> Lookup {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Lookup::Ready(Arc::new([SocketAddr::new(ip, port)]));
        }
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        if state.hosts.len() >= MAX_HOSTS && !state.hosts.contains_key(&(host.to_string(), port)) {
            state.hosts.retain(|_, slot| slot.queued);
        }
        let key = (host.to_string(), port);
        let slot = state.hosts.entry(key.clone()).or_default();
        let age = slot.at.map(|at| at.elapsed());
        let due = match (&slot.addrs, age) {
            (_, None) => true,
            (Some(_), Some(age)) => age >= FRESH_FOR,
            (None, Some(age)) => age >= RETRY_AFTER,
        };
        let answer = match (&slot.addrs, &slot.error) {
            (Some(addrs), _) => Lookup::Ready(Arc::clone(addrs)),
            (None, Some(error)) if !due => Lookup::Failed(error.clone()),
            _ => Lookup::Pending,
        };
        if due && !slot.queued {
            slot.queued = true;
            state.queue.push_back(key);
            if !state.thread_started {
                state.thread_started = true;
                self.start_thread();
            }
            self.wake.notify_one();
        }
        answer
    }

    fn start_thread(self: &Arc<Self>) {
        let resolver = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("nexus-notify-dns".into())
            .spawn(move || resolver.run());
        if let Err(e) = spawned {
            log::error!("cannot start the webhook resolver thread: {e}");
        }
    }

    fn run(&self) {
        loop {
            let (host, port) = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(next) = state.queue.pop_front() {
                        break next;
                    }
                    state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            let result = (host.as_str(), port)
                .to_socket_addrs()
                .map(|found| found.collect::<Vec<_>>());
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let slot = state.hosts.entry((host.clone(), port)).or_default();
            slot.queued = false;
            slot.at = Some(Instant::now());
            match result {
                Ok(found) if !found.is_empty() => {
                    slot.addrs = Some(found.into());
                    slot.error = None;
                }
                // Keep the last good addresses: a DNS hiccup must not stop delivery.
                Ok(_) => slot.error = Some(format!("{host} resolved to no address")),
                Err(e) => slot.error = Some(format!("cannot resolve {host}: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_need_no_lookup_and_names_resolve_in_the_background() {
        let r = HostResolver::new();
        assert_eq!(
            r.lookup("127.0.0.1", 80),
            Lookup::Ready(Arc::new(["127.0.0.1:80".parse().unwrap()]))
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match r.lookup("localhost", 8080) {
                Lookup::Ready(addrs) => {
                    assert!(addrs
                        .iter()
                        .all(|a| a.ip().is_loopback() && a.port() == 8080));
                    break;
                }
                Lookup::Pending if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
