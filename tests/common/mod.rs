//! Shared harness for nexus's integration tests: the real binary, a scriptable mock
//! upstream, and a small HTTP/1.1 client. Every socket read times out after [`IO_TIMEOUT`]
//! and every spawned process is killed on drop.
#![allow(dead_code, unused_imports)]

pub mod assertions;
pub mod client;
pub mod clients_file;
pub mod credentials;
pub mod fixtures;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod mock;
pub mod nexus;
pub mod oauth;
pub mod postgres;
pub mod process;
pub mod rig;
pub mod rng;
pub mod scenarios;
pub mod sse;
pub mod tempdir;
pub mod tls;

use std::time::Duration;

/// The bound on every socket read and write in the tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub use assertions::*;
pub use client::{Client, Request, Response};
pub use clients_file::ClientsFile;
pub use http::Headers;
pub use mock::{Gate, MockReply, MockUpstream, Recorded};
pub use nexus::Nexus;
pub use rig::{Rig, Upstream};
pub use scenarios::{messages_request, stream_request_body, CLIENT_KEY};
pub use sse::SseReader;
pub use tempdir::TempDir;
