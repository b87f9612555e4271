"""What the checks know about tokend: its configuration keys and metrics, the CI secrets behind the hashes
in helm/tokend/ci/*.yaml, helpers on a parsed tokend.toml, and running the binary (one-shot commands and
`tokend serve`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from .proc import Child, minimal_env, run
from .render import ROOT
from .report import expect

# tokend's configuration keys, as in src/config.rs (the chart must render nothing else: tokend rejects
# unknown keys). [admin] token_hash and [authorization] login_app_token_hash are not here on purpose: the
# chart passes them from Secrets (TOKEND_ADMIN_TOKEN_HASH, TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH), never
# in the ConfigMap.
TOKEND_KEYS = {
    "": {"issuer", "clients_file", "trusted_issuers"},
    "http": {"listen", "max_body_bytes", "path_prefix"},
    "grpc": {"listen"},
    "store": {"url", "key_prefix", "timeout_ms", "tls_ca_file", "tls_cert_file", "tls_key_file", "allow_eviction",
              "sentinel_username", "replica_acks", "replica_ack_timeout_ms"},
    "tokens": {"access_ttl_secs", "refresh_ttl_secs", "code_ttl_secs", "leeway_secs"},
    "signing": {"algorithm", "key_file", "previous_key_files"},
    "log": {"format", "level"},
    "server": {"shutdown_grace_secs", "drain_delay_secs", "reload_poll_secs", "header_read_timeout_secs",
               "request_timeout_secs", "max_concurrent_requests", "max_connections",
               "max_concurrent_requests_per_peer", "max_concurrent_streams", "body_read_timeout_secs"},
    "authorization": {"login_url", "challenge_ttl_secs"},
    "admin": {"listen"},
    "tls": {"cert_file", "key_file", "client_ca_file", "client_auth", "self_signed_client_certs", "reload_check_secs"},
    "rate_limit": {"per_sec", "burst"},
    "auth_throttle": {"enabled", "threshold", "base_secs", "max_secs", "reset_secs"},
    "discovery": {"scopes_supported", "mtls_endpoint_base_url"},
    "revocation_feed": {"log_max_len", "log_retention_secs", "poll_interval_ms", "heartbeat_secs",
                        "snapshot_max_age_ms", "max_snapshot", "max_watchers", "max_watchers_per_client",
                        "send_timeout_secs"},
    "client_assertion": {"max_lifetime_secs"},
    "telemetry": {"otlp_endpoint", "sampling_ratio", "service_name", "resource_attributes", "max_queue_size"},
}
# Keys of a [[trusted_issuers]] entry (tokend-core's TrustedIssuerConfig).
TRUSTED_ISSUER_KEYS = {"issuer", "jwks_file", "jwks_uri", "audiences", "bearer_token_file", "ca_file", "max_lifetime_secs",
                       "single_use_jti", "min_refetch_secs", "refresh_secs", "fetch_timeout_ms"}
# Config keys holding paths of mounted files (each must lie under a volume mount).
FILE_KEYS = [("", "clients_file"), ("signing", "key_file"), ("store", "tls_ca_file"), ("store", "tls_cert_file"),
             ("store", "tls_key_file"), ("tls", "cert_file"), ("tls", "key_file"), ("tls", "client_ca_file")]
METRICS = {
    "tokend_tokens_issued_total", "tokend_oauth_errors_total", "tokend_request_duration_seconds_bucket",
    "tokend_store_duration_seconds_bucket", "tokend_store_errors_total", "tokend_store_up", "tokend_store_evictable",
    "tokend_rate_limited_total", "tokend_signing_key_info", "tokend_build_info",
}


def secret_hash(secret: str) -> str:
    """What `tokend hash-secret` prints for a secret."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


# Secret of the test clients in helm/tokend/ci/*.yaml (sha256:f82d...).
CI_CLIENT_SECRET = "ci-secret"
CI_CLIENT_HASH = secret_hash(CI_CLIENT_SECRET)
# Admin bearer secret of helm/tokend/ci/full-values.yaml (admin.tokenHash sha256:07c3...), also used for the
# stand-in of an admin.existingSecret.
CI_ADMIN_SECRET = "ci-admin-secret"
CI_ADMIN_HASH = secret_hash(CI_ADMIN_SECRET)
# The login app's bearer secret of helm/tokend/ci/full-values.yaml (loginApp.tokenHash sha256:0a8f...), also used
# for the stand-in of a loginApp.existingSecret.
CI_LOGIN_APP_SECRET = "ci-login-app-secret"
CI_LOGIN_APP_HASH = secret_hash(CI_LOGIN_APP_SECRET)


def binary_path() -> Path:
    """$TOKEND_BIN (relative to the repository), default target/debug/tokend."""
    binary = Path(os.environ.get("TOKEND_BIN", ROOT / "target" / "debug" / "tokend"))
    return binary if binary.is_absolute() else ROOT / binary


# ----------------------------------------------------------------------------------------------
# a parsed tokend.toml

def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def config_files(cfg: dict) -> list[str]:
    """Every mounted file tokend.toml names (FILE_KEYS and the previous signing keys)."""
    out = []
    for sec, key in FILE_KEYS:
        table = cfg.get(sec, {}) if sec else cfg
        if table.get(key):
            out.append(table[key])
    for t in cfg.get("trusted_issuers", []):
        out += [t[k] for k in ("jwks_file", "bearer_token_file", "ca_file") if t.get(k)]
    return out + cfg.get("signing", {}).get("previous_key_files", [])


def tls_mode(cfg: dict) -> str:
    """How the HTTP and gRPC listeners speak: plain, tls or mtls ([tls] in tokend.toml)."""
    t = cfg.get("tls", {})
    if not t.get("cert_file"):
        return "plain"
    # Client certificates required (the default with a client CA or self-signed ones); "optional" lets a
    # client without one (the kubelet) through the handshake, as plain TLS does.
    certs = t.get("client_ca_file") or t.get("self_signed_client_certs")
    return "mtls" if certs and t.get("client_auth", "required") == "required" else "tls"


# ----------------------------------------------------------------------------------------------
# the binary

def check_config(binary: Path, config: Path, env: dict | None = None):
    """`tokend check-config --config <config>` (by default with nothing from this environment but PATH)."""
    return run([binary, "check-config", "--config", config], env=env if env is not None else minimal_env())


def keygen(binary: Path, alg: str, out: Path) -> None:
    r = run([binary, "keygen", "--alg", alg, "--out", out])
    expect(r.returncode == 0 and out.exists(), f"tokend keygen --alg {alg} failed: {r.stdout}{r.stderr}")


def hash_secret(binary: Path, secret: str):
    return run([binary, "hash-secret"], input=secret)


def check_binary(binary: Path) -> None:
    """The binary exists, runs, has the serve and check-config commands; redis-server is there too."""
    expect(binary.is_file() and os.access(binary, os.X_OK), f"{binary} is missing or not executable "
           "(build it with `cargo build --bin tokend`, or set TOKEND_BIN)")
    out = run([binary, "--help"], timeout=30).stdout
    expect("serve" in out and "check-config" in out, f"{binary} --help lists no serve/check-config:\n{out}")
    expect(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get install redis-server)")


def check_config_rejects_unknown_key(binary: Path, tmp: Path) -> None:
    """check-config must really validate: the same file plus an unknown key fails."""
    p = tmp / "t.toml"
    p.write_text('issuer = "http://x"\n[store]\nurl = "memory://"\nnot_a_key = 1\n')
    r = check_config(binary, p)
    expect(r.returncode == 1, f"check-config accepted an unknown key (exit {r.returncode}): {r.stdout}{r.stderr}")
    expect("not_a_key" in r.stdout + r.stderr, f"check-config did not name the unknown key: {r.stdout}{r.stderr}")


def serve(binary: Path, config: Path, env: dict, log: Path) -> Child:
    """`tokend serve` in its own session, its output in log; stop() kills it."""
    return Child([binary, "serve", "--config", config], log=log, env=env, cwd=str(config.parent),
                 start_new_session=True)
