//! nexus as a library: the binary in main.rs wires these together; tests and benchmarks
//! reach the parsers directly.

pub mod client;
pub mod client_setup;
pub mod clients;
pub mod config;
pub mod conn;
pub mod cost;
pub mod credentials;
pub mod credentials_list;
pub mod health_check;
pub mod http;
pub mod ledger;
pub mod lifecycle;
pub mod login;
pub mod notify;
pub mod proxy;
pub mod published;
pub mod request_id;
pub mod routes;
pub(crate) mod scan;
pub mod server;
pub mod shared;
pub mod stats;
pub mod tls;
pub mod usage;
