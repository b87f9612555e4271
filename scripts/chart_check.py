#!/usr/bin/env python3
"""Checks the tokend Helm chart without a cluster (run it through scripts/chart-check.sh).

1. lint (strict) and render the chart with the default values and with each helm/tokend/ci/*.yaml;
2. validate every rendered manifest with kubernetes-validate (strict) for the oldest and the newest
   Kubernetes version the chart claims (Chart.yaml kubeVersion), skipping only custom-resource kinds;
   plus the chart's own rules (hardening, probes, ports, nothing secret in the ConfigMap, ...);
3. negative tests: the values schema rejects wrong types and unknown keys, the templates refuse
   unsafe combinations;
4. runs the tokend binary ($TOKEND_BIN, default target/debug/tokend) on what the chart renders: the
   ConfigMap and Secrets are written to a temporary folder laid out like the pod's mounts (mount
   paths rewritten into it, listen ports replaced by free ports, the store URL pointed at a local
   redis-server; nothing else changed; Secrets that come from outside the chart (existingSecret) get
   stand-ins made with `tokend keygen`, and TLS certificates from a throwaway CA made with openssl),
   `tokend check-config` must accept it, `tokend serve` must pass every probe exactly as the kubelet
   sends it (gRPC, HTTP, HTTPS without verification, TCP), and the Service's targetPorts must lead to
   the container ports and to the ports tokend listens on. A rediss:// store gets a TLS-only
   redis-server (with client-certificate auth when the chart mounts a client certificate); the admin
   listener is checked with `tokend admin list-clients`, the login app's authentication on
   tokend.v1.AuthorizationService with a raw gRPC call, TLS and mTLS with real callers.

Prints one line per check and ends with `chart-check: N passed, M failed`; exits 1 on any failure.
Environment: TOKEND_BIN (binary to run), CHART_CHECK_SKIP_RUNTIME=1 (skip step 4, reported as skipped),
CHART_CHECK_STORE=memory (debugging a build without the Redis backend: run with memory://, no outage test),
CHART_CHECK_NO_METRICS=1 (debugging a build without /metrics: that check is skipped),
CHART_CHECK_KEEP=1 (keep the temporary pod folders). Skipped checks are listed in the summary.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

try:
    import grpc
    import helm_python as hp
    import kubernetes_validate as kv
    from grpc_health.v1 import health_pb2, health_pb2_grpc
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"chart-check: missing Python package ({e}); run scripts/chart-check.sh")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "tokend"
RELEASE = "tokend"
NAMESPACE = "tokend"
# Custom resources: kubernetes-validate has no schema for them (checked for structure by hand).
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "HTTPRoute"}
# tokend's configuration keys, as in src/config.rs (the chart must render nothing else: tokend rejects
# unknown keys). [admin] token_hash and [authorization] login_app_token_hash are not here on purpose: the
# chart passes them from Secrets (TOKEND_ADMIN_TOKEN_HASH, TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH), never
# in the ConfigMap.
TOKEND_KEYS = {
    "": {"issuer", "clients_file"},
    "http": {"listen", "max_body_bytes"},
    "grpc": {"listen"},
    "store": {"url", "key_prefix", "timeout_ms", "tls_ca_file", "tls_cert_file", "tls_key_file"},
    "tokens": {"access_ttl_secs", "refresh_ttl_secs", "code_ttl_secs", "leeway_secs"},
    "signing": {"algorithm", "key_file", "previous_key_files"},
    "log": {"format", "level"},
    "server": {"shutdown_grace_secs", "drain_delay_secs", "reload_poll_secs", "header_read_timeout_secs",
               "request_timeout_secs", "max_concurrent_requests", "max_connections"},
    "authorization": {"login_url", "challenge_ttl_secs"},
    "admin": {"listen"},
    "tls": {"cert_file", "key_file", "client_ca_file", "reload_check_secs"},
    "rate_limit": {"per_sec", "burst"},
    "auth_throttle": {"enabled", "threshold", "base_secs", "max_secs", "reset_secs"},
}
# Config keys holding paths of mounted files (each must lie under a volume mount).
FILE_KEYS = [("", "clients_file"), ("signing", "key_file"), ("store", "tls_ca_file"), ("store", "tls_cert_file"),
             ("store", "tls_key_file"), ("tls", "cert_file"), ("tls", "key_file"), ("tls", "client_ca_file")]
METRICS = {
    "tokend_tokens_issued_total", "tokend_oauth_errors_total", "tokend_request_duration_seconds_bucket",
    "tokend_store_duration_seconds_bucket", "tokend_store_errors_total", "tokend_store_up",
    "tokend_rate_limited_total", "tokend_signing_key_info", "tokend_build_info",
}
# Secret of the test clients in helm/tokend/ci/*.yaml (sha256:f82d...).
CI_CLIENT_SECRET = "ci-secret"
# Admin bearer secret of helm/tokend/ci/full-values.yaml (admin.tokenHash sha256:07c3...), also used for the
# stand-in of an admin.existingSecret.
CI_ADMIN_SECRET = "ci-admin-secret"
CI_ADMIN_HASH = "sha256:" + hashlib.sha256(CI_ADMIN_SECRET.encode()).hexdigest()
# The login app's bearer secret of helm/tokend/ci/full-values.yaml (loginApp.tokenHash sha256:0a8f...), also used
# for the stand-in of a loginApp.existingSecret.
CI_LOGIN_APP_SECRET = "ci-login-app-secret"
CI_LOGIN_APP_HASH = "sha256:" + hashlib.sha256(CI_LOGIN_APP_SECRET.encode()).hexdigest()
KUBE_PROBE_UA = "kube-probe/1.33"
MEMORY_STORE = os.environ.get("CHART_CHECK_STORE") == "memory"


# ----------------------------------------------------------------------------------------------
# reporting

class Report:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.skipped: list[tuple[str, str]] = []
        self.notes: list[str] = []

    @contextlib.contextmanager
    def check(self, name: str):
        """Runs the block as one check: an exception (AssertionError or any other) fails it."""
        t0 = time.monotonic()
        try:
            yield
        except Skip as s:
            self.skipped.append((name, str(s)))
            print(f"  SKIP  {name}: {s}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal
            msg = str(e) or e.__class__.__name__
            if not isinstance(e, (AssertionError, CheckError)):
                msg = f"{e.__class__.__name__}: {msg}\n{traceback.format_exc(limit=3)}"
            self.failed.append((name, msg))
            print(f"  FAIL  {name}\n        " + msg.replace("\n", "\n        "), flush=True)
        else:
            self.passed.append(name)
            print(f"  ok    {name} ({time.monotonic() - t0:.1f}s)", flush=True)

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        print(f"  NOTE  {msg}", flush=True)


class CheckError(Exception):
    """A failed expectation with a message meant for people."""


class Skip(Exception):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckError(msg)


R = Report()


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


# ----------------------------------------------------------------------------------------------
# rendering

def values_sets() -> list[tuple[str, dict]]:
    sets = [("default values", {})]
    for f in sorted((CHART / "ci").glob("*.yaml")):
        sets.append((f"ci/{f.name}", yaml.safe_load(f.read_text()) or {}))
    return sets


def doc_examples() -> list[tuple[str, dict]]:
    """The YAML values examples in the docs (chart README, the Deploy section of the
    top-level README): what the docs tell people to write must install. Blocks whose top-level keys are
    not chart values (other YAML) are ignored."""
    keys = set(yaml.safe_load((CHART / "values.yaml").read_text()))
    texts = []
    for doc in (CHART / "README.md",):
        if doc.exists():
            texts.append((doc.relative_to(ROOT), doc.read_text()))
    top = ROOT / "README.md"
    if top.exists():
        m = re.search(r"^## Deploy\b.*?(?=^## |\Z)", top.read_text(), re.S | re.M)
        if m:
            texts.append(("README.md#deploy", m.group(0)))
    out = []
    for name, text in texts:
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and data and set(data) <= keys:
                out.append((f"docs: {name} example {i + 1}", data))
    return out


# Rendered and validated only (steps 1-2): store URLs the runtime step cannot serve locally.
RENDER_ONLY = [
    ("inline: Redis Cluster store", {"config": {"store": {"url": "redis+cluster://redis-0.redis:6379,redis-1.redis:6379,redis-2.redis:6379"}}}),
    ("inline: managed Redis over TLS", {"config": {"store": {"url": "rediss://cache.example.internal:6380/0"}},
                                        "redis": {"existingSecret": "managed-redis"}}),
    # The runtime step covers mTLS with the admin listener (ci/mtls-values.yaml): probes on the admin port.
    ("inline: mTLS without the admin listener (tcpSocket probes)",
     {"tls": {"enabled": True, "existingSecret": "tokend-server-cert", "clientCA": {"enabled": True}}}),
]


def kube_versions() -> tuple[str, str]:
    """Oldest and newest Kubernetes minor versions the chart claims that kubernetes-validate knows."""
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text()).get("kubeVersion", "")
    supported = sorted({kv.utils.major_minor(v) for v in kv.utils.all_versions()},
                       key=lambda v: tuple(map(int, v.split("."))))
    lo = re.search(r">=\s*v?(\d+\.\d+)", constraint)
    hi = re.search(r"<\s*v?(\d+\.\d+)", constraint)
    expect(lo is not None, f"Chart.yaml kubeVersion {constraint!r} has no lower bound (>=1.NN)")
    def key(v: str) -> tuple[int, ...]:
        return tuple(map(int, v.split(".")))
    claimed = [v for v in supported if key(v) >= key(lo.group(1)) and (not hi or key(v) < key(hi.group(1)))]
    expect(bool(claimed), f"kubernetes-validate supports none of the versions claimed by {constraint!r}")
    expect(claimed[0] == lo.group(1),
           f"kubernetes-validate cannot validate the oldest claimed version {lo.group(1)} (supports {supported[0]}+)")
    return claimed[0], claimed[-1]


def render(values: dict) -> tuple[list[dict], str]:
    """`helm install --dry-run=client`: the manifests (as dicts) and NOTES.txt."""
    cfg = hp.Config(storage_driver="memory", namespace=NAMESPACE)
    rel = cfg.install(str(CHART), RELEASE, copy.deepcopy(values), namespace=NAMESPACE, dry_run="client")
    docs = [d for d in yaml.safe_load_all(rel["manifest"]) if d]
    return docs, rel.get("notes") or ""


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    expect(len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, rendered {len(found)}")
    return found[0]


def secret_files(secret: dict) -> dict[str, bytes]:
    out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    out.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return out


def tokend_container(docs: list[dict]) -> tuple[dict, dict]:
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    cs = [c for c in pod["containers"] if c["name"] == "tokend"]
    expect(len(cs) == 1, "the Deployment has no container named tokend")
    return pod, cs[0]


def config_toml(docs: list[dict]) -> tuple[str, dict]:
    cms = [d for d in find(docs, "ConfigMap") if "tokend.toml" in (d.get("data") or {})]
    expect(len(cms) == 1, f"expected one ConfigMap with tokend.toml, found {len(cms)}")
    text = cms[0]["data"]["tokend.toml"]
    return text, tomllib.loads(text)


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def config_files(cfg: dict) -> list[str]:
    """Every mounted file tokend.toml names (FILE_KEYS and the previous signing keys)."""
    out = []
    for sec, key in FILE_KEYS:
        table = cfg.get(sec, {}) if sec else cfg
        if table.get(key):
            out.append(table[key])
    return out + cfg.get("signing", {}).get("previous_key_files", [])


def tls_mode(cfg: dict) -> str:
    """How the HTTP and gRPC listeners speak: plain, tls or mtls ([tls] in tokend.toml)."""
    t = cfg.get("tls", {})
    if not t.get("cert_file"):
        return "plain"
    return "mtls" if t.get("client_ca_file") else "tls"


# ----------------------------------------------------------------------------------------------
# step 1 and 2: lint, render, validate

def lint(values: dict, kube: str) -> None:
    rep = hp.lint(str(CHART), copy.deepcopy(values), strict=True, kube_version=f"v{kube}.0")
    bad = [m for m in rep.get("messages", []) if m.get("severity", 0) >= 2]
    problems = [f"[{m['path']}] {m['error'].strip()}" for m in bad] + [e.strip() for e in rep.get("errors", [])]
    expect(not problems, "helm lint --strict:\n" + "\n".join(dict.fromkeys(problems)))


def validate_k8s(docs: list[dict], version: str) -> list[str]:
    skipped = []
    problems = []
    for d in docs:
        ident = f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        if d.get("kind") in CRD_KINDS:
            skipped.append(ident)
            continue
        try:
            kv.validate(d, version, strict=True)
        except kv.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            problems.append(f"{ident} at {path or '/'}: {e.message}")
        except kv.utils.SchemaNotFoundError as e:
            problems.append(f"{ident}: {e.message}")
    expect(not problems, f"kubernetes-validate {version} --strict:\n" + "\n".join(problems))
    return skipped


def check_crds(docs: list[dict]) -> None:
    service_ports = [p["port"] for s in find(docs, "Service") for p in s["spec"]["ports"]]
    for d in docs:
        if d.get("kind") not in CRD_KINDS:
            continue
        ident = f"{d['kind']}/{d['metadata']['name']}"
        expect(d.get("apiVersion") in ("monitoring.coreos.com/v1", "gateway.networking.k8s.io/v1"),
               f"{ident}: unexpected apiVersion {d.get('apiVersion')}")
        spec = d.get("spec") or {}
        if d["kind"] == "ServiceMonitor":
            # /metrics lives on the admin listener when there is one (the HTTP port then answers 404), else on
            # the HTTP port, over HTTPS with [tls].
            _, cfg = config_toml(docs)
            want_port = "admin" if "admin" in cfg else "http"
            want_scheme = "https" if want_port == "http" and tls_mode(cfg) != "plain" else "http"
            eps = spec.get("endpoints") or []
            expect(eps and all(e.get("port") == want_port and e.get("path") == "/metrics" and e.get("scheme") == want_scheme
                               for e in eps), f"{ident}: must scrape port {want_port} path /metrics scheme {want_scheme}")
            sel = spec["selector"]["matchLabels"]
            targets = [s for s in find(docs, "Service")
                       if all(s["metadata"]["labels"].get(k) == v for k, v in sel.items())
                       and any(p["name"] == want_port for p in s["spec"]["ports"])]
            expect(len(targets) == 1, f"{ident}: selects {len(targets)} Services with a port {want_port}, want 1")
        elif d["kind"] == "PrometheusRule":
            exprs = [r["expr"] for g in spec["groups"] for r in g["rules"]]
            used = set(re.findall(r"\btokend_[a-z_]+", " ".join(exprs)))
            expect(used <= METRICS, f"{ident}: unknown metrics {sorted(used - METRICS)}")
            # The scraped series carry service=<the Service the ServiceMonitor scrapes>: the alerts must match it.
            for sm in find(docs, "ServiceMonitor"):
                sel = sm["spec"]["selector"]["matchLabels"]
                scraped = {s["metadata"]["name"] for s in find(docs, "Service")
                           if all(s["metadata"]["labels"].get(k) == v for k, v in sel.items())}
                named = set(re.findall(r'service="([^"]+)"', " ".join(exprs)))
                expect(named and named <= scraped,
                       f"{ident}: alerts select service {sorted(named)}, the ServiceMonitor scrapes {sorted(scraped)}")
        elif d["kind"] == "HTTPRoute":
            expect(spec.get("parentRefs"), f"{ident}: no parentRefs")
            for rule in spec["rules"]:
                for b in rule["backendRefs"]:
                    expect(b["port"] in service_ports,
                           f"{ident}: backendRef port {b['port']} is no Service port")



def check_rules(name: str, values: dict, docs: list[dict], notes: str) -> None:
    """The chart's own rules, on every render."""
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    expect(len(kinds) == len(set(kinds)), f"duplicate resources: {kinds}")
    for d in docs:
        expect(d["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE,
               f"{d['kind']}/{d['metadata']['name']}: missing app.kubernetes.io/instance label")
    pod, c = tokend_container(docs)
    dep = one(docs, "Deployment")
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    expect(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, "pod must run as non-root")
    expect(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    expect(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    expect("ALL" in (csc.get("capabilities") or {}).get("drop", []), "capabilities must drop ALL")
    expect((psc.get("seccompProfile") or csc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
           "seccompProfile must be RuntimeDefault")
    res = c.get("resources", {})
    expect(res.get("requests") and res.get("limits"), "resources need requests and limits")
    expect(pod.get("automountServiceAccountToken") is False, "the pod must not mount a ServiceAccount token")
    expect(pod.get("enableServiceLinks") is False,
           "enableServiceLinks must be false (service env vars look like TOKEND_<SECTION>_<KEY> overrides)")
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    expect("checksum/config" in ann and "checksum/secrets" in ann, "pod template lacks checksum annotations")
    _, cfg = config_toml(docs)
    grace = cfg.get("server", {}).get("shutdown_grace_secs", 20)
    drain = cfg.get("server", {}).get("drain_delay_secs", 0)
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    expect(tgps > grace + drain,
           f"terminationGracePeriodSeconds {tgps} must exceed drain_delay_secs + shutdown_grace_secs ({drain} + {grace})")
    if not values.get("terminationGracePeriodSeconds"):
        expect(tgps == drain + grace + 10, f"default terminationGracePeriodSeconds {tgps} != {drain} + {grace} + 10")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        expect(probe in c or (probe == "startupProbe" and not values.get("probes", {}).get("startup", {}).get("enabled", True)),
               f"missing {probe}")
    mode = tls_mode(cfg)
    probes = [c[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in c]
    if mode == "mtls" and values.get("admin", {}).get("enabled"):
        # The kubelet has no client certificate: it probes the plain-HTTP admin listener.
        expect(all(p.get("httpGet", {}).get("port") == "admin" and p["httpGet"].get("scheme", "HTTP") == "HTTP"
                   for p in probes),
               "with mTLS and the admin listener every probe must be httpGet (plain HTTP) on the admin port")
    elif mode == "mtls":
        # No admin listener, no client certificate: only a TCP connect can pass.
        expect(all("tcpSocket" in p for p in probes), "with mTLS every probe must be tcpSocket")
    elif mode == "tls":
        # The kubelet's gRPC probe cannot speak TLS; its HTTPS probe does not verify certificates.
        expect(all(p.get("httpGet", {}).get("scheme") == "HTTPS" for p in probes),
               "with TLS every probe must be httpGet with scheme HTTPS")
    elif values.get("probes", {}).get("type", "grpc") == "grpc":
        expect("grpc" in c["readinessProbe"], "probes.type grpc must render a native grpc readiness probe")
    else:
        expect("httpGet" in c["readinessProbe"], "probes.type http must render an httpGet readiness probe")
    if mode == "plain":
        expect(all(p.get("httpGet", {}).get("scheme", "HTTP") == "HTTP" for p in probes), "HTTPS probe without [tls]")
    if values.get("topologySpread", {}).get("enabled", True):
        keys = {t["topologyKey"] for t in pod.get("topologySpreadConstraints", [])}
        expect({"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys, f"topology spread keys {keys}")
    # Config keys and secrecy.
    for sec, table in cfg.items():
        if isinstance(table, dict):
            expect(sec in TOKEND_KEYS, f"tokend.toml: unknown section [{sec}]")
            expect(set(table) <= TOKEND_KEYS[sec], f"tokend.toml [{sec}]: unknown keys {sorted(set(table) - TOKEND_KEYS[sec])}")
        else:
            expect(sec in TOKEND_KEYS[""], f"tokend.toml: unknown top-level key {sec}")
    for cm in find(docs, "ConfigMap"):
        blob = json.dumps(cm.get("data", {}))
        for bad in ("PRIVATE KEY", "sha256:", "$argon2", "password"):
            expect(bad not in blob or cm["metadata"]["name"].endswith("-dashboard"),
                   f"ConfigMap {cm['metadata']['name']} contains {bad!r}: secrets belong in Secrets")
        if "tokend.json" in cm.get("data", {}):
            expect(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard ConfigMap needs grafana_dashboard: \"1\"")
            dash = json.loads(cm["data"]["tokend.json"])
            exprs = " ".join(t.get("expr", "") for p in dash["panels"] for t in p.get("targets", []))
            used = set(re.findall(r"\btokend_[a-z_]+", exprs))
            expect(used <= METRICS, f"dashboard uses unknown metrics {sorted(used - METRICS)}")
            expect(used == METRICS, f"dashboard does not chart {sorted(METRICS - used)}")
    env = {e["name"]: e for e in c.get("env", [])}
    for var in ("TOKEND_ADMIN_TOKEN_HASH", "TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH"):
        if var in env:
            expect("secretKeyRef" in env[var].get("valueFrom", {}), f"env {var} must come from a Secret (secretKeyRef)")
    if cfg.get("authorization", {}).get("login_url"):
        expect("TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH" in env,
               "[authorization] login_url without env TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH: tokend would refuse to start")
    password = (values.get("redis") or {}).get("password")
    if password:
        for d in docs:
            if d["kind"] != "Secret":
                expect(password not in json.dumps(d), f"{d['kind']}/{d['metadata']['name']} contains the Redis password")
    # Services: the API ones (grpc + http, appProtocol following [tls]) and, with [admin], a private ClusterIP
    # one for the admin port alone (plain HTTP/1.1 metrics + h2c gRPC), never behind a public Service type.
    admin_svcs = [s for s in find(docs, "Service") if any(p["name"] == "admin" for p in s["spec"]["ports"])]
    expect(len(admin_svcs) == (1 if "admin" in cfg else 0), f"{len(admin_svcs)} Services expose the admin port")
    for svc in find(docs, "Service"):
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        if svc in admin_svcs:
            expect(set(ports) == {"admin"}, f"admin Service {svc['metadata']['name']} ports {sorted(ports)}")
            expect(svc["spec"].get("type", "ClusterIP") == "ClusterIP", "the admin Service must be ClusterIP")
            expect(ports["admin"].get("appProtocol") == "kubernetes.io/h2c", "admin port appProtocol must be kubernetes.io/h2c")
            continue
        expect(set(ports) == {"grpc", "http"}, f"Service {svc['metadata']['name']} ports {sorted(ports)}")
        if mode == "plain":
            expect(ports["grpc"].get("appProtocol") == "kubernetes.io/h2c", "grpc port appProtocol must be kubernetes.io/h2c")
            expect(ports["http"].get("appProtocol") == "http", "http port appProtocol must be http")
        else:
            expect(ports["grpc"].get("appProtocol") == "https" and ports["http"].get("appProtocol") == "https",
                   "with [tls] both ports' appProtocol must be https")
    for np_ in find(docs, "NetworkPolicy"):
        if "admin" not in cfg:
            continue
        admin_port = port_of(cfg["admin"]["listen"])
        for rule in np_["spec"].get("ingress", []):
            if any(p.get("port") == admin_port for p in rule.get("ports", [])):
                expect(rule.get("from"), "NetworkPolicy opens the admin port to everyone")
    # Defaults that the issue asks for.
    if name == "default values":
        expect(find(docs, "HorizontalPodAutoscaler"), "HPA must be on by default")
        expect(find(docs, "PodDisruptionBudget"), "PDB must be on by default")
        expect(find(docs, "ServiceAccount") and one(docs, "ServiceAccount").get("automountServiceAccountToken") is False,
               "ServiceAccount with automountServiceAccountToken: false")
    expect(RELEASE in notes or "tokend" in notes, "NOTES.txt did not render")
    check_crds(docs)


# ----------------------------------------------------------------------------------------------
# step 3: negative tests

BAD_VALUES = [
    ("wrong type: replicaCount: \"two\"", {"replicaCount": "two"}),
    ("wrong type: config.tokens.access_ttl_secs: \"1h\"", {"config": {"tokens": {"access_ttl_secs": "1h"}}}),
    ("unknown top-level key: replicas", {"replicas": 3}),
    ("unknown nested key: config.store.password", {"config": {"store": {"password": "x"}}}),
    ("unknown tokend key: config.signing.key_file", {"config": {"signing": {"key_file": "/k.pem"}}}),
    ("unknown client key: clients.items[0].secret", {"clients": {"items": [{"client_id": "a", "secret": "x"}]}}),
    ("bad enum: probes.type: tcp", {"probes": {"type": "tcp"}}),
    ("bad enum: config.signing.algorithm: HS256", {"config": {"signing": {"algorithm": "HS256"}}}),
    ("bad format: clients secret hash in clear", {"clients": {"items": [{"client_id": "a", "secret_hashes": ["hunter2"]}]}}),
    ("bad format: signing.key is a SEC1 EC key", {"signing": {"key": "-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----\n"}}),
    ("bad format: admin.tokenHash is the secret itself", {"admin": {"enabled": True, "tokenHash": "hunter2"}}),
    ("bad format: loginApp.tokenHash is the secret itself", {"config": {"authorization": {"login_url": "https://l.example/"}},
                                                             "loginApp": {"tokenHash": "hunter2"}}),
    ("bad format: loginApp.tokenHash without its sha256: prefix", {"loginApp": {"tokenHash": "0" * 64}}),
    ("out of range: config.rate_limit.per_sec: -1", {"config": {"rate_limit": {"per_sec": -1}}}),
    ("out of range: config.server.request_timeout_secs: 0", {"config": {"server": {"request_timeout_secs": 0}}}),
    ("out of range: config.authorization.challenge_ttl_secs: 0", {"config": {"authorization": {"challenge_ttl_secs": 0}}}),
    ("bad format: config.authorization.login_url with a fragment", {"config": {"authorization": {"login_url": "https://l.example/#x"}}}),
    ("wrong type: config.auth_throttle.enabled: \"yes\"", {"config": {"auth_throttle": {"enabled": "yes"}}}),
    ("chart-owned key: config.admin.listen", {"config": {"admin": {"listen": "0.0.0.0:9090"}}}),
    ("chart-owned key: config.authorization.login_app_token_hash (a Secret: loginApp)",
     {"config": {"authorization": {"login_app_token_hash": "sha256:" + "0" * 64}}}),
    ("chart-owned key: config.tls.cert_file", {"config": {"tls": {"cert_file": "/c.pem"}}}),
    ("chart-owned key: config.store.tls_ca_file", {"config": {"store": {"tls_ca_file": "/ca.pem"}}}),
    ("unknown key: redis.tls.ca", {"redis": {"tls": {"ca": "x"}}}),
]

def schema_is_closed() -> None:
    """Every object with declared properties rejects unknown keys (additionalProperties: false)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []
    def walk(node, path):
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path or "/")
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")
    walk(schema, "")
    expect(not open_objects, f"objects accepting unknown keys: {open_objects}")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    expect(set(values) == set(schema["properties"]), "values.yaml and values.schema.json list different top-level keys: "
           f"{sorted(set(values) ^ set(schema['properties']))}")


BAD_COMBINATIONS = [
    ("password inside config.store.url", {"config": {"store": {"url": "redis://:hunter2@redis:6379/0"}}}, "must not contain a password"),
    ("memory:// store with several replicas", {"config": {"store": {"url": "memory://"}}}, "memory://"),
    ("autoGenerate with ES256", {"config": {"signing": {"algorithm": "ES256"}}}, "autoGenerate"),
    ("ephemeral key with several replicas", {"signing": {"autoGenerate": False}}, "ephemeral"),
    ("terminationGracePeriodSeconds <= shutdown_grace_secs", {"terminationGracePeriodSeconds": 20}, "must be longer"),
    ("terminationGracePeriodSeconds <= drain_delay_secs + shutdown_grace_secs",
     {"terminationGracePeriodSeconds": 25, "config": {"server": {"drain_delay_secs": 5}}}, "must be longer"),
    ("auth_throttle.max_secs below base_secs", {"config": {"auth_throttle": {"base_secs": 90}}}, "at least base_secs"),
    ("auth_throttle.threshold 0 while enabled", {"config": {"auth_throttle": {"threshold": 0}}}, "must be positive"),
    ("an authorization_code client without login_url", {"clients": {"items": [
        {"client_id": "web", "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"],
         "redirect_uris": ["https://app.example/cb"]}]}}, "login_url"),
    ("admin port equal to the HTTP port", {"admin": {"enabled": True}, "containerPorts": {"grpc": 50051, "http": 8080, "admin": 8080}},
     "containerPorts.admin must differ"),
    ("admin.tokenHash without admin.enabled", {"admin": {"tokenHash": "sha256:" + "0" * 64}}, "admin.enabled"),
    ("admin.existingSecret and admin.tokenHash", {"admin": {"enabled": True, "existingSecret": "a", "tokenHash": "sha256:" + "0" * 64}},
     "not both"),
    ("config.authorization.login_url without loginApp.tokenHash or loginApp.existingSecret",
     {"config": {"authorization": {"login_url": "https://login.example/"}}}, "login_url needs the login app's bearer secret hash"),
    ("an authorization_code client with login_url but no login app secret hash",
     {"config": {"authorization": {"login_url": "https://login.example/"}}, "clients": {"items": [
         {"client_id": "web", "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"],
          "redirect_uris": ["https://app.example/cb"]}]}}, "loginApp.tokenHash"),
    ("loginApp.existingSecret and loginApp.tokenHash",
     {"config": {"authorization": {"login_url": "https://login.example/"}},
      "loginApp": {"existingSecret": "a", "tokenHash": "sha256:" + "0" * 64}}, "loginApp: set either"),
    ("tls.enabled without a Secret", {"tls": {"enabled": True}}, "tls.existingSecret"),
    ("tls.clientCA without tls", {"tls": {"clientCA": {"enabled": True}}}, "needs tls.enabled"),
    ("redis.tls with a redis:// URL", {"redis": {"tls": {"existingSecret": "redis-ca"}}}, "rediss://"),
    ("redis.tls.certKey without keyKey", {"config": {"store": {"url": "rediss://r:6380/0"}},
                                          "redis": {"tls": {"existingSecret": "r", "certKey": "tls.crt"}}}, "go together"),
    ("duplicate client_id", {"clients": {"items": [
        {"client_id": "a", "secret_hashes": ["sha256:" + "0" * 64]},
        {"client_id": "a", "secret_hashes": ["sha256:" + "1" * 64]}]}}, "duplicate client_id"),
]


def expect_rejected(values: dict, needle: str | None = None) -> None:
    try:
        render(values)
    except hp.HelmError as e:
        if needle:
            expect(needle in str(e), f"rejected, but not for the expected reason ({needle!r}): {e}")
    else:
        raise CheckError(f"values were accepted: {json.dumps(values)}")
    if needle is None:  # schema errors must also surface in helm lint
        rep = hp.lint(str(CHART), copy.deepcopy(values), strict=True)
        expect(rep.get("errors"), "helm lint accepted values that install rejects")


# ----------------------------------------------------------------------------------------------
# step 4: run tokend on the rendered chart

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pki:
    """A throwaway CA and the certificates the runtime check needs, made with openssl: stand-ins for the TLS
    Secrets an operator supplies (tls.existingSecret, tls.clientCA, redis.tls), and the other ends (a caller
    with a client certificate, a TLS redis-server). Every leaf is valid for localhost, 127.0.0.1 and ::1."""

    def __init__(self, d: Path) -> None:
        expect(shutil.which("openssl") is not None, "openssl is not installed (needed to stand in for TLS Secrets)")
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = d / "ca.crt", d / "ca.key"
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                      "-subj", "/CN=tokend chart-check CA", "-keyout", self.ca_key, "-out", self.ca,
                      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.server = self._leaf("tokend", "serverAuth")                    # tokend's HTTP and gRPC listeners
        self.client = self._leaf("ci-caller", "clientAuth")                 # a caller under mTLS
        self.redis = self._leaf("redis", "serverAuth")                      # the TLS redis-server
        self.redis_client = self._leaf("tokend-redis-client", "clientAuth")  # tokend towards Redis

    def _openssl(self, *args) -> None:
        r = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30, cwd=self.dir)
        expect(r.returncode == 0, f"openssl {args[0]} failed: {r.stderr}")

    def _leaf(self, name: str, usage: str) -> tuple[Path, Path]:
        key, csr, crt, ext = (self.dir / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
        ext.write_text(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
                       "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n")
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-days", "2",
                      "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-extfile", ext, "-out", crt)
        return crt, key

    def context(self, client_cert: bool) -> ssl.SSLContext:
        """A caller that verifies tokend's certificate (and presents one under mTLS)."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if client_cert:
            ctx.load_cert_chain(str(self.client[0]), str(self.client[1]))
        return ctx

    def grpc_credentials(self, client_cert: bool) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.client[1].read_bytes() if client_cert else None,
            certificate_chain=self.client[0].read_bytes() if client_cert else None)


class Redis:
    """A throwaway redis-server on a free loopback port; with tls (a Pki), on a TLS-only port
    (--tls-auth-clients yes when client_auth)."""

    def __init__(self, workdir: Path, password: str | None, port: int | None = None,
                 tls: Pki | None = None, client_auth: bool = False) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.password = password
        self.tls = tls
        self.client_auth = client_auth
        self.start()

    def start(self) -> None:
        password = self.password
        args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", str(self.tls.redis[0]), "--tls-key-file", str(self.tls.redis[1]),
                     "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "yes" if self.client_auth else "no"]
        else:
            args += ["--port", str(self.port)]
        if password:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return
            expect(self.proc.poll() is None, f"redis-server exited at start (code {self.proc.returncode}): {args}")
            time.sleep(0.05)
        self.stop()
        raise CheckError("redis-server did not answer PING within 10 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                s = raw
                if self.tls:
                    ctx = ssl.create_default_context(cafile=str(self.tls.ca))
                    if self.client_auth:
                        ctx.load_cert_chain(str(self.tls.redis_client[0]), str(self.tls.redis_client[1]))
                    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Tokend:
    def __init__(self, binary: Path, config: Path, env: dict, log: Path) -> None:
        self.log = log
        self.logf = open(log, "wb")
        self.proc = subprocess.Popen([str(binary), "serve", "--config", str(config)], env=env,
                                     stdout=self.logf, stderr=subprocess.STDOUT, cwd=str(config.parent),
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 25) -> str:
        self.logf.flush()
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()


def grpc_health(port: int, service: str, timeout: float, host: str = "127.0.0.1",
                creds: grpc.ChannelCredentials | None = None) -> str:
    """What the kubelet's gRPC probe does: Health/Check(service) on the port, plaintext (with creds: over TLS,
    as a client of a TLS-enabled tokend would)."""
    target = f"{host}:{port}"
    ch = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    with ch:
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
    target = f"127.0.0.1:{port}"
    ch = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    with ch:
        call = ch.unary_unary("/tokend.v1.AuthorizationService/GetAuthorization")
        metadata = [("authorization", f"Bearer {secret}")] if secret is not None else None
        try:
            call(request, timeout=5, metadata=metadata)
        except grpc.RpcError as e:
            trailers = {m.key: m.value for m in (e.trailing_metadata() or ())}
            return e.code().name, trailers.get("grpc-status-details-bin", b"")
    return "OK", b""


def _send(req: urllib.request.Request, timeout: float, tls: ssl.SSLContext | None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=tls) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, http.client.HTTPException) as e:  # refused, TLS failure, or TLS bytes read as HTTP
        return 0, f"{e.__class__.__name__}: {e}".encode()


def http_get(port: int, path: str, timeout: float, host: str = "127.0.0.1",
             tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    scheme = "https" if tls else "http"
    req = urllib.request.Request(f"{scheme}://{host}:{port}{path}",
                                 headers={"User-Agent": KUBE_PROBE_UA, "Accept": "*/*"})
    return _send(req, timeout, tls)


def http_post_form(port: int, path: str, form: dict, timeout: float = 5,
                   tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    data = urllib.parse.urlencode(form).encode()
    scheme = "https" if tls else "http"
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    return _send(req, timeout, tls)


def kubelet_https() -> ssl.SSLContext:
    """The kubelet's HTTPS probe: TLS without certificate verification and without a client certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def run_probe(probe: dict, portmap: dict[int, int], named: dict[str, int]) -> tuple[bool, str]:
    """One probe attempt as the kubelet makes it. portmap: container port -> port tokend listens on here."""
    timeout = probe.get("timeoutSeconds", 1)
    if "grpc" in probe:
        cport = probe["grpc"]["port"]
        expect(cport in portmap, f"grpc probe port {cport} is not a container port")
        status = grpc_health(portmap[cport], probe["grpc"].get("service", ""), timeout)
        return status == "SERVING", f"grpc {probe['grpc'].get('service', '')!r} on :{cport} -> {status}"
    if "httpGet" in probe:
        hg = probe["httpGet"]
        cport = named[hg["port"]] if isinstance(hg["port"], str) else hg["port"]
        expect(cport in portmap, f"httpGet probe port {hg['port']} is not a container port")
        scheme = hg.get("scheme", "HTTP")
        code, body = http_get(portmap[cport], hg.get("path", "/"), timeout,
                              tls=kubelet_https() if scheme == "HTTPS" else None)
        return 200 <= code < 400, f"GET {scheme} {hg.get('path')} on :{cport} -> {code} {body[:120]!r}"
    if "tcpSocket" in probe:
        ts = probe["tcpSocket"]
        cport = named[ts["port"]] if isinstance(ts["port"], str) else ts["port"]
        expect(cport in portmap, f"tcpSocket probe port {ts['port']} is not a container port")
        try:
            socket.create_connection(("127.0.0.1", portmap[cport]), timeout=timeout).close()
        except OSError as e:
            return False, f"TCP connect :{cport} -> {e}"
        return True, f"TCP connect :{cport} -> connected"
    raise CheckError(f"unsupported probe {probe}")


def wait_probe(probe: dict, portmap: dict, named: dict, budget: float, proc: Tokend) -> str:
    """Polls like the kubelet (every periodSeconds) until success or the budget runs out."""
    period = min(probe.get("periodSeconds", 10), 1)
    deadline = time.monotonic() + budget
    last = ""
    while time.monotonic() < deadline:
        expect(proc.alive(), f"tokend exited (code {proc.proc.returncode}):\n{proc.tail()}")
        ok, last = run_probe(probe, portmap, named)
        if ok:
            return last
        time.sleep(period)
    raise CheckError(f"probe never passed within {budget:.0f}s; last: {last}\ntokend log:\n{proc.tail()}")


def wait_readyz(port: int, tls: ssl.SSLContext | None, want: int, budget: float) -> str:
    """Polls /readyz as a real caller (under mTLS the kubelet cannot: its probe is a TCP connect)."""
    deadline = time.monotonic() + budget
    code, body = 0, b""
    while time.monotonic() < deadline:
        code, body = http_get(port, "/readyz", 1, tls=tls)
        if code == want:
            return f"GET /readyz -> {code} {body[:80]!r}"
        time.sleep(0.25)
    raise CheckError(f"/readyz never answered {want} within {budget:.0f}s; last: {code} {body[:200]!r}")


CI_CLIENTS_TOML = f"""# Stand-in for an operator-managed clients Secret (existingSecret).
[[clients]]
client_id = "ci-client"
secret_hashes = ["sha256:{hashlib.sha256(CI_CLIENT_SECRET.encode()).hexdigest()}"]
grant_types = ["client_credentials"]
scopes = ["orders:read"]
"""


def external_secret(name: str, mount: str | None, cfg: dict, binary: Path, tmp: Path,
                    pki: Pki | None) -> dict[str, bytes]:
    """Contents for a Secret the chart only references (existingSecret): the files tokend.toml expects
    under its mount, made the way an operator would (`tokend keygen`, a clients.toml, certificates from a CA)."""
    tls, store = cfg.get("tls", {}), cfg.get("store", {})
    pem = {}
    if pki:
        pem = {tls.get("cert_file"): pki.server[0], tls.get("key_file"): pki.server[1],
               tls.get("client_ca_file"): pki.ca, store.get("tls_ca_file"): pki.ca,
               store.get("tls_cert_file"): pki.redis_client[0], store.get("tls_key_file"): pki.redis_client[1]}
    files: dict[str, bytes] = {}
    for path in config_files(cfg):
        if mount is None or not path.startswith(mount + "/"):
            continue
        key = path[len(mount) + 1:]
        if path == cfg.get("clients_file"):
            files[key] = CI_CLIENTS_TOML.encode()
        elif path in pem:
            files[key] = pem[path].read_bytes()
        else:
            expect(path == cfg["signing"].get("key_file") or path in cfg["signing"].get("previous_key_files", []),
                   f"no stand-in for {path} (Secret {name})")
            out = tmp / f"keygen-{len(files)}.pem"
            r = subprocess.run([str(binary), "keygen", "--alg", cfg["signing"]["algorithm"], "--out", str(out)],
                               capture_output=True, text=True, timeout=60)
            expect(r.returncode == 0, f"tokend keygen failed: {r.stdout}{r.stderr}")
            files[key] = out.read_bytes()
    expect(files, f"Secret {name} is mounted at {mount} but tokend.toml names no file there")
    R.note(f"Secret {name} is not rendered by the chart (existingSecret): stood in with {sorted(files)}")
    return files


def layout_pod_files(docs: list[dict], pod: dict, c: dict, root: Path, cfg: dict, binary: Path,
                     pki: Pki | None) -> dict[str, str]:
    """Writes every configMap/secret volume the container mounts under root/<mountPath>.
    Returns mountPath -> local path. Secrets from outside the chart get stand-ins (external_secret)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {}
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        if "configMap" in v:
            files = {k: s.encode() for k, s in one(docs, "ConfigMap", v["configMap"]["name"])["data"].items()}
        elif "secret" in v:
            secs = find(docs, "Secret", v["secret"]["secretName"])
            if secs:
                files = secret_files(secs[0])
            else:
                files = external_secret(v["secret"]["secretName"], m["mountPath"], cfg, binary, root.parent, pki)
        else:
            raise CheckError(f"unexpected volume type in {v}")
        local = root / m["mountPath"].lstrip("/")
        local.mkdir(parents=True, exist_ok=True)
        for key, data in files.items():
            (local / key).write_bytes(data)
            mode = (v.get("secret") or v.get("configMap") or {}).get("defaultMode", 0o644)
            os.chmod(local / key, mode | 0o400)
        mounts[m["mountPath"]] = str(local)
    return mounts


# Stand-ins for env values from Secrets the chart only references; others get a random value.
ENV_STAND_INS = {"TOKEND_ADMIN_TOKEN_HASH": CI_ADMIN_HASH, "TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH": CI_LOGIN_APP_HASH}


def pod_env(docs: list[dict], c: dict, home: Path) -> dict[str, str]:
    """The container's environment, as the kubelet builds it (secretKeyRef resolved from rendered Secrets)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            secs = find(docs, "Secret", ref["name"])
            if secs:
                env[e["name"]] = secret_files(secs[0])[ref["key"]].decode()
            elif e["name"] in ENV_STAND_INS:
                env[e["name"]] = ENV_STAND_INS[e["name"]]
                R.note(f"Secret {ref['name']} (env {e['name']}) is not rendered by the chart: stood in with the CI value")
            else:
                env[e["name"]] = "stand-in-" + hashlib.sha256(ref["name"].encode()).hexdigest()[:16]
                R.note(f"Secret {ref['name']} (env {e['name']}) is not rendered by the chart: stood in with a random value")
        else:
            raise CheckError(f"env {e['name']}: unsupported valueFrom {e['valueFrom']}")
    return env


def rewrite_config(text: str, mounts: dict[str, str], listen: dict[str, int], redis_port: int | None) -> str:
    """Only three kinds of change: mount paths, listen ports ([grpc], [http], [admin]), the store's host:port."""
    out = text
    for mount, local in sorted(mounts.items(), key=lambda kv_: -len(kv_[0])):
        out = out.replace(f'"{mount}/', f'"{local}/')
    for section, port in listen.items():
        pat = re.compile(r'(\[' + section + r'\][^\[]*?\nlisten = ")([^"\n]*):(\d+)(")', re.S)
        expect(pat.search(out), f"[{section}] listen not found in tokend.toml")
        out = pat.sub(lambda m: f"{m.group(1)}{m.group(2)}:{port}{m.group(4)}", out, count=1)
    m = re.search(r'(\[store\][^\[]*?url = ")([a-z+]+)://([^/"]+)(/?[^"]*)(")', out, re.S)
    expect(m is not None, "[store] url not found in tokend.toml")
    scheme = m.group(2)
    expect(scheme in ("redis", "rediss"), f"the runtime check needs a redis:// or rediss:// store URL, got {scheme}://")
    if redis_port is None:
        out = out[:m.start(2)] + "memory://" + out[m.end(5) - 1:]
    else:
        out = out[:m.start(3)] + f"127.0.0.1:{redis_port}" + out[m.end(3):]
    # Nothing else changed: map the paths back and compare the parsed documents with ports and URL masked.
    back = out
    for mount, local in mounts.items():
        back = back.replace(f'"{local}/', f'"{mount}/')
    a, b = tomllib.loads(text), tomllib.loads(back)
    for section, port in listen.items():
        expect(port_of(b[section]["listen"]) == port, f"[{section}] listen rewrite failed: {b[section]['listen']}")
        expect(b[section]["listen"].rsplit(":", 1)[0] == a[section]["listen"].rsplit(":", 1)[0], "listen host changed")
        a[section]["listen"] = b[section]["listen"] = "<rewritten>"
    a["store"]["url"] = b["store"]["url"] = "<rewritten>"
    expect(a == b, "config rewrite changed more than paths, ports and the store address")
    return out


def runtime_check(name: str, values: dict, docs: list[dict], binary: Path, keep: bool) -> None:
    pod, c = tokend_container(docs)
    text, cfg = config_toml(docs)
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    prefix = f"runtime [{name}]"
    listeners = ["grpc", "http"] + (["admin"] if "admin" in cfg else [])
    mode = tls_mode(cfg)
    rediss = cfg["store"]["url"].startswith("rediss://")

    with R.check(f"{prefix}: ports agree (Service targetPort -> containerPort -> tokend listen)"):
        expect(set(named) == set(listeners), f"container ports {sorted(named)}, tokend listens on {listeners}")
        for sec in listeners:
            expect(port_of(cfg[sec]["listen"]) == named[sec],
                   f"[{sec}] listen {cfg[sec]['listen']} != containerPort {sec} {named[sec]}")
        for svc in find(docs, "Service"):
            for p in svc["spec"]["ports"]:
                tp = p["targetPort"]
                target = named.get(tp) if isinstance(tp, str) else tp
                expect(target == named[p["name"]],
                       f"Service {svc['metadata']['name']} port {p['name']}: targetPort {tp} is not containerPort {p['name']}")
        for pr in ("startupProbe", "readinessProbe", "livenessProbe"):
            if pr in c and "grpc" in c[pr]:
                expect(c[pr]["grpc"]["port"] == named["grpc"], f"{pr} gRPC port is not the grpc container port")
        expect(c.get("args", [])[:1] == ["serve"] and "--config" in c["args"], f"container args {c.get('args')}")
        cfg_path = c["args"][c["args"].index("--config") + 1]
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        expect(any(cfg_path.startswith(m + "/") for m in mounts), f"--config {cfg_path} is not under a mount")
        for f in config_files(cfg):
            expect(any(f.startswith(m + "/") for m in mounts), f"{f} (in tokend.toml) is not under a mount")

    tmp = Path(tempfile.mkdtemp(prefix="chart-check-"))
    procs: list = []
    try:
        with R.check(f"{prefix}: tokend check-config accepts the rendered files"):
            if MEMORY_STORE and rediss:
                raise Skip("CHART_CHECK_STORE=memory cannot stand in for a rediss:// store")
            pki = Pki(tmp / "pki") if mode != "plain" or rediss else None
            root = tmp / "pod"
            mounts = layout_pod_files(docs, pod, c, root, cfg, binary, pki)
            env = pod_env(docs, c, tmp)
            redis = None
            if not MEMORY_STORE:
                redis = Redis(tmp, env.get("TOKEND_STORE_PASSWORD"), tls=pki if rediss else None,
                              client_auth=bool(cfg["store"].get("tls_cert_file")))
                procs.append(redis)
            ports = {sec: free_port() for sec in listeners}
            cfg_container_path = c["args"][c["args"].index("--config") + 1]
            mount = max((m for m in mounts if cfg_container_path.startswith(m + "/")), key=len)
            local_cfg = Path(mounts[mount]) / cfg_container_path[len(mount) + 1:]
            new = rewrite_config(local_cfg.read_text(), mounts, ports, redis.port if redis else None)
            local_cfg.write_text(new)
            # clients.toml and other mounted files keep their content: only paths inside tokend.toml move.
            r = subprocess.run([str(binary), "check-config", "--config", str(local_cfg)], env=env,
                               capture_output=True, text=True, timeout=60)
            expect(r.returncode == 0, f"check-config exit {r.returncode}:\n{r.stdout}{r.stderr}\nconfig:\n{new}")
        if any(n == f"{prefix}: tokend check-config accepts the rendered files" for n, _ in R.failed + R.skipped):
            return

        portmap = {named[sec]: ports[sec] for sec in listeners}
        # How a real caller reaches the API listeners: plain, TLS verified against the CA, or mTLS.
        caller = pki.context(client_cert=mode == "mtls") if mode != "plain" else None
        creds = pki.grpc_credentials(client_cert=mode == "mtls") if mode != "plain" else None
        with R.check(f"{prefix}: tokend serve passes the startup, readiness and liveness probes"):
            t = Tokend(binary, local_cfg, env, tmp / "tokend.log")
            procs.append(t)
            msgs = []
            if "startupProbe" in c:
                sp = c["startupProbe"]
                msgs.append("startup: " + wait_probe(sp, portmap, named,
                                                     sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3), t))
            rp = c["readinessProbe"]
            msgs.append("readiness: " + wait_probe(rp, portmap, named, 30, t))
            if "tcpSocket" in rp:
                # A TCP connect cannot tell ready from not ready: wait for the real answer before going on.
                msgs.append("(as a caller) " + wait_readyz(ports["http"], caller, 200, 30))
            ok, msg = run_probe(c["livenessProbe"], portmap, named)
            expect(ok, f"liveness failed: {msg}\n{t.tail()}")
            msgs.append("liveness: " + msg)
            print("        " + "\n        ".join(msgs))
        if any(n.startswith(f"{prefix}: tokend serve") for n, _ in R.failed):
            return

        if mode != "plain":
            with R.check(f"{prefix}: [tls] {mode}: both listeners serve the mounted certificate"
                         + (" and refuse callers without a client certificate" if mode == "mtls" else "")):
                code, _ = http_get(ports["http"], "/healthz", 2, tls=caller)
                expect(code == 200, f"HTTPS /healthz with the CA -> {code}")
                st = grpc_health(ports["grpc"], "tokend.v1.TokenService", 2, creds=creds)
                expect(st == "SERVING", f"gRPC over TLS -> {st}")
                code, body = http_get(ports["http"], "/healthz", 2)
                expect(code != 200, f"plain HTTP on the TLS port answered {code}")
                if mode == "mtls":
                    code, body = http_get(ports["http"], "/healthz", 2, tls=pki.context(client_cert=False))
                    expect(code == 0, f"HTTPS without a client certificate -> {code} {body[:100]!r}")
                    st = grpc_health(ports["grpc"], "", 2, creds=pki.grpc_credentials(client_cert=False))
                    expect(st != "SERVING", f"gRPC without a client certificate -> {st}")

        with R.check(f"{prefix}: every Service port reaches tokend (gRPC health, HTTP bridge, admin /metrics)"):
            for svc in find(docs, "Service"):
                for p in svc["spec"]["ports"]:
                    target = named[p["targetPort"]] if isinstance(p["targetPort"], str) else p["targetPort"]
                    local = portmap[target]
                    if p["name"] == "grpc":
                        st = grpc_health(local, "tokend.v1.TokenService", 2, creds=creds)
                        expect(st == "SERVING", f"{svc['metadata']['name']}:{p['port']} (gRPC) -> {st}")
                    elif p["name"] == "admin":
                        code, body = http_get(local, "/metrics", 2)
                        expect(code == 200 and b"tokend_build_info" in body,
                               f"{svc['metadata']['name']}:{p['port']} (admin /metrics) -> {code} {body[:200]!r}")
                    else:
                        code, body = http_get(local, "/.well-known/oauth-authorization-server", 2, tls=caller)
                        expect(code == 200, f"{svc['metadata']['name']}:{p['port']} (HTTP) -> {code} {body[:200]!r}")
                        meta = json.loads(body)
                        expect(meta.get("issuer") == cfg["issuer"], f"issuer {meta.get('issuer')} != {cfg['issuer']}")

        if "admin" in cfg:
            with R.check(f"{prefix}: admin API: `tokend admin list-clients` with the admin secret, refused without"):
                admin_env = {"PATH": env["PATH"], "TOKEND_ADMIN_ADDR": f"127.0.0.1:{ports['admin']}"}
                run = lambda tok: subprocess.run([str(binary), "admin", "list-clients"], capture_output=True, text=True,
                                                 timeout=30, env={**admin_env, "TOKEND_ADMIN_TOKEN": tok})
                if "TOKEND_ADMIN_TOKEN_HASH" in env:
                    r = run(CI_ADMIN_SECRET)
                    expect(r.returncode == 0, f"tokend admin list-clients -> exit {r.returncode}: {r.stdout}{r.stderr}")
                    ids = [json.loads(line)["client_id"] for line in r.stdout.splitlines() if line.strip()]
                    expect(ids, f"list-clients printed no client: {r.stdout!r}")
                    r = run("wrong-secret")
                    expect(r.returncode != 0 and "Unauthenticated" in r.stderr,
                           f"a wrong admin secret -> exit {r.returncode}: {r.stdout}{r.stderr}")
                    print(f"        clients: {', '.join(ids)}")
                else:
                    r = run(CI_ADMIN_SECRET)
                    expect(r.returncode != 0 and "Unimplemented" in r.stderr,
                           f"without a token hash the admin API must be off: exit {r.returncode}: {r.stdout}{r.stderr}")

        with R.check(f"{prefix}: login app: AuthorizationService lets the login app's secret through, refuses other callers"):
            if "TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH" in env:
                code, details = login_app_call(ports["grpc"], CI_LOGIN_APP_SECRET, creds)
                expect(code == "INVALID_ARGUMENT" and b"invalid_request" in details,
                       f"GetAuthorization(unknown challenge) with the login app's secret -> {code} {details[:120]!r}, "
                       "want INVALID_ARGUMENT invalid_request (authenticated, then an unknown challenge)")
                for label, secret in (("without a secret", None), ("with a wrong secret", "wrong-secret")):
                    code, details = login_app_call(ports["grpc"], secret, creds)
                    expect(code == "UNAUTHENTICATED", f"GetAuthorization {label} -> {code} {details[:120]!r}, want UNAUTHENTICATED")
                print("        with the secret: INVALID_ARGUMENT invalid_request; without or wrong: UNAUTHENTICATED")
            else:
                code, details = login_app_call(ports["grpc"], CI_LOGIN_APP_SECRET, creds)
                expect(code == "PERMISSION_DENIED",
                       f"no login app hash configured: GetAuthorization -> {code} {details[:120]!r}, want PERMISSION_DENIED")

        with R.check(f"{prefix}: signing keys from the Secret are published in the JWKS"):
            code, body = http_get(ports["http"], "/.well-known/jwks.json", 2, tls=caller)
            expect(code == 200, f"jwks -> {code}")
            keys = json.loads(body).get("keys", [])
            want = 1 + len(cfg["signing"].get("previous_key_files", []))
            expect(len(keys) == want, f"JWKS has {len(keys)} keys, the chart mounts {want}")
            algs = {k.get("alg") for k in keys}
            expect(cfg["signing"]["algorithm"] in algs, f"JWKS algs {algs}, config {cfg['signing']['algorithm']}")

        clients = [cl for cl in (values.get("clients") or {}).get("items", [])
                   if "sha256:" + hashlib.sha256(CI_CLIENT_SECRET.encode()).hexdigest() in cl.get("secret_hashes", [])]
        if (values.get("clients") or {}).get("existingSecret"):
            clients = [{"client_id": "ci-client"}]
        if clients:
            with R.check(f"{prefix}: a client from the clients Secret gets a token over the HTTP bridge"):
                code, body = http_post_form(ports["http"], "/oauth/token", {
                    "grant_type": "client_credentials", "client_id": clients[0]["client_id"],
                    "client_secret": CI_CLIENT_SECRET}, tls=caller)
                expect(code == 200 and b"access_token" in body, f"/oauth/token -> {code} {body[:300]!r}")
                code, body = http_post_form(ports["http"], "/oauth/token", {
                    "grant_type": "client_credentials", "client_id": clients[0]["client_id"],
                    "client_secret": "wrong"}, tls=caller)
                expect(code == 401, f"wrong secret -> {code} {body[:200]!r}")

        with R.check(f"{prefix}: /metrics (ServiceMonitor target) serves tokend's Prometheus metrics"):
            if os.environ.get("CHART_CHECK_NO_METRICS") == "1":
                raise Skip("CHART_CHECK_NO_METRICS=1")
            if "admin" in cfg:
                code, body = http_get(ports["http"], "/metrics", 2, tls=caller)
                expect(code == 404, f"GET /metrics on the HTTP port -> {code}: with [admin] it must be on the admin port only")
                code, body = http_get(ports["admin"], "/metrics", 2)
                where = "admin port"
            else:
                code, body = http_get(ports["http"], "/metrics", 2, tls=caller)
                where = "HTTP port"
            expect(code == 200, f"GET /metrics on the {where} -> {code} {body[:200]!r} (the ServiceMonitor and dashboard need it)")
            names = set(re.findall(r"^(?:# TYPE )?(tokend_[a-z_]+)", body.decode(errors="replace"), re.M))
            base = {n[:-len(s)] if n.endswith(s) else n for n in names for s in ("_bucket", "_sum", "_count", "")}
            seen = {m for m in METRICS if m in names or m.removesuffix("_bucket") in base}
            always = {"tokend_store_up", "tokend_build_info", "tokend_signing_key_info"}
            expect(always <= seen, f"/metrics lacks {sorted(always - seen)}")
            if METRICS - seen:
                R.note(f"{name}: /metrics has no series yet for {sorted(METRICS - seen)} (label sets appear on first use)")

        rp, lp = c["readinessProbe"], c["livenessProbe"]
        outage = ("store outage: tokend reports not ready (/readyz 503), the tcpSocket probes keep passing"
                  if "tcpSocket" in rp else "store outage: readiness fails, liveness keeps passing")
        with R.check(f"{prefix}: {outage}"):
            if redis is None:
                raise Skip("CHART_CHECK_STORE=memory")
            redis.stop()
            if "tcpSocket" in rp:
                # mTLS: the kubelet's probe is a TCP connect and cannot see the store; tokend itself does.
                msg = wait_readyz(ports["http"], caller, 503, 10)
                R.note(f"{name}: readiness is a tcpSocket probe (mTLS): during a store outage pods stay in the "
                       f"Service; tokend's own /readyz says {msg.split('-> ')[-1]}")
            else:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    ok, rmsg = run_probe(rp, portmap, named)
                    if not ok:
                        break
                    time.sleep(0.5)
                expect(not ok, f"readiness still passes 10 s after the store went away: {rmsg}")
            ok, lmsg = run_probe(lp, portmap, named)
            expect(t.alive(), f"tokend died when the store went away:\n{t.tail()}")
            if not ok and "grpc" in lp:
                raise Skip(f"readiness fails as it should, but the gRPC liveness probe fails too ({lmsg}): tokend flips "
                           "every gRPC health service with the store, so probes.livenessType grpc would restart pods "
                           "during a Redis outage (probes.livenessType http would not)")
            expect(ok, f"liveness fails while only the store is down ({lmsg}): the kubelet would restart healthy pods")

        with R.check(f"{prefix}: store back: readiness recovers without a restart"):
            if redis is None:
                raise Skip("CHART_CHECK_STORE=memory")
            redis.start()
            msg = wait_probe(rp, portmap, named, 20, t)
            if "tcpSocket" in rp:
                msg = wait_readyz(ports["http"], caller, 200, 20)
            print(f"        {msg}")

        drain = cfg["server"].get("drain_delay_secs", 0)
        with R.check(f"{prefix}: SIGTERM: tokend exits within terminationGracePeriodSeconds"
                     + (f" (not ready but still serving for drain_delay_secs {drain})" if drain else "")):
            budget = pod.get("terminationGracePeriodSeconds", 30)
            t0 = time.monotonic()
            t.proc.send_signal(signal.SIGTERM)
            if drain:
                time.sleep(min(0.5, drain / 4))
                if "tcpSocket" not in rp:
                    ok, rmsg = run_probe(rp, portmap, named)
                    expect(not ok, f"readiness still passes during the drain delay: {rmsg}")
                code, body = http_get(ports["http"], "/healthz", 2, tls=caller)
                expect(code == 200, f"a new request during the drain delay -> {code} {body[:100]!r}")
            try:
                rc = t.proc.wait(max(0.0, budget - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                raise CheckError(f"tokend still running {budget}s after SIGTERM: the kubelet would SIGKILL it")
            took = time.monotonic() - t0
            expect(rc == 0, f"tokend exited with {rc} after SIGTERM:\n{t.tail()}")
            expect(took >= drain - 0.2, f"tokend exited after {took:.1f}s, before its drain delay of {drain}s")
            print(f"        exited in {took:.1f}s (drain delay {drain}s, grace {budget}s)")
    finally:
        for p in reversed(procs):
            p.stop()
        if keep:
            print(f"        files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def check_config_rejects_unknown_key(binary: Path) -> None:
    """check-config must really validate: the same file plus an unknown key fails."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.toml"
        p.write_text('issuer = "http://x"\n[store]\nurl = "memory://"\nnot_a_key = 1\n')
        r = subprocess.run([str(binary), "check-config", "--config", str(p)], capture_output=True, text=True,
                           timeout=60, env={"PATH": os.environ.get("PATH", "")})
        expect(r.returncode == 1, f"check-config accepted an unknown key (exit {r.returncode}): {r.stdout}{r.stderr}")
        expect("not_a_key" in r.stdout + r.stderr, f"check-config did not name the unknown key: {r.stdout}{r.stderr}")


def documented_commands(binary: Path) -> None:
    """What the chart docs tell operators to run: keys from keygen load, hashes match the ci files."""
    with tempfile.TemporaryDirectory() as d:
        for alg in ("RS256", "ES256", "EdDSA"):
            key = Path(d) / f"{alg}.pem"
            r = subprocess.run([str(binary), "keygen", "--alg", alg, "--out", str(key)], capture_output=True,
                               text=True, timeout=60)
            expect(r.returncode == 0 and key.exists(), f"keygen --alg {alg}: {r.stdout}{r.stderr}")
            expect(key.read_text().startswith("-----BEGIN PRIVATE KEY-----"), f"keygen --alg {alg} wrote no PKCS#8 PEM")
            cfg = Path(d) / f"{alg}.toml"
            cfg.write_text(f'issuer = "http://x"\n[signing]\nalgorithm = "{alg}"\nkey_file = "{key}"\n')
            r = subprocess.run([str(binary), "check-config", "--config", str(cfg)], capture_output=True, text=True,
                               timeout=60, env={"PATH": os.environ.get("PATH", "")})
            expect(r.returncode == 0, f"check-config rejects a keygen --alg {alg} key: {r.stdout}{r.stderr}")
    r = subprocess.run([str(binary), "hash-secret"], input=CI_CLIENT_SECRET, capture_output=True, text=True, timeout=60)
    want = "sha256:" + hashlib.sha256(CI_CLIENT_SECRET.encode()).hexdigest()
    expect(r.returncode == 0 and r.stdout.strip() == want, f"hash-secret printed {r.stdout.strip()!r}, want {want}")
    # admin.tokenHash in ci/full-values.yaml is `printf %s ci-admin-secret | tokend hash-secret`.
    r = subprocess.run([str(binary), "hash-secret"], input=CI_ADMIN_SECRET, capture_output=True, text=True, timeout=60)
    full = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
    expect(r.returncode == 0 and r.stdout.strip() == CI_ADMIN_HASH == full["admin"]["tokenHash"],
           f"hash-secret of the CI admin secret printed {r.stdout.strip()!r}; full-values.yaml has {full['admin']['tokenHash']}")
    # loginApp.tokenHash in ci/full-values.yaml is `printf %s ci-login-app-secret | tokend hash-secret`.
    r = subprocess.run([str(binary), "hash-secret"], input=CI_LOGIN_APP_SECRET, capture_output=True, text=True, timeout=60)
    expect(r.returncode == 0 and r.stdout.strip() == CI_LOGIN_APP_HASH == full["loginApp"]["tokenHash"],
           f"hash-secret of the CI login app secret printed {r.stdout.strip()!r}; "
           f"full-values.yaml has {full['loginApp']['tokenHash']}")


# ----------------------------------------------------------------------------------------------

def readme_lists_every_value() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import chart_readme
    text = (CHART / "values.yaml").read_text()
    docs = chart_readme.documented_keys(text)
    missing = chart_readme.undocumented(yaml.safe_load(text), docs)
    expect(not missing, f"values.yaml keys without a `# --` description: {missing}")
    readme = (CHART / "README.md").read_text()
    absent = [k for k in docs if f"| `{k}` |" not in readme]
    expect(not absent, f"helm/tokend/README.md does not list {absent}: run python3 scripts/chart_readme.py")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "chart_readme.py"), "--check"],
                       capture_output=True, text=True)
    expect(r.returncode == 0, r.stderr.strip() or r.stdout.strip())


def main() -> int:
    binary = Path(os.environ.get("TOKEND_BIN", ROOT / "target" / "debug" / "tokend"))
    if not binary.is_absolute():
        binary = ROOT / binary
    keep = os.environ.get("CHART_CHECK_KEEP") == "1"
    print(f"chart-check: chart {CHART.relative_to(ROOT)}, tokend binary {binary}")
    if MEMORY_STORE:
        R.note("CHART_CHECK_STORE=memory: tokend runs on memory://, not on Redis (debugging only)")

    section("1. lint and render")
    lo = hi = None
    with R.check("Chart.yaml kubeVersion maps to Kubernetes versions kubernetes-validate knows"):
        lo, hi = kube_versions()
        print(f"        validating against Kubernetes {lo} and {hi}")
    sets = values_sets() + RENDER_ONLY + doc_examples()
    renders: dict[str, tuple[dict, list[dict], str]] = {}
    for name, values in sets:
        for ver in filter(None, dict.fromkeys([lo, hi])):
            with R.check(f"helm lint --strict [{name}] (kube {ver})"):
                lint(values, ver)
        with R.check(f"helm install --dry-run [{name}]"):
            docs, notes = render(values)
            renders[name] = (values, docs, notes)
            print("        " + ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs))
    with R.check("ci/*.yaml together switch on every optional resource"):
        kinds = {d["kind"] for _, docs, _ in renders.values() for d in docs}
        want = {"Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount", "HorizontalPodAutoscaler",
                "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "Ingress", "HTTPRoute"}
        expect(want <= kinds, f"never rendered: {sorted(want - kinds)}")
        names = {d["metadata"]["name"] for _, docs, _ in renders.values() for d in docs}
        expect(any(n.endswith("-headless") for n in names), "the headless Service is never rendered")
        for suffix in ("-admin",):
            kinds_ = {d["kind"] for _, docs, _ in renders.values() for d in docs if d["metadata"]["name"].endswith(suffix)}
            expect({"Service", "Secret"} <= kinds_, f"the admin Service and Secret are never both rendered ({kinds_})")
        expect(any(d["kind"] == "Secret" and d["metadata"]["name"].endswith("-login-app")
                   for _, docs, _ in renders.values() for d in docs), "the login app Secret is never rendered")
        cfgs = [config_toml(docs)[1] for n, (_, docs, _) in renders.items() if not n.startswith(("inline:", "docs:"))]
        # Every key tokend knows (TOKEND_KEYS, from src/config.rs) is written by some render, so each one
        # goes through check-config / serve below.
        for sec, keys in TOKEND_KEYS.items():
            seen = set()
            for cfg in cfgs:
                table = cfg.get(sec, {}) if sec else cfg
                seen |= {k for k, v in table.items() if not isinstance(v, dict)}
            expect(keys <= seen, f"no render sets tokend.toml [{sec or 'top level'}] {sorted(keys - seen)}")
        modes = {tls_mode(cfg) for cfg in cfgs}
        expect(modes == {"plain", "tls", "mtls"}, f"renders cover TLS modes {sorted(modes)}, want plain, tls and mtls")
        expect(any(n.endswith("-dashboard") for n in names), "the Grafana dashboard is never rendered")

    section("2. validate manifests")
    for name, (values, docs, notes) in renders.items():
        for ver in filter(None, dict.fromkeys([lo, hi])):
            with R.check(f"kubernetes-validate --strict [{name}] (kube {ver})"):
                skipped = validate_k8s(docs, ver)
                if skipped:
                    print(f"        not validated (custom resources): {', '.join(skipped)}")
        with R.check(f"chart rules [{name}]"):
            check_rules(name, values, docs, notes)
    with R.check("chart README lists every value"):
        readme_lists_every_value()

    section("3. negative tests")
    with R.check("values.schema.json sets additionalProperties: false on every object"):
        schema_is_closed()
    for label, bad in BAD_VALUES:
        with R.check(f"schema rejects {label}"):
            expect_rejected(bad)
    for label, bad, needle in BAD_COMBINATIONS:
        with R.check(f"templates refuse {label}"):
            expect_rejected(bad, needle)

    section("4. the chart against the tokend binary")
    if os.environ.get("CHART_CHECK_SKIP_RUNTIME") == "1":
        with R.check("runtime checks"):
            raise Skip("CHART_CHECK_SKIP_RUNTIME=1")
    else:
        usable = False
        with R.check(f"tokend binary is usable ({binary})"):
            expect(binary.is_file() and os.access(binary, os.X_OK), f"{binary} is missing or not executable "
                   "(build it with `cargo build --bin tokend`, or set TOKEND_BIN)")
            out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30).stdout
            expect("serve" in out and "check-config" in out, f"{binary} --help lists no serve/check-config:\n{out}")
            expect(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get install redis-server)")
            usable = True
        if usable:
            with R.check("tokend check-config rejects an unknown key"):
                check_config_rejects_unknown_key(binary)
            with R.check("documented commands: tokend keygen (RS256, ES256, EdDSA) and tokend hash-secret"):
                documented_commands(binary)
            for name, (values, docs, _) in renders.items():
                if name.startswith(("inline:", "docs:")):
                    continue
                runtime_check(name, values, docs, binary, keep)

    total = len(R.passed) + len(R.failed)
    print("\n== summary")
    for n, why in R.skipped:
        print(f"  skipped: {n} ({why})")
    for n in R.notes:
        print(f"  note: {n}")
    for n, why in R.failed:
        print(f"  FAILED: {n}: {why.splitlines()[0] if why else ''}")
    print(f"chart-check: {len(R.passed)} passed, {len(R.failed)} failed" + (f", {len(R.skipped)} skipped" if R.skipped else ""))
    return 1 if R.failed or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
