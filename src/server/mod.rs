//! The server: worker threads, each a monoio runtime with its own SO_REUSEPORT listener,
//! accept loop and upstream pool.

pub mod connection;
pub mod limits;
pub mod runtime;
pub mod tls_accept;
pub mod worker;

use std::sync::mpsc;
use std::sync::Arc;

pub use crate::lifecycle::Lifecycle;
pub use crate::shared::Shared;
use runtime::Driver;

/// Starts `config.workers` worker threads and waits until each one listens.
/// Returns the driver each worker runs on.
pub fn start_workers(shared: &Arc<Shared>) -> Result<Vec<Driver>, String> {
    let (ready_tx, ready_rx) = mpsc::channel();
    for id in 0..shared.config.workers {
        let shared = Arc::clone(shared);
        let ready = ready_tx.clone();
        std::thread::Builder::new()
            .name(format!("nexus-w{id}"))
            .spawn(move || {
                let choice = shared.config.driver;
                runtime::block_on(
                    choice,
                    |driver| worker::run(id, Arc::clone(&shared), driver, ready),
                    |why| log::warn!("worker {id}: io_uring unavailable ({why}); using epoll"),
                )
            })
            .map_err(|e| format!("cannot start worker thread {id}: {e}"))?;
    }
    drop(ready_tx);
    let mut drivers = Vec::with_capacity(shared.config.workers);
    for _ in 0..shared.config.workers {
        match ready_rx.recv() {
            Ok(Ok(driver)) => drivers.push(driver),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a worker thread exited during start-up".into()),
        }
    }
    Ok(drivers)
}
