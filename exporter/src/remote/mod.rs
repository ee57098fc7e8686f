//! Reading a kepler-rs exporter or a Prometheus server from outside: the one client `top` and
//! `report` share (http/https, CA file, basic or bearer auth), the exposition parser, the
//! Prometheus query API and the series rules readers apply. Nothing here touches the exporter's
//! internals (sources, monitor, server) or the host.

pub(crate) mod client;
pub(crate) mod endpoint;
pub mod exposition;
pub(crate) mod options;
pub(crate) mod prometheus;
pub(crate) mod series;

pub(crate) use client::{Client, ClientError};
pub(crate) use endpoint::BaseUrl;
pub(crate) use options::{ClientOptions, RemoteArgs, SetupError};
pub(crate) use prometheus::PromSample;

/// Wall-clock Unix time in seconds (0 before 1970): the clock of `report`'s default period and of
/// `top`'s rates where the exporter gave none.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
