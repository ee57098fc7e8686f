//! `PodResourcesSocket`: the kubelet's `v1.PodResourcesLister/List` called over its unix socket, as a
//! minimal gRPC client (HTTP/2 through hyper, one unary call, no generated code). Runs on the monitor's
//! thread with its own single-threaded runtime and a timeout, so a stuck kubelet never stalls a tick
//! for long. Decoding is `podresources::decode_list_response`.

use super::podresources::{
    decode_list_response, DeviceAssignment, DeviceAssignments, PodResourcesError,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::PathBuf;
use std::time::Duration;

/// Longest wait for one List call.
pub(crate) const LIST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response accepted (a node with hundreds of pods answers a few hundred KiB).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The kubelet's PodResources API on `path`. A missing socket means "no kubelet here" (`Ok(None)`).
pub(crate) struct PodResourcesSocket {
    path: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
    seen: Option<bool>,
}

impl PodResourcesSocket {
    pub(crate) fn new(path: PathBuf) -> PodResourcesSocket {
        PodResourcesSocket {
            path,
            runtime: None,
            seen: None,
        }
    }

    fn connect_error(&self, detail: impl ToString) -> PodResourcesError {
        PodResourcesError::Connect {
            path: self.path.display().to_string(),
            detail: detail.to_string(),
        }
    }
}

impl DeviceAssignments for PodResourcesSocket {
    fn list(&mut self) -> Result<Option<Vec<DeviceAssignment>>, PodResourcesError> {
        let present = self.path.exists();
        if self.seen != Some(present) {
            if present {
                tracing::info!(socket = %self.path.display(), "GPU assignments: kubelet PodResources API");
            } else {
                tracing::info!(socket = %self.path.display(), "no kubelet PodResources socket: GPU energy by processes only");
            }
            self.seen = Some(present);
        }
        if !present {
            return Ok(None);
        }
        if self.runtime.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| self.connect_error(format!("cannot start a runtime: {e}")))?;
            self.runtime = Some(rt);
        }
        let path = self.path.clone();
        let Some(rt) = &self.runtime else {
            return Ok(None);
        };
        let body = rt.block_on(async move {
            tokio::time::timeout(LIST_TIMEOUT, call_list(path))
                .await
                .unwrap_or_else(|_| {
                    Err(PodResourcesError::Rpc {
                        detail: format!("no answer within {LIST_TIMEOUT:?}"),
                    })
                })
        })?;
        decode_list_response(&unframe(&body)?).map(Some)
    }
}

async fn call_list(path: PathBuf) -> Result<Bytes, PodResourcesError> {
    let connect_error = |detail: String| PodResourcesError::Connect {
        path: path.display().to_string(),
        detail,
    };
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|e| connect_error(e.to_string()))?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| connect_error(format!("HTTP/2 handshake: {e}")))?;
    let driver = tokio::spawn(connection);
    let rpc = |detail: String| PodResourcesError::Rpc { detail };
    // An empty ListPodResourcesRequest: flag 0 (uncompressed), length 0.
    let request = hyper::Request::post("http://localhost/v1.PodResourcesLister/List")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .map_err(|e| rpc(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| rpc(e.to_string()))?;
    if !response.status().is_success() {
        return Err(rpc(format!("HTTP status {}", response.status())));
    }
    let header_status = grpc_status(response.headers());
    let collected = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| rpc(format!("reading the response: {e}")))?;
    let status = collected.trailers().and_then(grpc_status).or(header_status);
    driver.abort();
    match status {
        Some((0, _)) | None => Ok(collected.to_bytes()),
        Some((code, message)) => Err(rpc(format!("grpc-status {code}: {message}"))),
    }
}

fn grpc_status(headers: &hyper::HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((code, message))
}

/// Strip the gRPC length-prefixed frame (1 byte compressed flag, 4 bytes big-endian length).
pub(crate) fn unframe(body: &[u8]) -> Result<Vec<u8>, PodResourcesError> {
    let err = |detail: &'static str| PodResourcesError::Decode { detail, offset: 0 };
    if body.is_empty() {
        // An empty message may be sent without a frame by some servers: no pods.
        return Ok(Vec::new());
    }
    let header = body
        .get(..5)
        .ok_or_else(|| err("gRPC frame shorter than 5 bytes"))?;
    if header[0] != 0 {
        return Err(err("compressed gRPC message (not requested)"));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    body.get(5..5 + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| err("gRPC frame longer than the body"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::podresources::tests::response;

    #[test]
    fn frames_are_checked() {
        let msg = response(&[("ns", "p", "c", "nvidia.com/gpu", &["GPU-1"])]);
        let mut framed = vec![0];
        framed.extend((msg.len() as u32).to_be_bytes());
        framed.extend(&msg);
        assert_eq!(unframe(&framed).unwrap(), msg);
        assert!(unframe(&framed[..framed.len() - 1]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err());
        assert!(unframe(&[0, 0]).is_err());
        assert!(unframe(&[]).unwrap().is_empty());
    }

    #[test]
    fn missing_socket_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PodResourcesSocket::new(dir.path().join("kubelet.sock"));
        assert_eq!(s.list().unwrap(), None);
    }

    /// A kubelet stand-in: an HTTP/2 server on a unix socket answering List with a fixed response.
    #[test]
    fn lists_assignments_from_a_grpc_server_on_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.sock");
        let msg = response(&[(
            "jhub",
            "jupyter-alice",
            "notebook",
            "nvidia.com/gpu",
            &["GPU-aaaa"],
        )]);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(async { tokio::net::UnixListener::bind(&path) })
            .unwrap();
        let seen_path = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let seen = seen_path.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let msg = msg.clone();
                let seen = seen.clone();
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        *seen.lock().unwrap() = req.uri().path().to_string();
                        let msg = msg.clone();
                        async move {
                            let mut framed = vec![0u8];
                            framed.extend((msg.len() as u32).to_be_bytes());
                            framed.extend(&msg);
                            let mut trailers = hyper::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            let body = DataThenTrailers {
                                data: Some(Bytes::from(framed)),
                                trailers: Some(trailers),
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(body)
                                    .unwrap(),
                            )
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let mut s = PodResourcesSocket::new(path);
        let got = s.list().unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pod.name, "jupyter-alice");
        assert_eq!(got[0].device_id, "GPU-aaaa");
        assert_eq!(*seen_path.lock().unwrap(), "/v1.PodResourcesLister/List");
        drop(rt);
    }

    /// A response body of one data frame then trailers, as a gRPC server sends.
    struct DataThenTrailers {
        data: Option<Bytes>,
        trailers: Option<hyper::HeaderMap>,
    }

    impl hyper::body::Body for DataThenTrailers {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            let frame = match self.data.take() {
                Some(d) => Some(hyper::body::Frame::data(d)),
                None => self.trailers.take().map(hyper::body::Frame::trailers),
            };
            std::task::Poll::Ready(frame.map(Ok))
        }
    }
}
