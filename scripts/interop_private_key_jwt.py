#!/usr/bin/env python3
"""private_key_jwt (RFC 7523 2.2) against a running tokend, from a real
third-party OAuth client: authlib's `PrivateKeyJWT` client authentication on
an `OAuth2Session` (authlib's defaults: no `kid` in the header, no
`client_id` parameter, `aud` = the token endpoint, a one-hour lifetime), and
PyJWT to check what comes back.

Run it through scripts/interop.sh, which makes the venv, registers the
client with `tokend client new --auth private_key_jwt --generate-key`, starts
tokend and sets the environment:

  INTEROP_BASE_URL    tokend's HTTP base URL (also the issuer)
  INTEROP_PKJWT_ID    the client_id of the private_key_jwt client
  INTEROP_PKJWT_KEY   the file with its private key (PEM)
  INTEROP_PKJWT_ALG   its algorithm (RS256, ES256 or EdDSA)
  INTEROP_PKJWT_OTHER a private key of the same algorithm that is not registered

One PASS or FAIL line per check, then "N passed, N failed"; exit status 1 on
any failure.
"""

import os
import sys

import jwt  # PyJWT
import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey, OKPKey, RSAKey

from interop_checks import Checks

BASE = os.environ["INTEROP_BASE_URL"].rstrip("/")
CLIENT = os.environ["INTEROP_PKJWT_ID"]
ALG = os.environ["INTEROP_PKJWT_ALG"]
TIMEOUT = 10

CHECKS = Checks()


def check(name, ok, detail=""):
    CHECKS.check(ok, name, detail)


def read(path):
    # authlib reads a PEM string as an RSA key; other kinds go in as key
    # objects of joserfc, the JOSE library authlib itself signs with.
    kind = {"RS256": RSAKey, "ES256": ECKey, "EdDSA": OKPKey}[ALG]
    with open(path, encoding="ascii") as f:
        return kind.import_key(f.read())


def session(key, meta):
    # authlib takes the private key where a secret would go. Its assertions
    # name the URL given here as `aud`: the token endpoint for token and
    # introspection requests (authlib uses that method for both), the
    # revocation endpoint for revocations (authlib's own method for them
    # would otherwise be client_secret_basic).
    return OAuth2Session(
        CLIENT,
        key,
        token_endpoint_auth_method=PrivateKeyJWT(meta["token_endpoint"], alg=ALG),
        revocation_endpoint_auth_method=PrivateKeyJWT(meta["revocation_endpoint"], alg=ALG),
        timeout=TIMEOUT,
    )


meta = requests.get(f"{BASE}/.well-known/oauth-authorization-server", timeout=TIMEOUT).json()
token_endpoint = meta["token_endpoint"]
check(
    "discovery lists private_key_jwt",
    "private_key_jwt" in meta.get("token_endpoint_auth_methods_supported", []),
    str(meta.get("token_endpoint_auth_methods_supported")),
)
check(
    f"discovery lists {ALG} for client assertions",
    ALG in meta.get("token_endpoint_auth_signing_alg_values_supported", []),
    str(meta.get("token_endpoint_auth_signing_alg_values_supported")),
)

s = session(read(os.environ["INTEROP_PKJWT_KEY"]), meta)
token = s.fetch_token(token_endpoint, grant_type="client_credentials")
access = token.get("access_token", "")
check("authlib gets a token", bool(access), str(token))
check("no refresh token for client_credentials", "refresh_token" not in token, str(token))

jwks = jwt.PyJWKClient(meta["jwks_uri"])
claims = jwt.decode(
    access,
    jwks.get_signing_key_from_jwt(access).key,
    algorithms=["RS256", "ES256", "EdDSA"],
    issuer=meta["issuer"],
    options={"verify_aud": False},
)
check("the token verifies against the JWKS and names the client", claims.get("client_id") == CLIENT, str(claims))

# Each request is a new assertion (a new jti): a second one works too.
again = s.fetch_token(token_endpoint, grant_type="client_credentials")
check("a second assertion gets a second token", again.get("access_token") not in ("", None, access))

# Introspection and revocation authenticate with the same method.
intro = s.introspect_token(meta["introspection_endpoint"], token=access)
check("introspection with private_key_jwt: active", intro.status_code == 200 and intro.json().get("active") is True, intro.text)
rev = s.revoke_token(meta["revocation_endpoint"], token=access)
check("revocation with private_key_jwt (aud = the revocation endpoint)", rev.status_code == 200, rev.text)
intro = s.introspect_token(meta["introspection_endpoint"], token=access)
check("the revoked token is inactive", intro.status_code == 200 and intro.json().get("active") is False, intro.text)

# A key the client never registered: invalid_client, 401.
stranger = session(read(os.environ["INTEROP_PKJWT_OTHER"]), meta)
try:
    stranger.fetch_token(token_endpoint, grant_type="client_credentials")
    check("an unregistered key is refused", False, "got a token")
except OAuthError as e:
    check("an unregistered key is refused with invalid_client", e.error == "invalid_client", repr(e))

# The client cannot fall back to a secret.
r = requests.post(
    token_endpoint,
    data={"grant_type": "client_credentials"},
    auth=(CLIENT, "a-guessed-secret"),
    timeout=TIMEOUT,
)
check("a secret for a private_key_jwt client: 401 invalid_client", r.status_code == 401 and r.json().get("error") == "invalid_client", r.text)

sys.exit(CHECKS.summary())
