//! One worker: its listener, accept loop, pool and per-thread caches.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::Canceller;
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

use super::body_buffers::BodyBuffers;
use super::deadline::Ticks;
use super::runtime::Driver;
use super::{connection, Shared};
use crate::credentials::LocalView;
use crate::notify::Outbox;
use crate::request_id::RequestIds;
use crate::stats::{LocalCounters, SpareScanners};
use crate::upstream::Pool;

/// How often a worker looks at the shutdown flag, ends waits past their limits and
/// sweeps its pool and kept body buffers.
const TICK: Duration = Duration::from_millis(100);
const SWEEP_EVERY_TICKS: u32 = 50;
/// Size of the buffers responses are relayed through.
pub const RELAY_BUFFER: usize = 32 * 1024;
/// Relay buffers a worker keeps for reuse (64 × 32 KiB, at most 2 MiB): with 16, a worker
/// serving 64 connections allocated a fresh buffer for most responses (W1: ~0.8 of a 32 KiB
/// malloc per request, with glibc's consolidation runs).
const SPARE_BUFFERS: usize = 64;

/// A worker's state, shared by its connection tasks (single thread: `Rc`, `RefCell`).
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub driver: Driver,
    pub pool: Rc<Pool>,
    pub credentials: LocalView,
    pub counters: LocalCounters,
    pub request_ids: RequestIds,
    /// The clock that limits every connection's waits (see [`super::deadline`]).
    pub ticks: Rc<Ticks>,
    /// Telemetry and Slack events waiting for delivery (drained by tasks on this runtime).
    pub outbox: Rc<Outbox>,
    /// Usage scanners kept for the next metered response.
    pub spare_scanners: SpareScanners,
    spare_buffers: RefCell<Vec<Vec<u8>>>,
    /// Large request-body buffers kept for the next large body.
    pub body_buffers: BodyBuffers,
}

impl Worker {
    /// An empty relay buffer of [`RELAY_BUFFER`] capacity, reused when possible.
    pub fn take_buffer(&self) -> Vec<u8> {
        self.spare_buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(RELAY_BUFFER))
    }

    /// Hands a relay buffer back for the next request.
    pub fn give_buffer(&self, mut buf: Vec<u8>) {
        let mut spare = self.spare_buffers.borrow_mut();
        if buf.capacity() == RELAY_BUFFER && spare.len() < SPARE_BUFFERS {
            buf.clear();
            spare.push(buf);
        }
    }
}

/// The worker thread's main future: bind, report ready, serve until the process exits.
pub async fn run(
    id: usize,
    shared: Arc<Shared>,
    driver: Driver,
    ready: Sender<Result<Driver, String>>,
) {
    let addr = (shared.config.host.as_str(), shared.config.port);
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    let listener = match TcpListener::bind_with_config(addr, &opts) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot listen on {}:{}: {e}", addr.0, addr.1)));
            return;
        }
    };
    let accepting = shared.lifecycle.accepting_guard();
    let worker = Rc::new(Worker {
        id,
        pool: Pool::new(Arc::clone(&shared.upstream)),
        shared: Arc::clone(&shared),
        driver,
        credentials: LocalView::default(),
        counters: LocalCounters::default(),
        request_ids: RequestIds::new(),
        ticks: Ticks::new(TICK),
        outbox: Outbox::new(Arc::clone(&shared.notify)),
        spare_scanners: SpareScanners::default(),
        spare_buffers: RefCell::new(Vec::new()),
        body_buffers: BodyBuffers::default(),
    });
    worker.outbox.start();
    let _ = ready.send(Ok(driver));

    let canceller = Canceller::new();
    let accept_handle = canceller.handle();
    monoio::spawn(housekeeping(Rc::clone(&worker), canceller));
    let open = &shared.stats.proxy.open_connections;
    loop {
        // At the connection budget, leave new connections in the kernel's backlog rather
        // than run out of descriptors mid-request.
        while open.load(Relaxed) >= shared.max_connections as i64
            && !shared.lifecycle.shutting_down()
        {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        match listener.cancelable_accept(accept_handle.clone()).await {
            Ok((stream, _peer)) => {
                monoio::spawn(connection::serve(stream, Rc::clone(&worker)));
            }
            Err(_) if shared.lifecycle.shutting_down() => break,
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning on the error.
                log::warn!("worker {id}: accept failed: {e}");
                monoio::time::sleep(TICK).await;
            }
        }
    }
    drain_backlog(&listener, &worker);
    drop(listener);
    drop(accepting);
    log::debug!("worker {id}: stopped accepting");
    // Keep polling the connection tasks; the main thread ends the process.
    loop {
        monoio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// Ends waits past their limits, watches the shutdown flag (cancelling the accept when it
/// rises), sweeps the pool and kept body buffers and writes the worker's batched log lines every tick.
async fn housekeeping(worker: Rc<Worker>, canceller: Canceller) {
    crate::notify::logger::batch_this_thread();
    let mut ticks = 0u32;
    let mut canceller = Some(canceller);
    loop {
        monoio::time::sleep(TICK).await;
        worker.ticks.advance();
        crate::notify::logger::flush_thread();
        if worker.shared.lifecycle.shutting_down() {
            // Stop accepting, but keep ticking: log lines still need flushing.
            if let Some(canceller) = canceller.take() {
                canceller.cancel();
            }
            continue;
        }
        ticks += 1;
        if ticks.is_multiple_of(SWEEP_EVERY_TICKS) {
            worker.pool.sweep();
            worker.body_buffers.sweep();
        }
    }
}

/// Accepts, without blocking, the connections already queued in the kernel when shutdown
/// began, so they are served instead of reset when the listener closes.
fn drain_backlog(listener: &TcpListener, worker: &Rc<Worker>) {
    let fd = listener.as_raw_fd();
    // SAFETY: plain fcntl/accept4 on the listener fd we own; accepted fds get owners at once.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let socket_flags = match worker.driver {
        // The epoll driver wants non-blocking sockets; io_uring wants blocking ones.
        Driver::Epoll => libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        _ => libc::SOCK_CLOEXEC,
    };
    let mut drained = 0;
    loop {
        let conn =
            unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), socket_flags) };
        if conn < 0 {
            break;
        }
        let std_stream = unsafe { std::net::TcpStream::from_raw_fd(conn) };
        match TcpStream::from_std(std_stream) {
            Ok(stream) => {
                drained += 1;
                monoio::spawn(connection::serve(stream, Rc::clone(worker)));
            }
            Err(e) => log::warn!(
                "worker {}: cannot adopt a queued connection: {e}",
                worker.id
            ),
        }
    }
    if drained > 0 {
        log::info!(
            "worker {}: serving {drained} connection(s) queued before shutdown",
            worker.id
        );
    }
}
