"""The chart's own rules on every render (hardening, probes per TLS mode, Services, secrecy, tokend.toml
keys, custom resources), and the coverage rule: the ci/*.yaml sets together render every optional
resource, every tokend key and every TLS mode.
"""

from __future__ import annotations

import json
import re

from .render import CRD_KINDS, NOT_RUN, PROBES, RELEASE, config_toml, find, one, selected_services, tokend_container
from .report import expect
from .tokend import METRICS, TOKEND_KEYS, TRUSTED_ISSUER_KEYS, port_of, tls_mode


def check_rules(name: str, values: dict, docs: list[dict], notes: str) -> None:
    """The chart's own rules, on every render."""
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    expect(len(kinds) == len(set(kinds)), f"duplicate resources: {kinds}")
    for d in docs:
        expect(d["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE,
               f"{d['kind']}/{d['metadata']['name']}: missing app.kubernetes.io/instance label")
    _, cfg = config_toml(docs)
    check_pod(values, docs, cfg)
    check_probes(values, docs, cfg)
    check_config_and_secrecy(values, docs, cfg)
    check_services(docs, cfg)
    # Defaults that the issue asks for.
    if name == "default values":
        expect(find(docs, "HorizontalPodAutoscaler"), "HPA must be on by default")
        expect(find(docs, "PodDisruptionBudget"), "PDB must be on by default")
        expect(find(docs, "ServiceAccount") and one(docs, "ServiceAccount").get("automountServiceAccountToken") is False,
               "ServiceAccount with automountServiceAccountToken: false")
    expect(RELEASE in notes or "tokend" in notes, "NOTES.txt did not render")
    check_crds(docs, cfg)


def check_pod(values: dict, docs: list[dict], cfg: dict) -> None:
    """Hardening, resources, checksums, termination grace and topology spread."""
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
    grace = cfg.get("server", {}).get("shutdown_grace_secs", 20)
    drain = cfg.get("server", {}).get("drain_delay_secs", 0)
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    expect(tgps > grace + drain,
           f"terminationGracePeriodSeconds {tgps} must exceed drain_delay_secs + shutdown_grace_secs ({drain} + {grace})")
    if not values.get("terminationGracePeriodSeconds"):
        expect(tgps == drain + grace + 10, f"default terminationGracePeriodSeconds {tgps} != {drain} + {grace} + 10")
    if values.get("topologySpread", {}).get("enabled", True):
        keys = {t["topologyKey"] for t in pod.get("topologySpreadConstraints", [])}
        expect({"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys, f"topology spread keys {keys}")


def check_probes(values: dict, docs: list[dict], cfg: dict) -> None:
    """Every probe is there, of the kind the kubelet can pass in the render's TLS mode."""
    _, c = tokend_container(docs)
    for probe in PROBES:
        expect(probe in c or (probe == "startupProbe" and not values.get("probes", {}).get("startup", {}).get("enabled", True)),
               f"missing {probe}")
    mode = tls_mode(cfg)
    probes = [c[p] for p in PROBES if p in c]
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


def used_metrics(exprs: str) -> set[str]:
    return set(re.findall(r"\btokend_[a-z_]+", exprs))


def check_config_and_secrecy(values: dict, docs: list[dict], cfg: dict) -> None:
    """tokend.toml has only keys tokend knows; secrets stay out of ConfigMaps; the dashboard charts every metric."""
    _, c = tokend_container(docs)
    for sec, table in cfg.items():
        if isinstance(table, dict):
            expect(sec in TOKEND_KEYS, f"tokend.toml: unknown section [{sec}]")
            expect(set(table) <= TOKEND_KEYS[sec], f"tokend.toml [{sec}]: unknown keys {sorted(set(table) - TOKEND_KEYS[sec])}")
        else:
            expect(sec in TOKEND_KEYS[""], f"tokend.toml: unknown top-level key {sec}")
    for i, t in enumerate(cfg.get("trusted_issuers", [])):
        expect(set(t) <= TRUSTED_ISSUER_KEYS, f"tokend.toml [[trusted_issuers]] {i}: unknown keys {sorted(set(t) - TRUSTED_ISSUER_KEYS)}")
    for cm in find(docs, "ConfigMap"):
        blob = json.dumps(cm.get("data", {}))
        for bad in ("PRIVATE KEY", "sha256:", "$argon2", "password"):
            expect(bad not in blob or cm["metadata"]["name"].endswith("-dashboard"),
                   f"ConfigMap {cm['metadata']['name']} contains {bad!r}: secrets belong in Secrets")
        if "tokend.json" in cm.get("data", {}):
            expect(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard ConfigMap needs grafana_dashboard: \"1\"")
            dash = json.loads(cm["data"]["tokend.json"])
            used = used_metrics(" ".join(t.get("expr", "") for p in dash["panels"] for t in p.get("targets", [])))
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


def check_services(docs: list[dict], cfg: dict) -> None:
    """The API Services (grpc + http, appProtocol following [tls]) and, with [admin], a private ClusterIP one for
    the admin port alone (plain HTTP/1.1 metrics + h2c gRPC), never behind a public Service type; NetworkPolicy
    never opens the admin port to everyone."""
    mode = tls_mode(cfg)
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
    if "admin" not in cfg:
        return
    admin_port = port_of(cfg["admin"]["listen"])
    for np_ in find(docs, "NetworkPolicy"):
        for rule in np_["spec"].get("ingress", []):
            if any(p.get("port") == admin_port for p in rule.get("ports", [])):
                expect(rule.get("from"), "NetworkPolicy opens the admin port to everyone")


def check_crds(docs: list[dict], cfg: dict) -> None:
    """The custom resources kubernetes-validate cannot check: ServiceMonitor, PrometheusRule, HTTPRoute."""
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
            want_port = "admin" if "admin" in cfg else "http"
            want_scheme = "https" if want_port == "http" and tls_mode(cfg) != "plain" else "http"
            eps = spec.get("endpoints") or []
            expect(eps and all(e.get("port") == want_port and e.get("path") == "/metrics" and e.get("scheme") == want_scheme
                               for e in eps), f"{ident}: must scrape port {want_port} path /metrics scheme {want_scheme}")
            targets = [s for s in selected_services(docs, spec["selector"]["matchLabels"])
                       if any(p["name"] == want_port for p in s["spec"]["ports"])]
            expect(len(targets) == 1, f"{ident}: selects {len(targets)} Services with a port {want_port}, want 1")
        elif d["kind"] == "PrometheusRule":
            exprs = " ".join(r["expr"] for g in spec["groups"] for r in g["rules"])
            used = used_metrics(exprs)
            expect(used <= METRICS, f"{ident}: unknown metrics {sorted(used - METRICS)}")
            # The scraped series carry service=<the Service the ServiceMonitor scrapes>: the alerts must match it.
            for sm in find(docs, "ServiceMonitor"):
                scraped = {s["metadata"]["name"] for s in selected_services(docs, sm["spec"]["selector"]["matchLabels"])}
                named = set(re.findall(r'service="([^"]+)"', exprs))
                expect(named and named <= scraped,
                       f"{ident}: alerts select service {sorted(named)}, the ServiceMonitor scrapes {sorted(scraped)}")
        elif d["kind"] == "HTTPRoute":
            expect(spec.get("parentRefs"), f"{ident}: no parentRefs")
            for rule in spec["rules"]:
                for b in rule["backendRefs"]:
                    expect(b["port"] in service_ports,
                           f"{ident}: backendRef port {b['port']} is no Service port")


def check_coverage(renders: dict[str, tuple[dict, list[dict], str]]) -> None:
    """ci/*.yaml together switch on every optional resource, write every tokend key and cover every TLS mode."""
    all_docs = [d for _, docs, _ in renders.values() for d in docs]
    kinds = {d["kind"] for d in all_docs}
    want = {"Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "Ingress", "HTTPRoute"}
    expect(want <= kinds, f"never rendered: {sorted(want - kinds)}")
    names = {d["metadata"]["name"] for d in all_docs}
    expect(any(n.endswith("-headless") for n in names), "the headless Service is never rendered")
    admin_kinds = {d["kind"] for d in all_docs if d["metadata"]["name"].endswith("-admin")}
    expect({"Service", "Secret"} <= admin_kinds, f"the admin Service and Secret are never both rendered ({admin_kinds})")
    expect(any(d["kind"] == "Secret" and d["metadata"]["name"].endswith("-login-app") for d in all_docs),
           "the login app Secret is never rendered")
    cfgs = [config_toml(docs)[1] for n, (_, docs, _) in renders.items() if not n.startswith(NOT_RUN)]
    # Every key tokend knows (TOKEND_KEYS, from src/config.rs) is written by some render, so each one
    # goes through check-config / serve in step 4.
    # Keys that need a store the runtime step cannot start (a Sentinel group) are covered by a
    # render-only set instead.
    render_only = {("store", "sentinel_username")}
    # Keys whose value is itself a table (an inline table in tokend.toml, not a subsection).
    table_keys = {("telemetry", "resource_attributes")}
    all_cfgs = [config_toml(docs)[1] for _, docs, _ in renders.values()]
    for sec, keys in TOKEND_KEYS.items():
        seen = set()
        for cfg in cfgs:
            table = cfg.get(sec, {}) if sec else cfg
            seen |= {k for k, v in table.items() if not isinstance(v, dict) or (sec, k) in table_keys}
        for cfg in all_cfgs:
            table = cfg.get(sec, {}) if sec else cfg
            seen |= {k for k in table if (sec, k) in render_only}
        expect(keys <= seen, f"no render sets tokend.toml [{sec or 'top level'}] {sorted(keys - seen)}")
    modes = {tls_mode(cfg) for cfg in cfgs}
    expect(modes == {"plain", "tls", "mtls"}, f"renders cover TLS modes {sorted(modes)}, want plain, tls and mtls")
    expect(any(n.endswith("-dashboard") for n in names), "the Grafana dashboard is never rendered")
