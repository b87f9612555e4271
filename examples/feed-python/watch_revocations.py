#!/usr/bin/env python3
"""Watch tokend's revocation feed (proto/tokend/v1/feed.proto) from Python.

A resource server that verifies tokend's JWTs itself (e.g. with PyJWT against
the JWKS) calls `watcher.is_revoked(claims)` after the signature and claim
checks: the answer is local, kept current by the feed, and matches tokend's
introspection. Needs `grpcio` and `grpcio-tools` (stubs are generated from the
.proto at start, into a temporary folder). Runnable on its own:

  FEED_CLIENT_SECRET=... python3 watch_revocations.py 127.0.0.1:50051 orders-api

The client must have `revocation_feed = true` in its `[[clients]]` entry.
"""

import importlib
import logging
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from grpc_tools import protoc

log = logging.getLogger("watch_revocations")
PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def load_stubs(proto_root=PROTO_ROOT, out_dir=None):
    """Generates feed_pb2 / feed_pb2_grpc into out_dir (default: a temp dir)."""
    out = str(out_dir or tempfile.mkdtemp(prefix="tokend-feed-stubs-"))
    Path(out).mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{proto_root}", f"--python_out={out}", f"--grpc_python_out={out}",
            "tokend/v1/feed.proto"]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on tokend/v1/feed.proto")
    sys.path.insert(0, out)
    return (importlib.import_module("tokend.v1.feed_pb2"),
            importlib.import_module("tokend.v1.feed_pb2_grpc"))


def uuid7_ms(jti):
    """Unix ms in a version 7 UUID's first 48 bits; None for another shape."""
    return int(jti[:8] + jti[9:13], 16) if isinstance(jti, str) and UUID7.match(jti) else None


def issued_ms(claims):
    """The token's issue time in ms: from its jti when that agrees with iat."""
    second = int(claims["iat"]) * 1000
    ms = uuid7_ms(claims.get("jti"))
    if ms is not None and second <= ms < second + 1000:
        return ms
    return claims.get("iat_ms") or second  # iat_ms: tokens of older tokend releases


class RevocationSet:
    def __init__(self):
        self.jtis, self.sids = {}, {}        # jti / sid -> expires_at (s, 0 = never)
        self.clients, self.subjects = {}, {}  # id -> (not_before_ms, expires_at)
        self.disabled = set()

    @staticmethod
    def _raise(marks, key, not_before_ms, expires_at):  # marks only move forward
        nb, exp = marks.get(key, (not_before_ms, expires_at))
        marks[key] = (max(nb, not_before_ms), 0 if 0 in (exp, expires_at) else max(exp, expires_at))

    def apply(self, ev, pb):
        K, C = pb.EventKind, pb.CredentialChange
        if ev.kind == K.TOKEN_REVOKED:
            self.jtis[ev.jti] = ev.expires_at
        elif ev.kind == K.FAMILY_REVOKED:
            self.sids[ev.sid] = ev.expires_at
        elif ev.kind == K.SESSION_REVOKED:
            self._raise(self.subjects, ev.subject, ev.not_before_ms, ev.expires_at)
        elif ev.kind == K.CREDENTIAL_CHANGE and ev.change == C.CUT_OFF:
            self._raise(self.clients, ev.client_id, ev.not_before_ms, ev.expires_at)
        elif ev.kind == K.CREDENTIAL_CHANGE and ev.change == C.DISABLED:
            self.disabled.add(ev.client_id)
        elif ev.kind == K.CREDENTIAL_CHANGE and ev.change == C.ENABLED:
            self.disabled.discard(ev.client_id)

    def prune(self, now, leeway=30):
        """Drops entries no unexpired token can match (tokens verify `leeway` s past exp)."""
        live = lambda exp: exp == 0 or exp + leeway >= now  # noqa: E731
        self.jtis = {k: e for k, e in self.jtis.items() if live(e)}
        self.sids = {k: e for k, e in self.sids.items() if live(e)}
        self.clients = {k: m for k, m in self.clients.items() if live(m[1])}
        self.subjects = {k: m for k, m in self.subjects.items() if live(m[1])}

    def is_revoked(self, claims: dict) -> bool:
        """tokend's rule: the token and each `chain` ancestor by jti, sid and
        client (disabled, or cut off after that link's issue ms); the subject
        by the earliest issue ms of them all."""
        issued = issued_ms(claims)
        links = [(claims["jti"], claims["client_id"], claims.get("sid") or claims.get("gid"), issued)]
        for link in claims.get("chain", []):  # an ancestor without a time counts as issued with us
            links.append((link["jti"], link["client_id"], link.get("sid"), uuid7_ms(link["jti"]) or issued))
        for jti, client, sid, ms in links:
            if (jti in self.jtis or (sid is not None and sid in self.sids) or client in self.disabled
                    or ms < self.clients.get(client, (0, 0))[0]):
                return True
        return min(ms for *_, ms in links) < self.subjects.get(claims["sub"], (0, 0))[0]


class RevocationWatcher:
    """Keeps a RevocationSet current from the feed, in a background thread."""

    def __init__(self, target, client_id, client_secret, credentials=None, stubs=None):
        self.pb, pb_grpc = stubs or load_stubs()
        channel = (grpc.secure_channel(target, credentials) if credentials
                   else grpc.insecure_channel(target))
        self.stub = pb_grpc.RevocationFeedStub(channel)
        self.request = dict(client_id=client_id, client_secret=client_secret)
        self.set, self.cursor, self.ready = RevocationSet(), "", threading.Event()
        self.heartbeat_s = 15.0  # until tokend announces its heartbeat_ms
        self.lock, self.stopped, self.call = threading.Lock(), threading.Event(), None
        self.streams = self.snapshots = 0  # counters, for tests and metrics

    def start(self):
        threading.Thread(target=self._run, daemon=True, name="revocation-feed").start()
        return self

    def stop(self):
        self.stopped.set()
        if self.call:
            self.call.cancel()

    def is_revoked(self, claims: dict) -> bool:
        """Call after verifying the token's signature, iss, aud and exp. Until
        `ready` is set (the first snapshot applied) nothing is known: refuse
        tokens meanwhile to fail closed."""
        with self.lock:
            return self.set.is_revoked(claims)

    def _run(self):
        backoff = 0.25
        while not self.stopped.is_set():
            self.delivered = False
            try:
                self._stream()
                log.warning("feed stream ended; resuming from %r", self.cursor)
            except grpc.RpcError as e:
                if self.stopped.is_set():
                    return
                if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    log.error("feed refused: %s %s", e.code().name, e.details())
                    backoff = 15.0  # wrong secret or no `revocation_feed = true`: an operator's job
                else:  # UNAVAILABLE, ABORTED (slow consumer), CANCELLED (silent), ...
                    log.warning("feed %s; resuming from %r", e.code().name, self.cursor)
            backoff = 0.25 if self.delivered else min(backoff * 2, 15.0)
            self.stopped.wait(backoff * random.uniform(1, 1.5))  # with jitter

    def _stream(self):
        self.call = self.stub.Watch(self.pb.WatchRequest(cursor=self.cursor, **self.request))
        self.streams += 1
        self.last_event = time.monotonic()
        threading.Thread(target=self._watchdog, args=(self.call,), daemon=True).start()
        K, fresh = self.pb.EventKind, None  # fresh: a snapshot being built aside
        for ev in self.call:
            self.last_event, self.delivered = time.monotonic(), True
            if ev.heartbeat_ms:
                self.heartbeat_s = ev.heartbeat_ms / 1000
            if ev.snapshot:
                fresh = fresh or RevocationSet()
                fresh.apply(ev, self.pb)
            elif ev.kind == K.SNAPSHOT_COMPLETE:
                with self.lock:
                    self.set = fresh or RevocationSet()  # the snapshot is all that is in force
                fresh, self.snapshots = None, self.snapshots + 1
                self.ready.set()
            else:
                with self.lock:
                    self.set.apply(ev, self.pb)
                    if ev.kind == K.HEARTBEAT:
                        self.set.prune(time.time())
                if ev.kind != K.HEARTBEAT:
                    log.info("%s %s", K.Name(ev.kind), str(ev).replace("\n", " "))
            if ev.cursor:
                self.cursor = ev.cursor  # resume after the last event applied

    def _watchdog(self, call):
        """Cancels a stream silent for twice the heartbeat (a dead connection)."""
        while call.is_active():
            if time.monotonic() - self.last_event > 2 * self.heartbeat_s:
                log.warning("feed silent for %.1f s; reconnecting", 2 * self.heartbeat_s)
                call.cancel()
            time.sleep(0.2)


if __name__ == "__main__":
    import os

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    target, client_id = sys.argv[1], sys.argv[2]
    w = RevocationWatcher(target, client_id, os.environ["FEED_CLIENT_SECRET"]).start()
    w.ready.wait()
    log.info("snapshot applied; watching (Ctrl-C to stop)")
    while True:
        time.sleep(60)
