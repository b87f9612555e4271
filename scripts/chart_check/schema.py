"""Negative tests (step 3): values.schema.json rejects wrong types, bad formats and unknown keys, and the
templates refuse unsafe combinations, each for the reason it should.
"""

from __future__ import annotations

import json

import helm_python as hp

from .render import CHART, lint_report, render, values_yaml
from .report import CheckError, expect

# Values the schema must reject.
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
    values = values_yaml()
    expect(set(values) == set(schema["properties"]), "values.yaml and values.schema.json list different top-level keys: "
           f"{sorted(set(values) ^ set(schema['properties']))}")


# Values the templates must refuse, and a part of the message they must refuse them with.
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
    """helm install rejects the values (with needle in the message); schema errors also fail helm lint."""
    try:
        render(values)
    except hp.HelmError as e:
        if needle:
            expect(needle in str(e), f"rejected, but not for the expected reason ({needle!r}): {e}")
    else:
        raise CheckError(f"values were accepted: {json.dumps(values)}")
    if needle is None:  # schema errors must also surface in helm lint
        expect(lint_report(values).get("errors"), "helm lint accepted values that install rejects")
