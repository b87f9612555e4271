"""Step 4, the running tokend's API through what the chart wires up: TLS/mTLS on both listeners, every
Service port, the admin API, the login app's authentication, the JWKS, a client's token, /metrics.
"""

from __future__ import annotations

import json
import os
import re

from .pod import LocalPod
from .probes import grpc_health, http_get, http_post_form, login_app_call
from .proc import minimal_env, run
from .render import find
from .report import R, Skip, expect
from .tokend import CI_ADMIN_SECRET, CI_CLIENT_HASH, CI_CLIENT_SECRET, CI_LOGIN_APP_SECRET, METRICS


def check_api(p: LocalPod) -> None:
    if p.mode != "plain":
        with R.check(f"{p.prefix}: [tls] {p.mode}: both listeners serve the mounted certificate"
                     + (" and refuse callers without a client certificate" if p.mode == "mtls" else "")):
            check_tls(p)
    with R.check(f"{p.prefix}: every Service port reaches tokend (gRPC health, HTTP bridge, admin /metrics)"):
        check_service_ports(p)
    if "admin" in p.cfg:
        with R.check(f"{p.prefix}: admin API: `tokend admin list-clients` with the admin secret, refused without"):
            check_admin(p)
    with R.check(f"{p.prefix}: login app: AuthorizationService lets the login app's secret through, refuses other callers"):
        check_login_app(p)
    with R.check(f"{p.prefix}: signing keys from the Secret are published in the JWKS"):
        check_jwks(p)
    clients = [cl for cl in (p.values.get("clients") or {}).get("items", [])
               if CI_CLIENT_HASH in cl.get("secret_hashes", [])]
    if (p.values.get("clients") or {}).get("existingSecret"):
        clients = [{"client_id": "ci-client"}]
    if clients:
        with R.check(f"{p.prefix}: a client from the clients Secret gets a token over the HTTP bridge"):
            check_client_token(p, clients[0]["client_id"])
    with R.check(f"{p.prefix}: /metrics (ServiceMonitor target) serves tokend's Prometheus metrics"):
        check_metrics(p)


def check_tls(p: LocalPod) -> None:
    http, grpc_port = p.ports["http"], p.ports["grpc"]
    code, _ = http_get(http, "/healthz", 2, tls=p.caller)
    expect(code == 200, f"HTTPS /healthz with the CA -> {code}")
    st = grpc_health(grpc_port, "tokend.v1.TokenService", 2, creds=p.creds)
    expect(st == "SERVING", f"gRPC over TLS -> {st}")
    code, body = http_get(http, "/healthz", 2)
    expect(code != 200, f"plain HTTP on the TLS port answered {code}")
    if p.mode == "mtls":
        code, body = http_get(http, "/healthz", 2, tls=p.pki.context(client_cert=False))
        expect(code == 0, f"HTTPS without a client certificate -> {code} {body[:100]!r}")
        st = grpc_health(grpc_port, "", 2, creds=p.pki.grpc_credentials(client_cert=False))
        expect(st != "SERVING", f"gRPC without a client certificate -> {st}")


def check_service_ports(p: LocalPod) -> None:
    for svc in find(p.docs, "Service"):
        for sp in svc["spec"]["ports"]:
            target = p.named[sp["targetPort"]] if isinstance(sp["targetPort"], str) else sp["targetPort"]
            local = p.portmap[target]
            where = f"{svc['metadata']['name']}:{sp['port']}"
            if sp["name"] == "grpc":
                st = grpc_health(local, "tokend.v1.TokenService", 2, creds=p.creds)
                expect(st == "SERVING", f"{where} (gRPC) -> {st}")
            elif sp["name"] == "admin":
                code, body = http_get(local, "/metrics", 2)
                expect(code == 200 and b"tokend_build_info" in body, f"{where} (admin /metrics) -> {code} {body[:200]!r}")
            else:
                code, body = http_get(local, "/.well-known/oauth-authorization-server", 2, tls=p.caller)
                expect(code == 200, f"{where} (HTTP) -> {code} {body[:200]!r}")
                meta = json.loads(body)
                expect(meta.get("issuer") == p.cfg["issuer"], f"issuer {meta.get('issuer')} != {p.cfg['issuer']}")


def check_admin(p: LocalPod) -> None:
    def list_clients(token: str):
        return run([p.binary, "admin", "list-clients"], timeout=30,
                   env=minimal_env(TOKEND_ADMIN_ADDR=f"127.0.0.1:{p.ports['admin']}", TOKEND_ADMIN_TOKEN=token))
    r = list_clients(CI_ADMIN_SECRET)
    if "TOKEND_ADMIN_TOKEN_HASH" not in p.env:
        expect(r.returncode != 0 and "Unimplemented" in r.stderr,
               f"without a token hash the admin API must be off: exit {r.returncode}: {r.stdout}{r.stderr}")
        return
    expect(r.returncode == 0, f"tokend admin list-clients -> exit {r.returncode}: {r.stdout}{r.stderr}")
    ids = [json.loads(line)["client_id"] for line in r.stdout.splitlines() if line.strip()]
    expect(ids, f"list-clients printed no client: {r.stdout!r}")
    r = list_clients("wrong-secret")
    expect(r.returncode != 0 and "Unauthenticated" in r.stderr,
           f"a wrong admin secret -> exit {r.returncode}: {r.stdout}{r.stderr}")
    print(f"        clients: {', '.join(ids)}")


def check_login_app(p: LocalPod) -> None:
    code, details = login_app_call(p.ports["grpc"], CI_LOGIN_APP_SECRET, p.creds)
    if "TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH" not in p.env:
        expect(code == "PERMISSION_DENIED",
               f"no login app hash configured: GetAuthorization -> {code} {details[:120]!r}, want PERMISSION_DENIED")
        return
    expect(code == "INVALID_ARGUMENT" and b"invalid_request" in details,
           f"GetAuthorization(unknown challenge) with the login app's secret -> {code} {details[:120]!r}, "
           "want INVALID_ARGUMENT invalid_request (authenticated, then an unknown challenge)")
    for label, secret in (("without a secret", None), ("with a wrong secret", "wrong-secret")):
        code, details = login_app_call(p.ports["grpc"], secret, p.creds)
        expect(code == "UNAUTHENTICATED", f"GetAuthorization {label} -> {code} {details[:120]!r}, want UNAUTHENTICATED")
    print("        with the secret: INVALID_ARGUMENT invalid_request; without or wrong: UNAUTHENTICATED")


def check_jwks(p: LocalPod) -> None:
    code, body = http_get(p.ports["http"], "/.well-known/jwks.json", 2, tls=p.caller)
    expect(code == 200, f"jwks -> {code}")
    keys = json.loads(body).get("keys", [])
    signing = p.cfg["signing"]
    want = 1 + len(signing.get("previous_key_files", []))
    expect(len(keys) == want, f"JWKS has {len(keys)} keys, the chart mounts {want}")
    algs = {k.get("alg") for k in keys}
    expect(signing["algorithm"] in algs, f"JWKS algs {algs}, config {signing['algorithm']}")


def check_client_token(p: LocalPod, client_id: str) -> None:
    def token(secret: str) -> tuple[int, bytes]:
        return http_post_form(p.ports["http"], "/oauth/token", {
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}, tls=p.caller)
    code, body = token(CI_CLIENT_SECRET)
    expect(code == 200 and b"access_token" in body, f"/oauth/token -> {code} {body[:300]!r}")
    code, body = token("wrong")
    expect(code == 401, f"wrong secret -> {code} {body[:200]!r}")


def check_metrics(p: LocalPod) -> None:
    if os.environ.get("CHART_CHECK_NO_METRICS") == "1":
        raise Skip("CHART_CHECK_NO_METRICS=1")
    if "admin" in p.cfg:
        code, body = http_get(p.ports["http"], "/metrics", 2, tls=p.caller)
        expect(code == 404, f"GET /metrics on the HTTP port -> {code}: with [admin] it must be on the admin port only")
        code, body = http_get(p.ports["admin"], "/metrics", 2)
        where = "admin port"
    else:
        code, body = http_get(p.ports["http"], "/metrics", 2, tls=p.caller)
        where = "HTTP port"
    expect(code == 200, f"GET /metrics on the {where} -> {code} {body[:200]!r} (the ServiceMonitor and dashboard need it)")
    names = set(re.findall(r"^(?:# TYPE )?(tokend_[a-z_]+)", body.decode(errors="replace"), re.M))
    base = {n[:-len(s)] if n.endswith(s) else n for n in names for s in ("_bucket", "_sum", "_count", "")}
    seen = {m for m in METRICS if m in names or m.removesuffix("_bucket") in base}
    always = {"tokend_store_up", "tokend_build_info", "tokend_signing_key_info"}
    expect(always <= seen, f"/metrics lacks {sorted(always - seen)}")
    if METRICS - seen:
        R.note(f"{p.name}: /metrics has no series yet for {sorted(METRICS - seen)} (label sets appear on first use)")
