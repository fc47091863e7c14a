//! HTTP/1.1 on the wire. Heads are parsed with httparse; every body's framing is nexus's
//! own, so a byte can be relayed the moment it arrives (no monoio-http: its client reads
//! chunked bodies to the end and its encoder holds chunks back, both fatal to SSE).

pub mod basic_auth;
pub mod chunked;
pub mod digits;
pub mod error;
pub mod event_stream;
pub mod headers;
pub mod ratelimit_headers;
pub mod request;
pub mod response;
pub mod url;
