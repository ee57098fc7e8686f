//! kepler-rs: measures a node's energy on its own tick, attributes it to pods, containers and
//! processes, and serves the latest immutable snapshot as Prometheus metrics.
//! Data flow: sources -> monitor (tick) -> attribution -> ledger -> Snapshot -> metrics -> server.

pub mod activity;
pub mod attribution;
pub mod build;
pub(crate) mod catalog;
pub mod config;
pub(crate) mod consumers;
pub mod cpuinfo;
pub(crate) mod files;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gpu;
pub(crate) mod heap;
pub mod idle;
pub(crate) mod issue;
pub mod ledger;
pub mod metrics;
pub mod monitor;
pub mod remote;
pub mod report;
pub mod resource;
pub mod server;
pub mod signals;
pub mod snapshot;
pub mod source;
pub mod top;
pub mod units;
pub mod web;
pub(crate) mod yaml_depth;
