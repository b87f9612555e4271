#!/usr/bin/env python3
"""tokend's RevocationFeed consumed from Python: drives
examples/feed-python/watch_revocations.py against a running tokend.

Run it through scripts/feed_python_check.sh, which makes the venv, starts
tokend with these clients and sets the environment:

  FEED_BASE_URL        tokend's HTTP base URL (also the issuer)
  FEED_GRPC            tokend's gRPC address (host:port)
  FEED_TOKEND_PID      tokend's pid (stopped and continued to silence the feed)
  FEED_SECRET_<ID>     the secret of each client (ID upper-cased, '-' -> '_'):
    watcher            revocation_feed = true
    orders-service     client_credentials, audience orders-api
    partner            client_credentials, audience orders-api
  TOKEND_BIN, TOKEND_ADMIN_ADDR, TOKEND_ADMIN_TOKEN   for `tokend admin`
  FEED_STUBS_DIR       where the example generates its stubs

Tokens are fetched and revoked over plain HTTP and verified with PyJWT
against the JWKS; whether one is revoked is asked of the watcher only, whose
set changes only through feed events: every "revoked" below was delivered by
the feed. Waits are polls with generous deadlines (no timing is asserted).
One PASS or FAIL line per check, then "N passed, N failed"; exit status 1 on
any failure.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jwt
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "feed-python"))
import watch_revocations as wr  # noqa: E402
from interop_checks import Checks, Stop  # noqa: E402

BASE = os.environ["FEED_BASE_URL"].rstrip("/")
GRPC = os.environ["FEED_GRPC"]
DEADLINE = 30  # seconds for anything the feed should bring within about one
CHECKS = Checks()
check, require = CHECKS.check, CHECKS.require


def secret(client_id):
    return os.environ["FEED_SECRET_" + client_id.upper().replace("-", "_")]


def until(predicate, timeout=DEADLINE):
    """Polls `predicate` until it holds (True) or the deadline passes (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


jwks = jwt.PyJWKClient(BASE + "/.well-known/jwks.json")


def token(client_id):
    """A client_credentials token, verified (signature, iss, aud, exp): its claims."""
    r = requests.post(BASE + "/oauth/token", auth=(client_id, secret(client_id)), timeout=10,
                      data={"grant_type": "client_credentials", "audience": "orders-api"})
    require(r.status_code == 200, f"token for {client_id}", r.text[:200])
    raw = r.json()["access_token"]
    key = jwks.get_signing_key_from_jwt(raw).key
    claims = jwt.decode(raw, key, algorithms=["ES256"], audience="orders-api", issuer=BASE)
    return raw, claims


def revoke(client_id, raw):
    r = requests.post(BASE + "/oauth/revoke", auth=(client_id, secret(client_id)),
                      data={"token": raw}, timeout=10)
    require(r.status_code == 200, f"/oauth/revoke for {client_id}", r.text[:200])


def admin(*args):
    r = subprocess.run([os.environ["TOKEND_BIN"], "admin", *args], capture_output=True, text=True)
    require(r.returncode == 0, f"tokend admin {' '.join(args)}", r.stderr.strip())


def rule_cases(pb):
    """is_revoked on events tokend cannot easily be made to send here: grant
    families, chains, and issue ms read from the jti or from iat."""
    t = 1_760_000_000_123  # ms
    jti = lambda ms: f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7abc-8def-0123456789ab"  # noqa: E731
    claims = {"sub": "alice", "client_id": "gateway", "iat": t // 1000, "jti": jti(t),
              "chain": [{"jti": jti(t - 10_000), "client_id": "shop", "sid": "grant-1"}]}

    def revoked(**event):
        s = wr.RevocationSet()
        s.apply(pb.RevocationEvent(**event), pb)
        return s.is_revoked(claims)

    cut = lambda client, ms: revoked(kind=pb.CREDENTIAL_CHANGE, change=pb.CUT_OFF,  # noqa: E731
                                     client_id=client, not_before_ms=ms)
    check(wr.issued_ms(claims) == t, "issue ms from the version 7 jti")
    check(wr.issued_ms({**claims, "iat": t // 1000 + 5}) == (t // 1000 + 5) * 1000,
          "issue ms from iat when the jti disagrees")
    check(revoked(kind=pb.FAMILY_REVOKED, sid="grant-1") and not revoked(kind=pb.FAMILY_REVOKED, sid="x"),
          "an ancestor's grant family")
    check(revoked(kind=pb.TOKEN_REVOKED, jti=jti(t - 10_000)), "an ancestor's jti")
    check(cut("shop", t - 9_999) and not cut("shop", t - 10_000), "an ancestor's cut-off, by its own issue ms")
    check(cut("gateway", t + 1) and not cut("gateway", t), "the token's own cut-off, strictly before the mark")
    session = lambda ms: revoked(kind=pb.SESSION_REVOKED, subject="alice", not_before_ms=ms)  # noqa: E731
    check(session(t - 9_999) and not session(t - 10_000), "a session mark, by the chain's earliest issue ms")
    check(revoked(kind=pb.CREDENTIAL_CHANGE, change=pb.DISABLED, client_id="shop"), "an ancestor's client disabled")


def main():
    stubs = wr.load_stubs(out_dir=os.environ["FEED_STUBS_DIR"])
    check(stubs[0].EventKind.Name(7) == "HEARTBEAT", "stubs generated from feed.proto")
    rule_cases(stubs[0])

    # Revoked before anyone watches: it must come in the snapshot.
    early_raw, early = token("orders-service")
    revoke("orders-service", early_raw)

    w = wr.RevocationWatcher(GRPC, "watcher", secret("watcher"), stubs=stubs).start()
    require(w.ready.wait(DEADLINE), "the first stream delivers its snapshot and SNAPSHOT_COMPLETE")
    check(w.cursor != "", "SNAPSHOT_COMPLETE gives a cursor", repr(w.cursor))
    check(w.is_revoked(early), "a token revoked before watching is revoked (snapshot)")

    live_raw, live = token("orders-service")
    _, other = token("orders-service")
    _, partner = token("partner")
    require(not w.is_revoked(live) and not w.is_revoked(partner), "fresh tokens are not revoked")

    # RFC 7009 revocation while watching: a live TOKEN_REVOKED event.
    revoke("orders-service", live_raw)
    require(until(lambda: w.is_revoked(live)), "a token revoked at /oauth/revoke is reported revoked",
            f"not within {DEADLINE} s")
    check(not w.is_revoked(other), "another token of the same client is not")

    # The admin API: CREDENTIAL_CHANGE DISABLED, then ENABLED.
    admin("disable-client", "partner")
    check(until(lambda: w.is_revoked(partner)), "a disabled client's token is reported revoked",
          f"not within {DEADLINE} s")
    check(not w.is_revoked(other), "other clients' tokens are not")
    admin("enable-client", "partner")
    check(until(lambda: not w.is_revoked(partner)), "enabled again, its token is not revoked")

    # Bulk cut-offs (ms marks): tokens issued before are revoked, after are not.
    admin("revoke-client", "partner")
    check(until(lambda: w.is_revoked(partner)), "a client cut-off revokes its earlier token")
    _, partner_after = token("partner")
    check(not w.is_revoked(partner_after), "a token issued after the cut-off is not revoked")
    admin("revoke-subject", "orders-service")  # client_credentials: sub = client_id
    check(until(lambda: w.is_revoked(other)), "a subject mark revokes the subject's earlier token")
    _, other_after = token("orders-service")
    check(not w.is_revoked(other_after), "a token issued after the subject mark is not revoked")
    check(w.streams == 1 and w.snapshots == 1, "all on one stream so far",
          f"streams={w.streams} snapshots={w.snapshots}")

    # Silence (tokend stopped): the stream is dropped after 2 x heartbeat_ms,
    # then resumed from the cursor once tokend runs again (no new snapshot).
    pid = int(os.environ["FEED_TOKEND_PID"])
    os.kill(pid, signal.SIGSTOP)
    try:
        check(until(lambda: w.streams >= 2), "a silent stream is dropped and reopened",
              f"streams={w.streams}")
    finally:
        os.kill(pid, signal.SIGCONT)
    late_raw, late = token("orders-service")
    revoke("orders-service", late_raw)
    check(until(lambda: w.is_revoked(late)), "after the silence, a revocation still arrives",
          f"not within {DEADLINE} s")
    check(w.snapshots == 1, "resumed from the cursor, not from a new snapshot", f"snapshots={w.snapshots}")
    check(w.is_revoked(live) and w.is_revoked(early), "earlier revocations are kept")
    w.stop()

    # The example's own command line, as documented: it logs the revocation.
    cli = subprocess.Popen([sys.executable, str(ROOT / "examples/feed-python/watch_revocations.py"),
                            GRPC, "watcher"], env={**os.environ, "FEED_CLIENT_SECRET": secret("watcher")},
                           stderr=subprocess.PIPE, text=True)
    lines = []
    threading.Thread(target=lambda: lines.extend(cli.stderr), daemon=True).start()
    try:
        check(until(lambda: any("snapshot applied" in s for s in lines)), "the command line applies the snapshot",
              "".join(lines)[-500:])
        cli_raw, cli_claims = token("orders-service")
        revoke("orders-service", cli_raw)
        check(until(lambda: any("TOKEN_REVOKED" in s and cli_claims["jti"] in s for s in lines)),
              "the command line logs the TOKEN_REVOKED event", "".join(lines)[-500:])
    finally:
        cli.terminate()
        cli.wait(10)


if __name__ == "__main__":
    try:
        main()
    except Stop:
        pass
    except Exception as e:  # noqa: BLE001 - report, never pass silently
        check(False, "unexpected error", repr(e))
    sys.exit(CHECKS.summary())
