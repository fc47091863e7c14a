//! Named clients: who a request is, what it may use, and what it has spent, with limits
//! in dollars, tokens and concurrency (`CLIENTS_FILE`).
//!
//! - [`file`]: the clients file; [`pattern`]: the `domains`/`models` patterns;
//! - [`window`]: the `5h` rolling and the UTC `day`/`week`/`month` windows;
//! - [`spend`]: spend per window, in lock-free tagged counters;
//! - [`client`]: a client at run time: the check before the upstream, its figures;
//! - [`set`]: one version of the file's clients, found by key, state kept by name;
//! - [`metrics`]: their `/metrics` series;
//! - [`watch`]: the clients in force, re-read from the file as it changes.

pub mod client;
pub mod file;
pub mod metrics;
pub mod pattern;
pub mod set;
pub mod spend;
pub mod watch;
pub mod window;
