//! Parses the Prometheus text exposition (format 0.0.4) into borrowed samples. It owns only the
//! syntax: names, labels with escapes, values; what the series mean is the reader's business
//! (`top::model`, `series`).
//! Never panics on input: malformed or truncated text is a typed error naming the line.

use std::borrow::Cow;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub(crate) name: Cow<'a, str>,
    pub(crate) labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub(crate) value: f64,
}

impl Sample<'_> {
    /// The value of `label`, or "" when absent (Prometheus treats empty and absent alike).
    pub(crate) fn label(&self, label: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == label)
            .map(|(_, v)| v.as_ref())
            .unwrap_or("")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpositionError {
    #[error("truncated exposition: line {line} has no end of line ({reason})")]
    Truncated { line: usize, reason: &'static str },
    #[error("malformed exposition at line {line}: {reason}")]
    Malformed { line: usize, reason: &'static str },
}

impl ExpositionError {
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ExpositionError::Truncated { .. } => "truncated",
            ExpositionError::Malformed { .. } => "malformed",
        }
    }
}

/// Parse a whole exposition. Text that does not end with a newline was cut off in transit: the
/// last line cannot be trusted, so the whole body is rejected rather than shown half-read.
pub fn parse(text: &str) -> Result<Vec<Sample<'_>>, ExpositionError> {
    let mut samples = Vec::with_capacity(text.len() / 96);
    let complete = text.is_empty() || text.ends_with('\n');
    // split, not lines: the segment after the last newline is the (possibly cut) final line.
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let sample = if line.trim().is_empty() || line.starts_with('#') {
            Ok(None)
        } else {
            parse_line(line).map(Some)
        };
        let number = index + 1;
        match sample {
            // The cut final line: its own error where it has one.
            _ if lines.peek().is_none() && !complete => {
                return Err(ExpositionError::Truncated {
                    line: number,
                    reason: sample.err().unwrap_or("the body ends inside a line"),
                })
            }
            Err(reason) => {
                return Err(ExpositionError::Malformed {
                    line: number,
                    reason,
                })
            }
            Ok(sample) => samples.extend(sample),
        }
    }
    Ok(samples)
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// A metric or label name at the start of `text`, and what follows it.
fn split_name(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    if !bytes.first().copied().is_some_and(is_name_start) {
        return None;
    }
    let end = bytes
        .iter()
        .position(|b| !is_name_char(*b))
        .unwrap_or(bytes.len());
    Some(text.split_at(end))
}

fn parse_line(line: &str) -> Result<Sample<'_>, &'static str> {
    let (name, mut rest) = split_name(line).ok_or("a sample must start with a metric name")?;
    let mut labels = Vec::with_capacity(8);
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("missing value")?;
    let value = parse_value(value).ok_or("value is not a number")?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| "timestamp is not an integer")?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the value");
    }
    Ok(Sample {
        name: Cow::Borrowed(name),
        labels,
        value,
    })
}

/// Parses `k="v",...}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
) -> Result<&'a str, &'static str> {
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let (key, after) = split_name(rest).ok_or("bad label name")?;
        rest = after
            .strip_prefix("=\"")
            .ok_or("expected =\" after a label name")?;
        let (value, after) = parse_label_value(rest)?;
        labels.push((Cow::Borrowed(key), value));
        rest = after.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label value");
        }
    }
}

/// A label value up to its closing quote; borrowed unless it holds escapes.
fn parse_label_value(rest: &str) -> Result<(Cow<'_, str>, &str), &'static str> {
    let bytes = rest.as_bytes();
    let mut owned: Option<String> = None;
    let mut start = 0;
    // memchr2 skips the plain bytes in SIMD steps: label values (container IDs) are most of the text.
    while let Some(found) = memchr::memchr2(b'"', b'\\', &bytes[start..]) {
        let i = start + found;
        if bytes[i] == b'"' {
            let value = match owned {
                Some(mut s) => {
                    s.push_str(&rest[start..i]);
                    Cow::Owned(s)
                }
                None => Cow::Borrowed(&rest[..i]),
            };
            return Ok((value, &rest[i + 1..]));
        }
        let s = owned.get_or_insert_with(String::new);
        s.push_str(&rest[start..i]);
        match bytes.get(i + 1) {
            Some(b'n') => s.push('\n'),
            Some(b'\\') => s.push('\\'),
            Some(b'"') => s.push('"'),
            Some(_) => return Err("unknown escape in a label value"),
            None => return Err("label value ends in an escape"),
        }
        start = i + 2;
    }
    Err("unterminated label value")
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_labels_escapes_and_values() {
        let text = "# HELP x y\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"u\\\\o\\nte\"} 12.5\nup 1 1700000000000\nnan_metric{} NaN\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "x_total");
        assert_eq!(samples[0].label("a"), "1");
        assert_eq!(samples[0].label("b"), "q\"u\\o\nte");
        assert_eq!(samples[0].label("missing"), "");
        assert_eq!(samples[0].value, 12.5);
        assert_eq!(samples[1].value, 1.0);
        assert!(samples[2].value.is_nan());
    }

    #[test]
    fn truncated_body_is_an_error_naming_the_line() {
        let text = "a 1\nb{pod=\"x\"} 2\nc{pod=\"y";
        assert_eq!(
            parse(text),
            Err(ExpositionError::Truncated {
                line: 3,
                reason: "unterminated label value"
            })
        );
        // Cut exactly after a value: the number may be incomplete, so it is refused too.
        assert_eq!(parse("a 1\nb 2").unwrap_err().kind(), "truncated");
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for bad in [
            "{a=\"1\"} 1\n",
            "a{=\"1\"} 1\n",
            "a{b=1} 1\n",
            "a{b=\"1\" c=\"2\"} 1\n",
            "a{b=\"\\x\"} 1\n",
            "a\n",
            "a one\n",
            "a 1 2 3\n",
            "a 1 soon\n",
            "<html><body>hello</body></html>\n",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.kind(), "malformed", "{bad:?}");
        }
    }

    #[test]
    fn long_and_odd_label_values_survive() {
        let long = "é".repeat(10_000);
        let text = format!("kepler_pod_cpu_watts{{pod_name=\"{long}\",pod_id=\"\u{1b}[2J\"}} 3\n");
        let samples = parse(&text).unwrap();
        assert_eq!(samples[0].label("pod_name"), long);
        assert_eq!(samples[0].label("pod_id"), "\u{1b}[2J");
    }

    proptest::proptest! {
        /// Any text, and any cut of a real exposition: an answer or an error, never a panic.
        #[test]
        fn never_panics(text in "(?s).{0,200}", cut in 0usize..4000) {
            let _ = parse(&text);
            let real = include_str!("../top/fixtures/exporter_two_pods.prom");
            let mut end = cut.min(real.len());
            while !real.is_char_boundary(end) {
                end -= 1;
            }
            let prefix = &real[..end];
            let result = parse(prefix);
            if !prefix.is_empty() && !prefix.ends_with('\n') {
                proptest::prop_assert!(result.is_err(), "a cut body was accepted");
            }
        }
    }

    #[test]
    fn parses_the_real_exporters_output() {
        let text = include_str!("../top/fixtures/exporter_two_pods.prom");
        let samples = parse(text).unwrap();
        // The exporter counts its own series: every one of them was read.
        let series = samples
            .iter()
            .find(|s| s.name == "kepler_exporter_series")
            .map(|s| s.value);
        assert_eq!(Some(samples.len() as f64), series);
        assert!(samples
            .iter()
            .any(|s| s.name == "kepler_pod_cpu_joules_total" && s.label("zone") == "package"));
    }
}
