"""Talking to a running tokend as the kubelet and as real callers do: gRPC health checks, the login app's raw
gRPC call, HTTP(S) requests, one probe attempt as the kubelet makes it (grpc, httpGet, tcpSocket), and
waiting for a probe or /readyz to give an answer.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .proc import Child, poll
from .report import CheckError, expect

KUBE_PROBE_UA = "kube-probe/1.33"


def channel(port: int, creds: grpc.ChannelCredentials | None, host: str = "127.0.0.1") -> grpc.Channel:
    """A gRPC channel to host:port: plaintext, or over TLS with creds."""
    target = f"{host}:{port}"
    return grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)


def grpc_health(port: int, service: str, timeout: float, host: str = "127.0.0.1",
                creds: grpc.ChannelCredentials | None = None) -> str:
    """What the kubelet's gRPC probe does: Health/Check(service) on the port, plaintext (with creds: over TLS,
    as a client of a TLS-enabled tokend would)."""
    with channel(port, creds, host) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as e:
            return f"rpc error {e.code().name}: {e.details()}"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def login_app_call(port: int, secret: str | None, creds: grpc.ChannelCredentials | None = None) -> tuple[str, bytes]:
    """tokend.v1.AuthorizationService/GetAuthorization for an unknown login challenge, as the login app calls it
    (`authorization: Bearer <secret>` in the metadata; secret None: no metadata). No generated code: the request
    (field 1, login_challenge) is encoded by hand and the answer kept as bytes. Returns the status code name and
    the grpc-status-details-bin trailer (a google.rpc.Status whose ErrorInfo reason is the OAuth error code)."""
    challenge = b"chart-check-unknown-challenge"
    request = b"\x0a" + bytes([len(challenge)]) + challenge
    with channel(port, creds) as ch:
        call = ch.unary_unary("/tokend.v1.AuthorizationService/GetAuthorization")
        metadata = [("authorization", f"Bearer {secret}")] if secret is not None else None
        try:
            call(request, timeout=5, metadata=metadata)
        except grpc.RpcError as e:
            trailers = {m.key: m.value for m in (e.trailing_metadata() or ())}
            return e.code().name, trailers.get("grpc-status-details-bin", b"")
    return "OK", b""


def _send(port: int, path: str, timeout: float, host: str, tls: ssl.SSLContext | None, **request) -> tuple[int, bytes]:
    scheme = "https" if tls else "http"
    req = urllib.request.Request(f"{scheme}://{host}:{port}{path}", **request)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=tls) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, http.client.HTTPException) as e:  # refused, TLS failure, or TLS bytes read as HTTP
        return 0, f"{e.__class__.__name__}: {e}".encode()


def http_get(port: int, path: str, timeout: float, host: str = "127.0.0.1",
             tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """GET as the kubelet sends it (its User-Agent); status 0 when no HTTP answer came."""
    return _send(port, path, timeout, host, tls, headers={"User-Agent": KUBE_PROBE_UA, "Accept": "*/*"})


def http_post_form(port: int, path: str, form: dict, timeout: float = 5,
                   tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    return _send(port, path, timeout, "127.0.0.1", tls, data=urllib.parse.urlencode(form).encode(),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})


def kubelet_https() -> ssl.SSLContext:
    """The kubelet's HTTPS probe: TLS without certificate verification and without a client certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _container_port(kind: str, port: int | str, portmap: dict[int, int], named: dict[str, int]) -> int:
    cport = named[port] if isinstance(port, str) else port
    expect(cport in portmap, f"{kind} probe port {port} is not a container port")
    return cport


def run_probe(probe: dict, portmap: dict[int, int], named: dict[str, int]) -> tuple[bool, str]:
    """One probe attempt as the kubelet makes it. portmap: container port -> port tokend listens on here;
    named: container port name -> container port."""
    timeout = probe.get("timeoutSeconds", 1)
    if "grpc" in probe:
        cport = _container_port("grpc", probe["grpc"]["port"], portmap, {})
        status = grpc_health(portmap[cport], probe["grpc"].get("service", ""), timeout)
        return status == "SERVING", f"grpc {probe['grpc'].get('service', '')!r} on :{cport} -> {status}"
    if "httpGet" in probe:
        hg = probe["httpGet"]
        cport = _container_port("httpGet", hg["port"], portmap, named)
        scheme = hg.get("scheme", "HTTP")
        code, body = http_get(portmap[cport], hg.get("path", "/"), timeout,
                              tls=kubelet_https() if scheme == "HTTPS" else None)
        return 200 <= code < 400, f"GET {scheme} {hg.get('path')} on :{cport} -> {code} {body[:120]!r}"
    if "tcpSocket" in probe:
        cport = _container_port("tcpSocket", probe["tcpSocket"]["port"], portmap, named)
        try:
            socket.create_connection(("127.0.0.1", portmap[cport]), timeout=timeout).close()
        except OSError as e:
            return False, f"TCP connect :{cport} -> {e}"
        return True, f"TCP connect :{cport} -> connected"
    raise CheckError(f"unsupported probe {probe}")


def wait_probe(probe: dict, portmap: dict, named: dict, budget: float, proc: Child, want: bool = True,
               interval: float | None = None) -> str:
    """Polls like the kubelet (every periodSeconds, at most every second, or every interval) until the probe
    passes (want False: until it fails) or the budget runs out; tokend must stay up meanwhile. Returns the
    last attempt's answer."""
    def attempt() -> tuple[bool, str]:
        expect(proc.alive(), f"tokend exited (code {proc.proc.returncode}):\n{proc.tail()}")
        ok, msg = run_probe(probe, portmap, named)
        return ok == want, msg

    def failure(last: str) -> str:
        if want:
            return f"probe never passed within {budget:.0f}s; last: {last}\ntokend log:\n{proc.tail()}"
        return f"probe still passes {budget:.0f}s on: {last}"
    return poll(attempt, budget, interval or min(probe.get("periodSeconds", 10), 1), failure)


def wait_readyz(port: int, tls: ssl.SSLContext | None, want: int, budget: float, interval: float = 0.25) -> str:
    """Polls /readyz as a real caller (under mTLS the kubelet cannot: its probe is a TCP connect)."""
    def attempt() -> tuple[bool, tuple[int, bytes]]:
        code, body = http_get(port, "/readyz", 1, tls=tls)
        return code == want, (code, body)
    code, body = poll(attempt, budget, interval,
                      lambda last: f"/readyz never answered {want} within {budget:.0f}s; last: {last[0]} {last[1][:200]!r}")
    return f"GET /readyz -> {code} {body[:80]!r}"
