//! The process's connection budget: file descriptors, not hope.

/// Descriptors kept aside for listeners, credential files, the resolver and logs.
const RESERVED_FDS: u64 = 256;

/// Raises the soft open-file limit to the hard one and returns how many client
/// connections fit: each may hold two descriptors (client + upstream).
/// `configured` (NEXUS_MAX_CONNECTIONS) wins when set, but never beyond what fits.
pub fn max_connections(configured: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a local struct.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return configured.max(1);
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    let fits = (soft.saturating_sub(RESERVED_FDS) / 2).max(1) as usize;
    match configured {
        0 => fits,
        n => n.min(fits),
    }
}
