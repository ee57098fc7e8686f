"""A fake Kubernetes API server for the live dashboard test: HTTPS with a CA made at test time, serving
one node's pods to kepler-rs's kube client the way the API server does.

It answers exactly what the exporter's watcher asks (exporter/src/resource/kube.rs, kube-runtime's
watcher with `any_semantic()` and no pages):

  GET /api/v1/pods?&fieldSelector=spec.nodeName%3D<node>&resourceVersion=0                  (list)
  GET /api/v1/pods?&watch=true&timeoutSeconds=290&fieldSelector=...&allowWatchBookmarks=true
      &resourceVersion=<the list's>                                                         (watch)

The pods never change during a test, so a watch sends only bookmarks and ends cleanly after
timeoutSeconds, as the API server does. Any other request is refused (401 without the kubeconfig's
token, 400 without this node's field selector, 404 for other paths), and every request is recorded so
the test can check that the exporter asked for this node's pods only.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TOKEN = "kepler-rs-dashboards-test-token"
RESOURCE_VERSION = 4242
BOOKMARK_EVERY_S = 5.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    authorized: bool

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") == "true"


def _key_usage(**on: bool) -> x509.KeyUsage:
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"]
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it, as PEM files
    (ca.crt, server.crt, server.key). rustls (the exporter's TLS) wants v3 certificates with a subject
    alternative name, a CA with keyCertSign, and no CA flag on the server's."""
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_valid_before=now - datetime.timedelta(minutes=5), not_valid_after=now + datetime.timedelta(days=1))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kepler-rs dashboards test CA")])
    ca = (x509.CertificateBuilder(**valid)
          .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder(**valid)
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))

    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked watches, like the API server's HTTP/1.1
    server: "_Server"

    def setup(self):
        self.request.settimeout(30)
        self.request.do_handshake()  # in this connection's thread, not in accept()
        self.request.settimeout(None)
        super().setup()

    def log_message(self, *args):
        pass

    def _json(self, code: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        api = self.server.api
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        authorized = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        with api.lock:
            api.requests.append(Request("GET", url.path, query, authorized))
        if not authorized:
            return self._json(401, status(401, "Unauthorized", "Unauthorized"))
        if url.path != "/api/v1/pods":
            return self._json(404, status(404, "NotFound", "not served here"))
        if query.get("fieldSelector") != f"spec.nodeName={api.node}":
            return self._json(400, status(400, "BadRequest", "this fake API server only serves its node's pods"))
        if query.get("watch") != "true":
            return self._json(200, {"apiVersion": "v1", "kind": "PodList",
                                    "metadata": {"resourceVersion": str(RESOURCE_VERSION)}, "items": api.pods})
        self._watch(float(query.get("timeoutSeconds", "290")))

    def do_POST(self):
        self._refuse()

    do_PUT = do_PATCH = do_DELETE = do_POST

    def _refuse(self):
        api = self.server.api
        url = urllib.parse.urlsplit(self.path)
        with api.lock:
            api.requests.append(Request(self.command, url.path, dict(urllib.parse.parse_qsl(url.query)), False))
        self._json(405, status(405, "MethodNotAllowed", "read-only fake API server"))

    def _chunk(self, event: dict):
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, timeout_s: float):
        api = self.server.api
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        with api.lock:
            api.open_watches += 1
        try:
            waited = 0.0
            while waited < timeout_s:
                step = min(BOOKMARK_EVERY_S, timeout_s - waited)
                if api.stopping.wait(step):
                    return  # the server is closing: drop the connection
                waited += step
                self._chunk({"type": "BOOKMARK", "object": {
                    "kind": "Pod", "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(RESOURCE_VERSION), "annotations": {}}}})
            self.wfile.write(b"0\r\n\r\n")  # the watch's timeout: end the response; the client re-watches
            self.wfile.flush()
        finally:
            with api.lock:
                api.open_watches -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: "FakeKubeApi"

    def handle_error(self, request, client_address):
        pass  # clients that hang up (the exporter killed mid-watch) are not errors here


class FakeKubeApi:
    """Serve `pods` (Pod objects) of `node` on 127.0.0.1 over HTTPS until `stop()`. `kubeconfig` is
    written in `directory` and trusts the CA made for this server only."""

    def __init__(self, directory: Path, node: str, pods: list[dict]):
        self.node = node
        self.pods = pods
        self.requests: list[Request] = []
        self.open_watches = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        directory.mkdir(parents=True, exist_ok=True)
        ca, cert, key = make_tls(directory)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.api = self
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.httpd.server_address[1]
        self.kubeconfig = directory / "kubeconfig"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: fake\n  cluster:\n    server: https://127.0.0.1:{self.port}\n"
            f"    certificate-authority: {ca}\n"
            f"users:\n- name: kepler-rs\n  user:\n    token: {TOKEN}\n"
            "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: kepler-rs\n"
            "current-context: fake\n")
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def seen(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
