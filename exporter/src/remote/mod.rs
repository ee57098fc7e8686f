//! Reading a kepler-rs exporter or a Prometheus server from outside: the one client `top` and
//! `report` share (http/https, CA file, basic or bearer auth), the exposition parser, the
//! Prometheus query API and the series rules readers apply. Nothing here touches the exporter's
//! internals (sources, monitor, server) or the host.

pub mod client;
pub mod endpoint;
pub mod exposition;
pub mod options;
pub mod prometheus;
pub mod series;

pub use client::{Answer, Client, ClientError};
pub use endpoint::BaseUrl;
pub use options::{ClientOptions, RemoteArgs, SetupError};
pub use prometheus::PromSample;
