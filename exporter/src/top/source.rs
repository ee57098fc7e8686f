//! Where `top` reads from: one exporter's `/metrics`, or the latest kepler series Prometheus
//! scraped from every node, turned into a `Reading`. The HTTP is `crate::remote`'s; this file
//! knows which series to ask for and what "not an exporter" looks like.

use super::model::{ModelError, Reading};
use crate::catalog::{self, Family, Resource};
use crate::remote::exposition::{self, ExpositionError, Sample};
use crate::remote::{BaseUrl, Client, ClientError};

/// The series `top` reads from Prometheus: every CPU and GPU family of the catalog (energy, power,
/// names; not the Kepler 0.7 families, which repeat them), the sources and the snapshot time.
fn prometheus_series() -> String {
    let families: Vec<&Family> = catalog::ALL
        .iter()
        .filter(|f| !f.scope.is_kepler07())
        .filter(|f| {
            f.resource != Resource::None
                || [
                    &catalog::POD_INFO,
                    &catalog::ENERGY_SOURCE_INFO,
                    &catalog::CPU_SOURCE_INFO,
                    &catalog::LAST_TICK_TIMESTAMP_SECONDS,
                ]
                .contains(f)
        })
        .collect();
    format!("{{__name__=~\"{}\"}}", catalog::name_regex(&families))
}

/// Where readings come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Exporter(BaseUrl),
    Prometheus(BaseUrl),
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Remote(#[from] ClientError),
    #[error("{url}: {source}")]
    Exposition {
        url: String,
        source: ExpositionError,
    },
    #[error("{url}: {source}")]
    NotAnExporter { url: String, source: ModelError },
}

impl Source {
    pub(crate) fn fetch(&self, client: &Client) -> Result<Reading, FetchError> {
        match self {
            Source::Exporter(base) => exporter_reading(client, base),
            Source::Prometheus(base) => prometheus_reading(client, base),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Source::Exporter(base) => base.join(base.exposition_path()),
            Source::Prometheus(base) => format!("prometheus {}", base.join("")),
        }
    }
}

/// Fetch and parse an exporter's exposition.
fn exporter_reading(client: &Client, base: &BaseUrl) -> Result<Reading, FetchError> {
    let answer = client.get(base, base.exposition_path(), None)?;
    // An exposition must be UTF-8; stray bytes are shown as U+FFFD rather than refused.
    let text = String::from_utf8_lossy(&answer.body);
    let url = answer.url;
    let samples = exposition::parse(&text).map_err(|source| {
        // HTML, "ok", JSON...: say "not an exporter" rather than quote a syntax error.
        if answer.content_type.starts_with("text/html") || !text.contains("kepler_") {
            FetchError::NotAnExporter {
                url: url.clone(),
                source: ModelError::NotAnExporter { samples: 0 },
            }
        } else {
            FetchError::Exposition {
                url: url.clone(),
                source,
            }
        }
    })?;
    Reading::from_samples(&samples).map_err(|source| FetchError::NotAnExporter { url, source })
}

/// The same reading as from an exporter, for every node Prometheus scraped: the latest sample of
/// each kepler series.
fn prometheus_reading(client: &Client, base: &BaseUrl) -> Result<Reading, FetchError> {
    let found = client.prometheus_query(base, &prometheus_series(), None)?;
    let samples: Vec<Sample<'_>> = found.iter().map(|s| s.as_sample()).collect();
    Reading::from_samples(&samples).map_err(|source| FetchError::NotAnExporter {
        url: base.join("/api/v1/query"),
        source,
    })
}
