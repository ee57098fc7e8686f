//! Prometheus's HTTP API, read only: instant queries (`/api/v1/query`) with the PromQL
//! form-encoded by `form_urlencoded`, answers decoded into `PromSample`s. Builds no PromQL itself.

use super::client::{Answer, Client, ClientError};
use super::endpoint::BaseUrl;
use super::exposition::Sample;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample {
    pub labels: BTreeMap<String, String>,
    pub timestamp: f64,
    pub value: f64,
}

impl PromSample {
    /// The value of `name`, or "" when absent (Prometheus treats empty and absent alike).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }

    /// The same sample as an exposition line would give (`__name__` becomes the name).
    pub fn as_sample(&self) -> Sample<'_> {
        Sample {
            name: Cow::Borrowed(self.label("__name__")),
            labels: self
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                .collect(),
            value: self.value,
        }
    }
}

/// The query string of an instant query; `time` is Unix seconds.
fn query_string(promql: &str, time: Option<f64>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("query", promql);
    if let Some(t) = time {
        query.append_pair("time", &format!("{t:.3}"));
    }
    query.finish()
}

impl Client {
    /// An instant query; `time` is Unix seconds (None: now).
    pub fn prometheus_query(
        &self,
        base: &BaseUrl,
        promql: &str,
        time: Option<f64>,
    ) -> Result<Vec<PromSample>, ClientError> {
        let query = query_string(promql, time);
        let answer = match self.get(base, "/api/v1/query", Some(&query)) {
            // Prometheus answers a bad query with 400 and a JSON error: report its message.
            Err(ClientError::Status {
                status,
                detail,
                url,
            }) if status == StatusCode::BAD_REQUEST
                || status == StatusCode::UNPROCESSABLE_ENTITY =>
            {
                Answer {
                    url,
                    content_type: "application/json".into(),
                    body: Bytes::from(detail.trim_start_matches(": ").to_string()),
                }
            }
            other => other?,
        };
        decode(answer)
    }
}

fn decode(answer: Answer) -> Result<Vec<PromSample>, ClientError> {
    let not_prometheus = |reason: String| ClientError::NotPrometheus {
        url: answer.url.clone(),
        reason,
    };
    let parsed: ApiAnswer =
        serde_json::from_slice(&answer.body).map_err(|e| not_prometheus(format!("{e}")))?;
    if parsed.status != "success" {
        return Err(ClientError::Query {
            url: answer.url.clone(),
            kind: parsed.error_type.unwrap_or_default(),
            message: parsed.error.unwrap_or_default(),
        });
    }
    let data = parsed
        .data
        .ok_or_else(|| not_prometheus("no data".into()))?;
    if data.result_type != "vector" {
        return Err(not_prometheus(format!(
            "expected a vector, got {}",
            data.result_type
        )));
    }
    data.result
        .into_iter()
        .map(|r| {
            let value =
                r.value.1.parse::<f64>().map_err(|_| {
                    not_prometheus(format!("value {:?} is not a number", r.value.1))
                })?;
            Ok(PromSample {
                labels: r.metric,
                timestamp: r.value.0,
                value,
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct ApiAnswer {
    status: String,
    data: Option<ApiData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: Vec<ApiResult>,
}

#[derive(Deserialize)]
struct ApiResult {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_is_form_encoded() {
        assert_eq!(
            query_string("sum by (a) (x{b=\"c\"}) + 1", Some(12.5)),
            "query=sum+by+%28a%29+%28x%7Bb%3D%22c%22%7D%29+%2B+1&time=12.500"
        );
        // What the server decodes is the query itself.
        let decoded: Vec<(String, String)> =
            form_urlencoded::parse(query_string("a{b=~\"c|d\"} / 2", None).as_bytes())
                .into_owned()
                .collect();
        assert_eq!(
            decoded,
            [("query".to_string(), "a{b=~\"c|d\"} / 2".to_string())]
        );
    }

    fn answer(body: &str) -> Answer {
        Answer {
            url: "http://p/api/v1/query".into(),
            content_type: "application/json".into(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn answers_decode_into_samples_or_typed_errors() {
        let ok = decode(answer(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"k"},"value":[1700000000.5,"1"]}]}}"#,
        ))
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].label("job"), "k");
        assert_eq!(ok[0].as_sample().name, "up");
        assert_eq!(ok[0].as_sample().label("job"), "k");
        assert_eq!((ok[0].timestamp, ok[0].value), (1_700_000_000.5, 1.0));
        let err = decode(answer(
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        ))
        .unwrap_err();
        assert_eq!(err.kind(), "query");
        assert!(err.to_string().contains("(bad_data): parse error"), "{err}");
        for bad in [
            "<html>",
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
        ] {
            assert_eq!(
                decode(answer(bad)).unwrap_err().kind(),
                "not_prometheus",
                "{bad}"
            );
        }
    }
}
