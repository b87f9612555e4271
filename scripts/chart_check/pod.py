"""The pod on this machine: the container's volumes (ConfigMap and Secrets) written under a local folder laid
out like the pod's mounts, stand-ins for the Secrets the chart only references (existingSecret), the
container's environment, and tokend.toml rewritten to run here (mount paths, listen ports, store address:
nothing else), and LocalPod, what the runtime checks share about one render run here.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import grpc

from .pki import Pki
from .proc import Child, minimal_env
from .redis import Redis
from .render import config_toml, find, one, secret_files, tokend_container
from .report import CheckError, R, expect
from .tokend import CI_ADMIN_HASH, CI_CLIENT_HASH, CI_LOGIN_APP_HASH, config_files, keygen, port_of, tls_mode

CI_CLIENTS_TOML = f"""# Stand-in for an operator-managed clients Secret (existingSecret).
[[clients]]
client_id = "ci-client"
secret_hashes = ["{CI_CLIENT_HASH}"]
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
            keygen(binary, cfg["signing"]["algorithm"], out)
            files[key] = out.read_bytes()
    expect(files, f"Secret {name} is mounted at {mount} but tokend.toml names no file there")
    R.note(f"Secret {name} is not rendered by the chart (existingSecret): stood in with {sorted(files)}")
    return files


def projected_files(projected: dict, tmp: Path) -> dict[str, bytes]:
    """What the kubelet projects (federation.kubernetes): the pod's service-account token and the cluster CA
    (kube-root-ca.crt), stood in with a token-shaped string and a throwaway CA."""
    files: dict[str, bytes] = {}
    for src in projected.get("sources", []):
        if "serviceAccountToken" in src:
            files[src["serviceAccountToken"]["path"]] = b"chart-check-stand-in-service-account-token"
        elif src.get("configMap", {}).get("name") == "kube-root-ca.crt":
            ca = Pki(tmp / "kube-root-ca").ca.read_bytes()
            for item in src["configMap"]["items"]:
                files[item["path"]] = ca
        else:
            raise CheckError(f"unexpected projected source {src}")
    R.note(f"projected volume stood in with {sorted(files)}")
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
        elif "projected" in v:
            files = projected_files(v["projected"], root.parent)
        else:
            raise CheckError(f"unexpected volume type in {v}")
        local = root / m["mountPath"].lstrip("/")
        local.mkdir(parents=True, exist_ok=True)
        for key, data in files.items():
            (local / key).write_bytes(data)
            mode = (v.get("secret") or v.get("configMap") or v.get("projected") or {}).get("defaultMode", 0o644)
            os.chmod(local / key, mode | 0o400)
        mounts[m["mountPath"]] = str(local)
    return mounts


# Stand-ins for env values from Secrets the chart only references; others get a random value.
ENV_STAND_INS = {"TOKEND_ADMIN_TOKEN_HASH": CI_ADMIN_HASH, "TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH": CI_LOGIN_APP_HASH}


def pod_env(docs: list[dict], c: dict, home: Path) -> dict[str, str]:
    """The container's environment, as the kubelet builds it (secretKeyRef resolved from rendered Secrets)."""
    env = minimal_env(HOME=str(home))
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


@dataclass
class LocalPod:
    """One render run on this machine: what the runtime checks (runtime.py, api.py) share. The fields after
    `mode` are filled in as the pod comes up (runtime.prepare, runtime.serve)."""
    name: str
    values: dict
    docs: list[dict]
    binary: Path
    pod: dict                      # the Deployment's pod spec
    c: dict                        # its tokend container
    cfg: dict                      # tokend.toml as rendered
    named: dict[str, int]          # container port name -> containerPort
    listeners: list[str]           # grpc, http (and admin): the [sections] with a listen address
    mode: str                      # plain, tls or mtls (tls_mode)
    tmp: Path = Path()             # the scratch folder
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # listener -> the port tokend listens on here
    pki: Pki | None = None
    redis: Redis | None = None
    tokend: Child | None = None
    local_cfg: Path = Path()       # tokend.toml as rewritten to run here

    @classmethod
    def of(cls, name: str, values: dict, docs: list[dict], binary: Path) -> LocalPod:
        pod, c = tokend_container(docs)
        _, cfg = config_toml(docs)
        return cls(name, values, docs, binary, pod, c, cfg, named={p["name"]: p["containerPort"] for p in c["ports"]},
                   listeners=["grpc", "http"] + (["admin"] if "admin" in cfg else []), mode=tls_mode(cfg))

    @property
    def prefix(self) -> str:
        return f"runtime [{self.name}]"

    @property
    def portmap(self) -> dict[int, int]:
        """Container port -> the port tokend listens on here."""
        return {self.named[sec]: self.ports[sec] for sec in self.listeners}

    @cached_property
    def caller(self) -> ssl.SSLContext | None:
        """How a real caller reaches the API listeners over HTTP: plain, TLS verified against the CA, or mTLS."""
        return self.pki.context(client_cert=self.mode == "mtls") if self.mode != "plain" else None

    @cached_property
    def creds(self) -> grpc.ChannelCredentials | None:
        """The same over gRPC."""
        return self.pki.grpc_credentials(client_cert=self.mode == "mtls") if self.mode != "plain" else None
