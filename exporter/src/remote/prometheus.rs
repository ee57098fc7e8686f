//! Prometheus's HTTP API, read only: instant queries (`/api/v1/query`) with the PromQL
//! form-encoded by `form_urlencoded`, answers decoded into `PromSample`s as they stream in (a
//! result is never held whole). Builds no PromQL itself.

use super::client::{Client, ClientError, MAX_STREAMED_BYTES};
use super::endpoint::BaseUrl;
use super::exposition::Sample;
use super::series::{clean, clean_message};
use http::StatusCode;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PromSample {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) timestamp: f64,
    pub(crate) value: f64,
}

impl PromSample {
    /// The value of `name`, or "" when absent (Prometheus treats empty and absent alike).
    pub(crate) fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }

    /// The same sample as an exposition line would give (`__name__` becomes the name).
    pub(crate) fn as_sample(&self) -> Sample<'_> {
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
    pub(crate) fn prometheus_query(
        &self,
        base: &BaseUrl,
        promql: &str,
        time: Option<f64>,
    ) -> Result<Vec<PromSample>, ClientError> {
        let mut found = Vec::new();
        self.prometheus_query_each(base, promql, time, &mut |s| found.push(s))?;
        Ok(found)
    }

    /// An instant query whose samples are handed to `each` as the answer arrives, so a result of
    /// any size is never held whole. Returns how many samples came. On an error some samples may
    /// already have been handed over; the caller drops what it built.
    pub(crate) fn prometheus_query_each(
        &self,
        base: &BaseUrl,
        promql: &str,
        time: Option<f64>,
        each: &mut dyn FnMut(PromSample),
    ) -> Result<u64, ClientError> {
        let query = query_string(promql, time);
        // Prometheus answers a bad query with 400 or 422 and a JSON error: report its message.
        let also = [StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY];
        self.get_streamed(
            base,
            "/api/v1/query",
            Some(&query),
            &also,
            MAX_STREAMED_BYTES,
            |_, url, body| decode(body, url, each),
        )
    }
}

/// Decode an instant query's answer from `body`, handing each sample to `each` as it is read.
/// Never panics on input: anything but a vector answer is a typed error, its text made safe to
/// print.
pub(crate) fn decode(
    body: &mut dyn Read,
    url: &str,
    each: &mut dyn FnMut(PromSample),
) -> Result<u64, ClientError> {
    let not_prometheus = |reason: &str| ClientError::NotPrometheus {
        url: url.to_string(),
        reason: clean_message(reason),
    };
    let mut count = 0;
    let mut counted = |sample| {
        count += 1;
        each(sample)
    };
    let mut reader = serde_json::Deserializer::from_reader(body);
    let head = AnswerSeed(&mut counted)
        .deserialize(&mut reader)
        .and_then(|head| reader.end().map(|()| head))
        .map_err(|e| not_prometheus(&e.to_string()))?;
    if head.status != "success" {
        return Err(ClientError::Query {
            url: url.to_string(),
            kind: clean_message(&head.error_type.unwrap_or_default()),
            message: clean_message(&head.error.unwrap_or_default()),
        });
    }
    match head.result_type.as_deref() {
        None => Err(not_prometheus("no data")),
        Some("vector") => Ok(count),
        Some(other) => Err(not_prometheus(&format!("expected a vector, got {other}"))),
    }
}

/// What an answer says besides its samples.
#[derive(Default)]
struct Head {
    status: String,
    error_type: Option<String>,
    error: Option<String>,
    /// `data.resultType`; None when there was no `data`.
    result_type: Option<String>,
}

/// The whole answer: `{"status", "data": {"resultType", "result": [...]}, "errorType", "error"}`;
/// each sample goes to the function it holds.
struct AnswerSeed<'f>(&'f mut dyn FnMut(PromSample));

impl<'de> DeserializeSeed<'de> for AnswerSeed<'_> {
    type Value = Head;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Head, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AnswerSeed<'_> {
    type Value = Head;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Prometheus API answer (a JSON object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
        let mut head = Head::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "status" => head.status = map.next_value()?,
                "errorType" => head.error_type = map.next_value()?,
                "error" => head.error = map.next_value()?,
                "data" => head.result_type = map.next_value_seed(DataSeed(&mut *self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(head)
    }
}

/// `data`: `{"resultType", "result": [...]}`; gives the result type (None for `null`).
struct DataSeed<'f>(&'f mut dyn FnMut(PromSample));

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the answer's data (a JSON object)")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        let mut result_type: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "resultType" => result_type = Some(map.next_value()?),
                // A result of another type (a matrix, a scalar) is skipped, then refused by its type.
                "result" if result_type.as_deref().is_none_or(|t| t == "vector") => {
                    map.next_value_seed(ResultSeed(&mut *self.0))?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(result_type.unwrap_or_default()))
    }
}

/// `result`: the vector's elements, each handed over as soon as it is read.
struct ResultSeed<'f>(&'f mut dyn FnMut(PromSample));

impl<'de> DeserializeSeed<'de> for ResultSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ResultSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a vector of samples (a JSON array)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(r) = seq.next_element::<ApiResult>()? {
            let value = r.value.1.parse::<f64>().map_err(|_| {
                de::Error::custom(format!("value {:?} is not a number", clean(&r.value.1)))
            })?;
            (self.0)(PromSample {
                labels: r.metric,
                timestamp: r.value.0,
                value,
            });
        }
        Ok(())
    }
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

    fn decode_all(body: &str) -> Result<Vec<PromSample>, ClientError> {
        let mut found = Vec::new();
        let count = decode(&mut body.as_bytes(), "http://p/api/v1/query", &mut |s| {
            found.push(s)
        })?;
        assert_eq!(count, found.len() as u64);
        Ok(found)
    }

    #[test]
    fn answers_decode_into_samples_or_typed_errors() {
        let ok = decode_all(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"k"},"value":[1700000000.5,"1"]}]}}"#,
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].label("job"), "k");
        assert_eq!(ok[0].as_sample().name, "up");
        assert_eq!(ok[0].as_sample().label("job"), "k");
        assert_eq!((ok[0].timestamp, ok[0].value), (1_700_000_000.5, 1.0));
        let err = decode_all(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#)
            .unwrap_err();
        assert_eq!(err.kind(), "query");
        assert!(err.to_string().contains("(bad_data): parse error"), "{err}");
        for bad in [
            "<html>",
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
        ] {
            assert_eq!(
                decode_all(bad).unwrap_err().kind(),
                "not_prometheus",
                "{bad}"
            );
        }
    }

    #[test]
    fn server_text_in_errors_is_cleaned_and_cut() {
        let hostile = format!(
            r#"{{"status":"error","errorType":"bad\u001b[31m","error":"\u001b]0;owned\u0007{}"}}"#,
            "x".repeat(100_000)
        );
        let text = decode_all(&hostile).unwrap_err().to_string();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(text.contains("(bad?[31m): ?]0;owned?xxx"), "{text}");
        assert!(text.len() < 600, "{} bytes", text.len());
        let value = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"\u001b{}"]}}]}}}}"#,
            "9".repeat(10_000)
        );
        let text = decode_all(&value).unwrap_err().to_string();
        assert!(!text.contains('\u{1b}') && text.len() < 600, "{text:?}");
        let kind = decode_all(
            r#"{"status":"success","data":{"resultType":"\u001b[2Jmatrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#,
        )
        .unwrap_err();
        assert!(kind.to_string().contains("got ?[2Jmatrix"), "{kind}");
    }

    #[test]
    fn non_finite_values_come_through_as_such() {
        let found = decode_all(
            r#"{"data":{"result":[{"metric":{"a":"1"},"value":[1,"NaN"]},{"value":[2,"+Inf"]},{"value":[3,"-Inf"]}],"resultType":"vector"},"status":"success"}"#,
        )
        .unwrap();
        assert!(found[0].value.is_nan());
        assert_eq!(found[1].value, f64::INFINITY);
        assert_eq!(found[2].value, f64::NEG_INFINITY);
        assert_eq!(found[0].label("a"), "1");
    }
}
