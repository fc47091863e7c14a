//! One worker: its listener, accept loop, pool and per-thread caches.

use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::Canceller;
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use monoio_rustls::TlsAcceptor;

use super::runtime::Driver;
use super::{connection, Shared};
use crate::client::Pool;
use crate::conn::body_buffers::BodyBuffers;
use crate::conn::deadline::Ticks;
use crate::notify::Outbox;
use crate::proxy::Proxy;
use crate::request_id::RequestIds;

/// How often a worker looks at the shutdown flag, ends waits past their limits and
/// sweeps its pool and kept body buffers.
const TICK: Duration = Duration::from_millis(100);
const SWEEP_EVERY_TICKS: u32 = 50;

/// A worker's state, shared by its connection tasks (single thread: `Rc`).
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub driver: Driver,
    pub proxy: Proxy,
    pub request_ids: RequestIds,
    /// The clock that limits every connection's waits (see [`crate::conn::deadline`]).
    pub ticks: Rc<Ticks>,
    /// Large request-body buffers kept for the next large body.
    pub body_buffers: Rc<BodyBuffers>,
    /// Handshakes with the shared TLS configuration, when the port speaks HTTPS.
    pub tls: Option<TlsAcceptor>,
}

impl Worker {
    /// Serves a connection just accepted: plain HTTP, or HTTPS when TLS is configured.
    fn serve(self: &Rc<Self>, stream: TcpStream) {
        // Two spawns rather than one future that branches: a plain connection's task
        // stays the size it was.
        match self.tls {
            None => monoio::spawn(connection::serve(stream, Rc::clone(self))),
            Some(_) => monoio::spawn(connection::serve_tls(stream, Rc::clone(self))),
        };
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
    let outbox = Outbox::new(Arc::clone(&shared.notify));
    outbox.start();
    let worker = Rc::new(Worker {
        id,
        proxy: Proxy::new(
            id,
            Arc::clone(&shared),
            Pool::new(Arc::clone(&shared.upstream)),
            outbox,
        ),
        shared: Arc::clone(&shared),
        driver,
        request_ids: RequestIds::new(),
        ticks: Ticks::new(TICK),
        body_buffers: Rc::default(),
        tls: shared
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(Arc::clone(&tls.config))),
    });
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
            Ok((stream, _peer)) => worker.serve(stream),
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
            worker.proxy.pool.sweep();
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
                worker.serve(stream);
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
