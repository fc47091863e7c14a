//! Named clients: who a request is, what it may use, and what it has spent, with limits
//! in dollars, tokens and concurrency (`CLIENTS_FILE`).
//!
//! - [`file`]: the clients file; [`pattern`]: the `domains`/`models` patterns;
//! - [`window`]: the `5h` rolling and the UTC `day`/`week`/`month` windows;
//! - [`spend`]: spend per window, in lock-free tagged counters.

pub mod file;
pub mod pattern;
pub mod spend;
pub mod window;
