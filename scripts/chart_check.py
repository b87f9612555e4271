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
   stand-ins made with `tokend keygen`), `tokend check-config` must accept it, `tokend serve` must
   pass every probe exactly as the kubelet sends it, and the Service's targetPorts must lead to the
   container ports and to the ports tokend listens on.

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
import json
import os
import re
import shutil
import signal
import socket
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
# tokend's configuration keys (the chart must render nothing else: tokend rejects unknown keys).
TOKEND_KEYS = {
    "": {"issuer", "clients_file"},
    "http": {"listen", "max_body_bytes"},
    "grpc": {"listen"},
    "store": {"url", "key_prefix", "timeout_ms"},
    "tokens": {"access_ttl_secs", "refresh_ttl_secs", "code_ttl_secs", "leeway_secs"},
    "signing": {"algorithm", "key_file", "previous_key_files"},
    "log": {"format", "level"},
    "server": {"shutdown_grace_secs"},
}
METRICS = {
    "tokend_tokens_issued_total", "tokend_oauth_errors_total", "tokend_request_duration_seconds_bucket",
    "tokend_store_duration_seconds_bucket", "tokend_store_errors_total", "tokend_store_up",
    "tokend_rate_limited_total", "tokend_signing_key_info", "tokend_build_info",
}
# Secret of the test clients in helm/tokend/ci/*.yaml (sha256:f82d...).
CI_CLIENT_SECRET = "ci-secret"
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
            eps = spec.get("endpoints") or []
            expect(eps and all(e.get("port") == "http" and e.get("path") == "/metrics" for e in eps),
                   f"{ident}: must scrape port http path /metrics")
        elif d["kind"] == "PrometheusRule":
            exprs = [r["expr"] for g in spec["groups"] for r in g["rules"]]
            used = set(re.findall(r"\btokend_[a-z_]+", " ".join(exprs)))
            expect(used <= METRICS, f"{ident}: unknown metrics {sorted(used - METRICS)}")
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
    expect(pod.get("terminationGracePeriodSeconds", 30) > grace,
           f"terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds')} must exceed shutdown_grace_secs {grace}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        expect(probe in c or (probe == "startupProbe" and not values.get("probes", {}).get("startup", {}).get("enabled", True)),
               f"missing {probe}")
    if values.get("probes", {}).get("type", "grpc") == "grpc":
        expect("grpc" in c["readinessProbe"], "probes.type grpc must render a native grpc readiness probe")
    else:
        expect("httpGet" in c["readinessProbe"], "probes.type http must render an httpGet readiness probe")
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
    password = (values.get("redis") or {}).get("password")
    if password:
        for d in docs:
            if d["kind"] != "Secret":
                expect(password not in json.dumps(d), f"{d['kind']}/{d['metadata']['name']} contains the Redis password")
    # Services.
    for svc in find(docs, "Service"):
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        expect(set(ports) == {"grpc", "http"}, f"Service {svc['metadata']['name']} ports {sorted(ports)}")
        expect(ports["grpc"].get("appProtocol") == "kubernetes.io/h2c", "grpc port appProtocol must be kubernetes.io/h2c")
        expect(ports["http"].get("appProtocol") == "http", "http port appProtocol must be http")
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


class Redis:
    def __init__(self, workdir: Path, password: str | None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.password = password
        self.start()

    def start(self) -> None:
        password = self.password
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir)]
        if password:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise CheckError("redis-server did not answer PING within 10 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
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


def grpc_health(port: int, service: str, timeout: float, host: str = "127.0.0.1") -> str:
    """What the kubelet's gRPC probe does: Health/Check(service) on the port, plaintext."""
    with grpc.insecure_channel(f"{host}:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as e:
            return f"rpc error {e.code().name}: {e.details()}"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def http_get(port: int, path: str, timeout: float, host: str = "127.0.0.1") -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://{host}:{port}{path}",
                                 headers={"User-Agent": KUBE_PROBE_UA, "Accept": "*/*"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return 0, str(e).encode()


def http_post_form(port: int, path: str, form: dict, timeout: float = 5) -> tuple[int, bytes]:
    data = urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return 0, str(e).encode()


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
        code, body = http_get(portmap[cport], hg.get("path", "/"), timeout)
        return 200 <= code < 400, f"GET {hg.get('path')} on :{cport} -> {code} {body[:120]!r}"
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


CI_CLIENTS_TOML = f"""# Stand-in for an operator-managed clients Secret (existingSecret).
[[clients]]
client_id = "ci-client"
secret_hashes = ["sha256:{hashlib.sha256(CI_CLIENT_SECRET.encode()).hexdigest()}"]
grant_types = ["client_credentials"]
scopes = ["orders:read"]
"""


def external_secret(name: str, mount: str | None, cfg: dict, binary: Path, tmp: Path) -> dict[str, bytes]:
    """Contents for a Secret the chart only references (existingSecret): the files tokend.toml expects
    under its mount, made the way an operator would (`tokend keygen`, a clients.toml)."""
    files: dict[str, bytes] = {}
    wanted = [cfg.get("clients_file"), cfg["signing"].get("key_file"), *cfg["signing"].get("previous_key_files", [])]
    for path in filter(None, wanted):
        if mount is None or not path.startswith(mount + "/"):
            continue
        key = path[len(mount) + 1:]
        if path == cfg.get("clients_file"):
            files[key] = CI_CLIENTS_TOML.encode()
        else:
            out = tmp / f"keygen-{len(files)}.pem"
            r = subprocess.run([str(binary), "keygen", "--alg", cfg["signing"]["algorithm"], "--out", str(out)],
                               capture_output=True, text=True, timeout=60)
            expect(r.returncode == 0, f"tokend keygen failed: {r.stdout}{r.stderr}")
            files[key] = out.read_bytes()
    expect(files, f"Secret {name} is mounted at {mount} but tokend.toml names no file there")
    R.note(f"Secret {name} is not rendered by the chart (existingSecret): stood in with {sorted(files)}")
    return files


def layout_pod_files(docs: list[dict], pod: dict, c: dict, root: Path, cfg: dict, binary: Path) -> dict[str, str]:
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
                files = external_secret(v["secret"]["secretName"], m["mountPath"], cfg, binary, root.parent)
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
            else:
                env[e["name"]] = "stand-in-" + hashlib.sha256(ref["name"].encode()).hexdigest()[:16]
                R.note(f"Secret {ref['name']} (env {e['name']}) is not rendered by the chart: stood in with a random value")
        else:
            raise CheckError(f"env {e['name']}: unsupported valueFrom {e['valueFrom']}")
    return env


def rewrite_config(text: str, mounts: dict[str, str], grpc_port: int, http_port: int, redis_port: int | None) -> str:
    """Only three kinds of change: mount paths, listen ports, the store's host:port."""
    out = text
    for mount, local in sorted(mounts.items(), key=lambda kv_: -len(kv_[0])):
        out = out.replace(f'"{mount}/', f'"{local}/')
    def listen(section: str, port: int, s: str) -> str:
        pat = re.compile(r'(\[' + section + r'\][^\[]*?\nlisten = ")([^"\n]*):(\d+)(")', re.S)
        expect(pat.search(s), f"[{section}] listen not found in tokend.toml")
        return pat.sub(lambda m: f"{m.group(1)}{m.group(2)}:{port}{m.group(4)}", s, count=1)
    out = listen("grpc", grpc_port, out)
    out = listen("http", http_port, out)
    m = re.search(r'(\[store\][^\[]*?url = ")([a-z+]+)://([^/"]+)(/?[^"]*)(")', out, re.S)
    expect(m is not None, "[store] url not found in tokend.toml")
    scheme = m.group(2)
    expect(scheme == "redis", f"the runtime check needs a redis:// store URL, got {scheme}://")
    if redis_port is None:
        out = out[:m.start(2)] + "memory://" + out[m.end(5) - 1:]
    else:
        out = out[:m.start(3)] + f"127.0.0.1:{redis_port}" + out[m.end(3):]
    # Nothing else changed: compare the parsed documents with those fields masked.
    a, b = tomllib.loads(text), tomllib.loads(out)
    expect(port_of(b["grpc"]["listen"]) == grpc_port and port_of(b["http"]["listen"]) == http_port,
           f"listen rewrite failed: {b['grpc']['listen']} / {b['http']['listen']}")
    expect(b["grpc"]["listen"].rsplit(":", 1)[0] == a["grpc"]["listen"].rsplit(":", 1)[0], "listen host changed")
    for d in (a, b):
        d["grpc"]["listen"] = d["http"]["listen"] = d["store"]["url"] = "<rewritten>"
        d.pop("clients_file", None)
        d["signing"].pop("key_file", None)
        d["signing"].pop("previous_key_files", None)
    expect(a == b, "config rewrite changed more than paths, ports and the store address")
    return out


def runtime_check(name: str, values: dict, docs: list[dict], binary: Path, keep: bool) -> None:
    pod, c = tokend_container(docs)
    text, cfg = config_toml(docs)
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    prefix = f"runtime [{name}]"

    with R.check(f"{prefix}: ports agree (Service targetPort -> containerPort -> tokend listen)"):
        expect(set(named) == {"grpc", "http"}, f"container ports {sorted(named)}")
        expect(port_of(cfg["grpc"]["listen"]) == named["grpc"],
               f"[grpc] listen {cfg['grpc']['listen']} != containerPort grpc {named['grpc']}")
        expect(port_of(cfg["http"]["listen"]) == named["http"],
               f"[http] listen {cfg['http']['listen']} != containerPort http {named['http']}")
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
        for f in [cfg.get("clients_file"), cfg["signing"].get("key_file"), *cfg["signing"].get("previous_key_files", [])]:
            if f:
                expect(any(f.startswith(m + "/") for m in mounts), f"{f} (in tokend.toml) is not under a mount")

    tmp = Path(tempfile.mkdtemp(prefix="chart-check-"))
    procs: list = []
    try:
        with R.check(f"{prefix}: tokend check-config accepts the rendered files"):
            root = tmp / "pod"
            mounts = layout_pod_files(docs, pod, c, root, cfg, binary)
            env = pod_env(docs, c, tmp)
            redis = None
            if not MEMORY_STORE:
                redis = Redis(tmp, env.get("TOKEND_STORE_PASSWORD"))
                procs.append(redis)
            ports = {"grpc": free_port(), "http": free_port()}
            cfg_container_path = c["args"][c["args"].index("--config") + 1]
            mount = max((m for m in mounts if cfg_container_path.startswith(m + "/")), key=len)
            local_cfg = Path(mounts[mount]) / cfg_container_path[len(mount) + 1:]
            new = rewrite_config(local_cfg.read_text(), mounts, ports["grpc"], ports["http"], redis.port if redis else None)
            local_cfg.write_text(new)
            # clients.toml and other mounted files keep their content: only paths inside tokend.toml move.
            r = subprocess.run([str(binary), "check-config", "--config", str(local_cfg)], env=env,
                               capture_output=True, text=True, timeout=60)
            expect(r.returncode == 0, f"check-config exit {r.returncode}:\n{r.stdout}{r.stderr}\nconfig:\n{new}")
        if any(n == f"{prefix}: tokend check-config accepts the rendered files" for n, _ in R.failed + R.skipped):
            return

        portmap = {named["grpc"]: ports["grpc"], named["http"]: ports["http"]}
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
            ok, msg = run_probe(c["livenessProbe"], portmap, named)
            expect(ok, f"liveness failed: {msg}\n{t.tail()}")
            msgs.append("liveness: " + msg)
            print("        " + "\n        ".join(msgs))
        if any(n.startswith(f"{prefix}: tokend serve") for n, _ in R.failed):
            return

        with R.check(f"{prefix}: both Service ports reach tokend (gRPC health, HTTP bridge)"):
            for svc in find(docs, "Service"):
                for p in svc["spec"]["ports"]:
                    target = named[p["targetPort"]] if isinstance(p["targetPort"], str) else p["targetPort"]
                    local = portmap[target]
                    if p["name"] == "grpc":
                        st = grpc_health(local, "tokend.v1.TokenService", 2)
                        expect(st == "SERVING", f"{svc['metadata']['name']}:{p['port']} (gRPC) -> {st}")
                    else:
                        code, body = http_get(local, "/.well-known/oauth-authorization-server", 2)
                        expect(code == 200, f"{svc['metadata']['name']}:{p['port']} (HTTP) -> {code} {body[:200]!r}")
                        meta = json.loads(body)
                        expect(meta.get("issuer") == cfg["issuer"], f"issuer {meta.get('issuer')} != {cfg['issuer']}")

        with R.check(f"{prefix}: signing keys from the Secret are published in the JWKS"):
            code, body = http_get(ports["http"], "/.well-known/jwks.json", 2)
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
                    "client_secret": CI_CLIENT_SECRET})
                expect(code == 200 and b"access_token" in body, f"/oauth/token -> {code} {body[:300]!r}")
                code, body = http_post_form(ports["http"], "/oauth/token", {
                    "grant_type": "client_credentials", "client_id": clients[0]["client_id"],
                    "client_secret": "wrong"})
                expect(code == 401, f"wrong secret -> {code} {body[:200]!r}")

        with R.check(f"{prefix}: /metrics (ServiceMonitor target) serves tokend's Prometheus metrics"):
            if os.environ.get("CHART_CHECK_NO_METRICS") == "1":
                raise Skip("CHART_CHECK_NO_METRICS=1")
            code, body = http_get(ports["http"], "/metrics", 2)
            expect(code == 200, f"GET /metrics -> {code} {body[:200]!r} (the ServiceMonitor and dashboard need it)")
            names = set(re.findall(r"^(?:# TYPE )?(tokend_[a-z_]+)", body.decode(errors="replace"), re.M))
            base = {n[:-len(s)] if n.endswith(s) else n for n in names for s in ("_bucket", "_sum", "_count", "")}
            seen = {m for m in METRICS if m in names or m.removesuffix("_bucket") in base}
            always = {"tokend_store_up", "tokend_build_info", "tokend_signing_key_info"}
            expect(always <= seen, f"/metrics lacks {sorted(always - seen)}")
            if METRICS - seen:
                R.note(f"{name}: /metrics has no series yet for {sorted(METRICS - seen)} (label sets appear on first use)")

        with R.check(f"{prefix}: store outage: readiness fails, liveness keeps passing"):
            if redis is None:
                raise Skip("CHART_CHECK_STORE=memory")
            redis.stop()
            rp, lp = c["readinessProbe"], c["livenessProbe"]
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
                           "during a Redis outage (the default, http, does not)")
            expect(ok, f"liveness fails while only the store is down ({lmsg}): the kubelet would restart healthy pods")

        with R.check(f"{prefix}: store back: readiness recovers without a restart"):
            redis.start()
            msg = wait_probe(c["readinessProbe"], portmap, named, 20, t)
            print(f"        {msg}")

        with R.check(f"{prefix}: SIGTERM: tokend exits within terminationGracePeriodSeconds"):
            budget = pod.get("terminationGracePeriodSeconds", 30)
            t0 = time.monotonic()
            t.proc.send_signal(signal.SIGTERM)
            try:
                rc = t.proc.wait(budget)
            except subprocess.TimeoutExpired:
                raise CheckError(f"tokend still running {budget}s after SIGTERM: the kubelet would SIGKILL it")
            expect(rc == 0, f"tokend exited with {rc} after SIGTERM:\n{t.tail()}")
            print(f"        exited in {time.monotonic() - t0:.1f}s (grace {budget}s)")
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
