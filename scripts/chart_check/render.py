"""The chart itself: where it is, the values sets it is checked with, `helm lint` / `helm install --dry-run`
through helm-python-sdk, kubernetes-validate, and lookups in the rendered manifests.
"""

from __future__ import annotations

import base64
import copy
import re
import tomllib
from pathlib import Path

import helm_python as hp
import kubernetes_validate as kv
import yaml

from .report import expect

ROOT = Path(__file__).resolve().parent.parent.parent
CHART = ROOT / "helm" / "tokend"
RELEASE = "tokend"
NAMESPACE = "tokend"
# Custom resources: kubernetes-validate has no schema for them (checked for structure by hand in rules.py).
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "HTTPRoute"}

# Rendered and validated only (steps 1-2): store URLs the runtime step cannot serve locally.
RENDER_ONLY = [
    ("inline: Redis Cluster store", {"config": {"store": {"url": "redis+cluster://redis-0.redis:6379,redis-1.redis:6379,redis-2.redis:6379"}}}),
    ("inline: Sentinel store with its own password and replica acknowledgements",
     {"config": {"store": {"url": "redis+sentinel://redis.data.svc.cluster.local:26379/mymaster?db=1",
                           "sentinel_username": "tokend", "replica_acks": 1, "replica_ack_timeout_ms": 200}},
      "redis": {"existingSecret": "redis", "sentinel": {"existingSecret": "redis-sentinel"}}}),
    ("inline: managed Redis over TLS", {"config": {"store": {"url": "rediss://cache.example.internal:6380/0"}},
                                        "redis": {"existingSecret": "managed-redis"}}),
    # The runtime step covers mTLS with the admin listener (ci/mtls-values.yaml): probes on the admin port.
    ("inline: mTLS without the admin listener (tcpSocket probes)",
     {"tls": {"enabled": True, "existingSecret": "tokend-server-cert", "clientCA": {"enabled": True}}}),
    # RFC 8705 client authentication beside secret clients: certificates optional, so the probes stay HTTPS.
    ("inline: optional client certificates (RFC 8705 tls_client_auth, self-signed, mTLS aliases)",
     {"tls": {"enabled": True, "existingSecret": "tokend-server-cert", "clientCA": {"enabled": True}},
      "config": {"tls": {"client_auth": "optional", "self_signed_client_certs": True},
                 "discovery": {"mtls_endpoint_base_url": "https://mtls.auth.example.com"}}}),
]
# The container's probes, in the order the kubelet starts them.
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# Values sets whose names start with these are rendered and validated but not run (steps 1-2 only).
NOT_RUN = ("inline:", "docs:")


def values_yaml() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def values_sets() -> list[tuple[str, dict]]:
    """The default values and each helm/tokend/ci/*.yaml."""
    sets = [("default values", {})]
    for f in sorted((CHART / "ci").glob("*.yaml")):
        sets.append((f"ci/{f.name}", yaml.safe_load(f.read_text()) or {}))
    return sets


def kube_versions() -> tuple[str, str]:
    """Oldest and newest Kubernetes minor versions the chart claims that kubernetes-validate knows."""
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text()).get("kubeVersion", "")

    def key(v: str) -> tuple[int, ...]:
        return tuple(map(int, v.split(".")))
    supported = sorted({kv.utils.major_minor(v) for v in kv.utils.all_versions()}, key=key)
    lo = re.search(r">=\s*v?(\d+\.\d+)", constraint)
    hi = re.search(r"<\s*v?(\d+\.\d+)", constraint)
    expect(lo is not None, f"Chart.yaml kubeVersion {constraint!r} has no lower bound (>=1.NN)")
    claimed = [v for v in supported if key(v) >= key(lo.group(1)) and (not hi or key(v) < key(hi.group(1)))]
    expect(bool(claimed), f"kubernetes-validate supports none of the versions claimed by {constraint!r}")
    expect(claimed[0] == lo.group(1),
           f"kubernetes-validate cannot validate the oldest claimed version {lo.group(1)} (supports {supported[0]}+)")
    return claimed[0], claimed[-1]


def render(values: dict) -> tuple[list[dict], str]:
    """`helm install --dry-run=client`: the manifests (as dicts) and NOTES.txt. Raises hp.HelmError."""
    cfg = hp.Config(storage_driver="memory", namespace=NAMESPACE)
    rel = cfg.install(str(CHART), RELEASE, copy.deepcopy(values), namespace=NAMESPACE, dry_run="client")
    docs = [d for d in yaml.safe_load_all(rel["manifest"]) if d]
    return docs, rel.get("notes") or ""


def lint_report(values: dict, kube: str | None = None) -> dict:
    """`helm lint --strict` (for that Kubernetes minor version, when given)."""
    extra = {"kube_version": f"v{kube}.0"} if kube else {}
    return hp.lint(str(CHART), copy.deepcopy(values), strict=True, **extra)


def lint(values: dict, kube: str) -> None:
    rep = lint_report(values, kube)
    bad = [m for m in rep.get("messages", []) if m.get("severity", 0) >= 2]
    problems = [f"[{m['path']}] {m['error'].strip()}" for m in bad] + [e.strip() for e in rep.get("errors", [])]
    expect(not problems, "helm lint --strict:\n" + "\n".join(dict.fromkeys(problems)))


def validate_k8s(docs: list[dict], version: str) -> list[str]:
    """kubernetes-validate --strict on every manifest but custom resources; returns those it left out."""
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


# ----------------------------------------------------------------------------------------------
# lookups in rendered manifests

def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    expect(len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, rendered {len(found)}")
    return found[0]


def selected_services(docs: list[dict], match_labels: dict) -> list[dict]:
    """The Services whose labels match a selector's matchLabels."""
    return [s for s in find(docs, "Service")
            if all(s["metadata"]["labels"].get(k) == v for k, v in match_labels.items())]


def secret_files(secret: dict) -> dict[str, bytes]:
    out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    out.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return out


def tokend_container(docs: list[dict]) -> tuple[dict, dict]:
    """The Deployment's pod spec and its tokend container."""
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    cs = [c for c in pod["containers"] if c["name"] == "tokend"]
    expect(len(cs) == 1, "the Deployment has no container named tokend")
    return pod, cs[0]


def config_toml(docs: list[dict]) -> tuple[str, dict]:
    """tokend.toml from the ConfigMap: its text and its parsed contents."""
    cms = [d for d in find(docs, "ConfigMap") if "tokend.toml" in (d.get("data") or {})]
    expect(len(cms) == 1, f"expected one ConfigMap with tokend.toml, found {len(cms)}")
    text = cms[0]["data"]["tokend.toml"]
    return text, tomllib.loads(text)
