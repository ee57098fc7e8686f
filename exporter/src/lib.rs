//! kepler-rs: measures a node's energy on its own tick, attributes it to pods, containers and
//! processes, and serves the latest immutable snapshot as Prometheus metrics.

pub mod activity;
pub mod attribution;
pub mod idle;
pub mod ledger;
pub mod resource;
pub mod snapshot;
pub mod source;
pub mod units;
