"""Step 4 for one render: the ports agree, the pod's files and environment laid out here pass
`tokend check-config`, `tokend serve` passes every probe as the kubelet sends it, the API checks (api.py),
then the pod's life: a store outage and its end, and SIGTERM within terminationGracePeriodSeconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from . import api
from .pki import Pki
from .pod import LocalPod, layout_pod_files, pod_env, rewrite_config
from .probes import http_get, run_probe, wait_probe, wait_readyz
from .proc import free_port, scratch_dir
from .redis import Redis
from .render import PROBES, find
from .report import CheckError, R, Skip, expect
from .tokend import check_config, config_files, port_of, serve

MEMORY_STORE = os.environ.get("CHART_CHECK_STORE") == "memory"


def runtime_check(name: str, values: dict, docs: list[dict], binary: Path, keep: bool) -> None:
    p = LocalPod.of(name, values, docs, binary)
    with R.check(f"{p.prefix}: ports agree (Service targetPort -> containerPort -> tokend listen)"):
        check_ports(p)
    with scratch_dir(keep) as tmp, contextlib.ExitStack() as running:
        p.tmp = tmp
        # Each step needs the one before: the rest is left out when one fails (or is skipped).
        for check, step in ((f"{p.prefix}: tokend check-config accepts the rendered files", prepare),
                            (f"{p.prefix}: tokend serve passes the startup, readiness and liveness probes", start)):
            with R.check(check):
                step(p, running)
            if not R.ok(check):
                return
        api.check_api(p)
        check_store_outage(p)
        check_sigterm(p)


def config_path(c: dict) -> str:
    """The --config path in the container's args."""
    return c["args"][c["args"].index("--config") + 1]


def check_ports(p: LocalPod) -> None:
    c, cfg, named = p.c, p.cfg, p.named
    expect(set(named) == set(p.listeners), f"container ports {sorted(named)}, tokend listens on {p.listeners}")
    for sec in p.listeners:
        expect(port_of(cfg[sec]["listen"]) == named[sec],
               f"[{sec}] listen {cfg[sec]['listen']} != containerPort {sec} {named[sec]}")
    for svc in find(p.docs, "Service"):
        for sp in svc["spec"]["ports"]:
            tp = sp["targetPort"]
            target = named.get(tp) if isinstance(tp, str) else tp
            expect(target == named[sp["name"]],
                   f"Service {svc['metadata']['name']} port {sp['name']}: targetPort {tp} is not containerPort {sp['name']}")
    for pr in PROBES:
        if pr in c and "grpc" in c[pr]:
            expect(c[pr]["grpc"]["port"] == named["grpc"], f"{pr} gRPC port is not the grpc container port")
    expect(c.get("args", [])[:1] == ["serve"] and "--config" in c["args"], f"container args {c.get('args')}")
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    cfg_path = config_path(c)
    expect(any(cfg_path.startswith(m + "/") for m in mounts), f"--config {cfg_path} is not under a mount")
    for f in config_files(cfg):
        expect(any(f.startswith(m + "/") for m in mounts), f"{f} (in tokend.toml) is not under a mount")


def prepare(p: LocalPod, running: contextlib.ExitStack) -> None:
    """Lays the pod out under p.tmp, starts the store, picks ports, rewrites tokend.toml; check-config must pass."""
    rediss = p.cfg["store"]["url"].startswith("rediss://")
    if MEMORY_STORE and rediss:
        raise Skip("CHART_CHECK_STORE=memory cannot stand in for a rediss:// store")
    p.pki = Pki(p.tmp / "pki") if p.mode != "plain" or rediss else None
    mounts = layout_pod_files(p.docs, p.pod, p.c, p.tmp / "pod", p.cfg, p.binary, p.pki)
    p.env = pod_env(p.docs, p.c, p.tmp)
    if not MEMORY_STORE:
        p.redis = Redis(p.tmp, p.env.get("TOKEND_STORE_PASSWORD"), tls=p.pki if rediss else None,
                        client_auth=bool(p.cfg["store"].get("tls_cert_file")))
        running.callback(p.redis.stop)
    p.ports = {sec: free_port() for sec in p.listeners}
    cfg_path = config_path(p.c)
    mount = max((m for m in mounts if cfg_path.startswith(m + "/")), key=len)
    local_cfg = Path(mounts[mount]) / cfg_path[len(mount) + 1:]
    new = rewrite_config(local_cfg.read_text(), mounts, p.ports, p.redis.port if p.redis else None)
    local_cfg.write_text(new)
    p.local_cfg = local_cfg
    # clients.toml and other mounted files keep their content: only paths inside tokend.toml move.
    r = check_config(p.binary, local_cfg, env=p.env)
    expect(r.returncode == 0, f"check-config exit {r.returncode}:\n{r.stdout}{r.stderr}\nconfig:\n{new}")


def start(p: LocalPod, running: contextlib.ExitStack) -> None:
    """`tokend serve` on the rewritten config; the startup, readiness and liveness probes must pass."""
    c = p.c
    t = p.tokend = serve(p.binary, p.local_cfg, p.env, p.tmp / "tokend.log")
    running.callback(t.stop)
    msgs = []
    if "startupProbe" in c:
        sp = c["startupProbe"]
        msgs.append("startup: " + wait_probe(sp, p.portmap, p.named,
                                             sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3), t))
    rp = c["readinessProbe"]
    msgs.append("readiness: " + wait_probe(rp, p.portmap, p.named, 30, t))
    if "tcpSocket" in rp:
        # A TCP connect cannot tell ready from not ready: wait for the real answer before going on.
        msgs.append("(as a caller) " + wait_readyz(p.ports["http"], p.caller, 200, 30))
    ok, msg = run_probe(c["livenessProbe"], p.portmap, p.named)
    expect(ok, f"liveness failed: {msg}\n{t.tail()}")
    msgs.append("liveness: " + msg)
    print("        " + "\n        ".join(msgs))


def wait_readiness(p: LocalPod, ready: bool, budget: float, interval: float | None = None) -> str:
    """Waits until tokend reports ready (ready False: not ready) through its readiness probe as the kubelet
    sends it and, where that probe is a TCP connect (which cannot tell), through /readyz as a caller."""
    rp = p.c["readinessProbe"]
    msg = ""
    if ready or "tcpSocket" not in rp:
        msg = wait_probe(rp, p.portmap, p.named, budget, p.tokend, want=ready, interval=interval)
    if "tcpSocket" in rp:
        msg = wait_readyz(p.ports["http"], p.caller, 200 if ready else 503, budget, interval or 0.25)
    return msg


def switch_store(p: LocalPod, up: bool) -> None:
    """Stops or restarts (same port, same settings) the store; with CHART_CHECK_STORE=memory there is none: Skip."""
    if p.redis is None:
        raise Skip("CHART_CHECK_STORE=memory")
    if up:
        p.redis.start()
    else:
        p.redis.stop()


def check_store_outage(p: LocalPod) -> None:
    """The store goes away: readiness fails, liveness keeps passing; it comes back: readiness recovers."""
    rp, lp, t = p.c["readinessProbe"], p.c["livenessProbe"], p.tokend
    outage = ("store outage: tokend reports not ready (/readyz 503), the tcpSocket probes keep passing"
              if "tcpSocket" in rp else "store outage: readiness fails, liveness keeps passing")
    with R.check(f"{p.prefix}: {outage}"):
        switch_store(p, up=False)
        msg = wait_readiness(p, False, 10)
        if "tcpSocket" in rp:
            # mTLS: the kubelet's probe is a TCP connect and cannot see the store; tokend itself does.
            R.note(f"{p.name}: readiness is a tcpSocket probe (mTLS): during a store outage pods stay in the "
                   f"Service; tokend's own /readyz says {msg.split('-> ')[-1]}")
        ok, lmsg = run_probe(lp, p.portmap, p.named)
        expect(t.alive(), f"tokend died when the store went away:\n{t.tail()}")
        if not ok and "grpc" in lp:
            raise Skip(f"readiness fails as it should, but the gRPC liveness probe fails too ({lmsg}): tokend flips "
                       "every gRPC health service with the store, so probes.livenessType grpc would restart pods "
                       "during a Redis outage (probes.livenessType http would not)")
        expect(ok, f"liveness fails while only the store is down ({lmsg}): the kubelet would restart healthy pods")

    with R.check(f"{p.prefix}: store back: readiness recovers without a restart"):
        switch_store(p, up=True)
        print(f"        {wait_readiness(p, True, 20)}")


def check_sigterm(p: LocalPod) -> None:
    """SIGTERM: not ready (but serving) for drain_delay_secs, then an exit 0 within terminationGracePeriodSeconds."""
    t = p.tokend
    drain = p.cfg["server"].get("drain_delay_secs", 0)
    with R.check(f"{p.prefix}: SIGTERM: tokend exits within terminationGracePeriodSeconds"
                 + (f" (not ready but still serving for drain_delay_secs {drain})" if drain else "")):
        budget = p.pod.get("terminationGracePeriodSeconds", 30)
        t0 = time.monotonic()
        t.proc.send_signal(signal.SIGTERM)
        if drain:
            # Within the first half of the drain delay tokend must report not ready, and still serve new requests.
            wait_readiness(p, False, drain / 2, interval=0.05)
            code, body = http_get(p.ports["http"], "/healthz", 2, tls=p.caller)
            expect(code == 200, f"a new request during the drain delay -> {code} {body[:100]!r}")
        try:
            rc = t.proc.wait(max(0.0, budget - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            raise CheckError(f"tokend still running {budget}s after SIGTERM: the kubelet would SIGKILL it") from None
        took = time.monotonic() - t0
        expect(rc == 0, f"tokend exited with {rc} after SIGTERM:\n{t.tail()}")
        expect(took >= drain - 0.2, f"tokend exited after {took:.1f}s, before its drain delay of {drain}s")
        print(f"        exited in {took:.1f}s (drain delay {drain}s, grace {budget}s)")
