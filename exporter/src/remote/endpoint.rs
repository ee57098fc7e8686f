//! A server's base URL as the user gave it (`node:28282`, `https://prom.example/prometheus/`),
//! parsed once by `http::Uri`, and the request URIs under it. No I/O; no credentials in URLs.

use super::options::SetupError;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};

/// A parsed base URL: scheme, authority and an optional path prefix (no query, no user info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    scheme: Scheme,
    authority: Authority,
    /// The prefix without its trailing slash ("" for none).
    path: String,
}

impl BaseUrl {
    /// `node:28282`, `http://node:28282/` and `https://prom.example/prometheus` are all fine; a
    /// URL without a scheme is http.
    pub(crate) fn parse(url: &str) -> Result<BaseUrl, SetupError> {
        let bad = |reason: &str| SetupError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        // `host:port[/path]` without a scheme is http.
        let full = if url.contains("://") {
            std::borrow::Cow::Borrowed(url)
        } else {
            std::borrow::Cow::Owned(format!("http://{url}"))
        };
        let uri: Uri = full
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad("the scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if authority.host().is_empty() {
            return Err(bad("no host"));
        }
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials do not belong in the URL: use --basic-auth-user with \
                 --basic-auth-password-file or KEPLER_RS_BASIC_AUTH_PASSWORD",
            ));
        }
        if uri.query().is_some() {
            return Err(bad("a base URL has no query"));
        }
        Ok(BaseUrl {
            scheme,
            authority,
            path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    pub(crate) fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// `host:port`, with the scheme's default port when none was given (for error messages).
    pub(crate) fn host_port(&self) -> String {
        let port = self
            .authority
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 });
        format!("{}:{port}", self.authority.host())
    }

    /// The path prefix, without a trailing slash ("" for none).
    #[cfg(test)]
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// What to GET for an exposition: the given path, or `/metrics` when none was given.
    pub(crate) fn exposition_path(&self) -> &'static str {
        if self.path.is_empty() {
            "/metrics"
        } else {
            ""
        }
    }

    /// The URI of `path` (starting with `/`, or empty) plus an already encoded `query` under
    /// this base.
    pub(crate) fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut path_and_query = format!("{}{path}", self.path);
        if path_and_query.is_empty() {
            path_and_query.push('/');
        }
        if let Some(query) = query {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::try_from(path_and_query)?)
            .build()
    }

    /// The URL of `path` under this base, as text (for messages; never fails).
    pub(crate) fn join(&self, path: &str) -> String {
        format!("{}://{}{}{path}", self.scheme, self.authority, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = BaseUrl::parse("node1:28282").unwrap();
        assert_eq!(b.join("/metrics"), "http://node1:28282/metrics");
        assert_eq!(b.exposition_path(), "/metrics");
        assert!(!b.is_https());
        let b = BaseUrl::parse("http://prom.example/prometheus/").unwrap();
        assert_eq!(
            b.uri("/api/v1/query", Some("query=up"))
                .unwrap()
                .to_string(),
            "http://prom.example/prometheus/api/v1/query?query=up"
        );
        assert_eq!(b.host_port(), "prom.example:80");
        let b = BaseUrl::parse("https://prom.example").unwrap();
        assert!(b.is_https());
        assert_eq!(b.host_port(), "prom.example:443");
        assert_eq!(
            b.uri("", None).unwrap().to_string(),
            "https://prom.example/"
        );
        let b = BaseUrl::parse("http://127.0.0.1:9/metrics").unwrap();
        assert_eq!(b.path(), "/metrics");
        assert_eq!(b.exposition_path(), "");
        let b = BaseUrl::parse("https://[::1]:9090/").unwrap();
        assert_eq!(b.host_port(), "[::1]:9090");
        assert_eq!(b.join("/x"), "https://[::1]:9090/x");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (bad, reason) in [
            ("ftp://x", "http or https"),
            ("http://", "empty"),
            ("http://a b", "invalid"),
            ("https://alice:secret@prom.example", "--basic-auth-user"),
            ("http://p:9090/?x=1", "no query"),
        ] {
            let err = BaseUrl::parse(bad).unwrap_err();
            assert!(matches!(err, SetupError::BadUrl { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(reason), "{bad}: {err}");
        }
    }
}
