#!/usr/bin/env python3
"""RFC 8693 token exchange against a running tokend, from a generic HTTP
client (`requests`) and an independent JWT library (PyJWT).

Run it through scripts/interop.sh, which makes the venv, starts tokend with
the clients below and sets the environment:

  INTEROP_BASE_URL   tokend's HTTP base URL (also the issuer)
  INTEROP_ALG        the signing algorithm tokend was started with
  INTEROP_SECRET_<ID> the secret of each client (ID upper-cased, '-' -> '_'):
    portal           client_credentials; audience gateway
    gateway          exchanges tokens addressed to gateway for orders-api
                     (token_exchange_claims = ["organisation_id"])
    orders           exchanges tokens addressed to orders-api for billing-api
    resource-server  introspection = "any"

Nothing here knows tokend's internals: every request is a plain
form-encoded POST with HTTP Basic client authentication, as any OAuth
client library would send it. One PASS or FAIL line per check, then
"N passed, N failed"; exit status 1 on any failure.
"""

import base64
import json
import os
import sys

import jwt
import requests

from interop_checks import Checks, Stop

TE = "urn:ietf:params:oauth:grant-type:token-exchange"
AT = "urn:ietf:params:oauth:token-type:access_token"

BASE = os.environ["INTEROP_BASE_URL"].rstrip("/")
ISSUER = BASE
ALG = os.environ["INTEROP_ALG"]
TIMEOUT = 10

CHECKS = Checks(f"[{ALG}] ")
check, require = CHECKS.check, CHECKS.require


def secret(client_id):
    return os.environ["INTEROP_SECRET_" + client_id.upper().replace("-", "_")]


def post(path, client_id, data):
    """A form-encoded POST with HTTP Basic client authentication."""
    return requests.post(
        BASE + path, data=data, auth=(client_id, secret(client_id)), timeout=TIMEOUT
    )


def body(r):
    try:
        return r.json()
    except ValueError:
        return {"_not_json": r.text[:200]}


def unverified_claims(token):
    """The payload, decoded without verification (to compare with the
    verified one, and for the subject token's own claims)."""
    return jwt.decode(token, options={"verify_signature": False})


def token_ok(r, name):
    """A successful token response (RFC 6749 5.1)."""
    b = body(r)
    require(r.status_code == 200, f"{name}: HTTP 200", f"{r.status_code} {b}")
    require(isinstance(b.get("access_token"), str) and b["access_token"].count(".") == 2,
            f"{name}: a JWT access_token", str(b))
    check(str(b.get("token_type", "")).lower() == "bearer", f"{name}: token_type Bearer", str(b.get("token_type")))
    check(isinstance(b.get("expires_in"), int) and b["expires_in"] > 0, f"{name}: expires_in > 0",
          str(b.get("expires_in")))
    check("no-store" in r.headers.get("Cache-Control", ""), f"{name}: Cache-Control no-store",
          r.headers.get("Cache-Control", "(none)"))
    return b


def exchange(client_id, subject_token, audience, scope=None):
    data = {
        "grant_type": TE,
        "subject_token": subject_token,
        "subject_token_type": AT,
        "audience": audience,
    }
    if scope is not None:
        data["scope"] = scope
    return post("/oauth/token", client_id, data)


def oauth_error(r, status, error, name):
    b = body(r)
    check(r.status_code == status and b.get("error") == error,
          f"{name}: {status} {error}", f"{r.status_code} {b}")


class Verifier:
    """PyJWT against the JWKS that discovery names, fetched with requests."""

    def __init__(self):
        r = requests.get(BASE + "/.well-known/oauth-authorization-server", timeout=TIMEOUT)
        meta = body(r)
        require(r.status_code == 200, "discovery: HTTP 200", f"{r.status_code} {meta}")
        check(meta.get("issuer") == ISSUER, "discovery: issuer", str(meta.get("issuer")))
        check(TE in meta.get("grant_types_supported", []), "discovery: lists the token-exchange grant",
              str(meta.get("grant_types_supported")))
        check(ALG in meta.get("access_token_signing_alg_values_supported", []),
              f"discovery: lists {ALG}", str(meta.get("access_token_signing_alg_values_supported")))
        jwks_uri = meta.get("jwks_uri")
        require(isinstance(jwks_uri, str) and jwks_uri.startswith(BASE), "discovery: jwks_uri", str(jwks_uri))
        r = requests.get(jwks_uri, timeout=TIMEOUT)
        require(r.status_code == 200, "JWKS: HTTP 200", str(r.status_code))
        # PyJWKSet skips keys it cannot use; every served key must be usable.
        served = body(r).get("keys", [])
        self.jwks = jwt.PyJWKSet.from_dict(body(r))
        require(len(self.jwks.keys) == len(served) > 0, "JWKS: PyJWT loads every key",
                f"{len(self.jwks.keys)} of {len(served)}")

    def verify(self, token, audience, name):
        """Signature, alg, typ, aud, iss, exp, iat, nbf by PyJWT; the claims."""
        header = jwt.get_unverified_header(token)
        check(header.get("alg") == ALG, f"{name}: header alg {ALG}", str(header))
        check(header.get("typ") == "at+jwt", f"{name}: header typ at+jwt (RFC 9068)", str(header))
        try:
            key = self.jwks[header["kid"]]
        except KeyError:
            require(False, f"{name}: its kid is in the JWKS", str(header))
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[ALG],
                audience=audience,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as e:
            require(False, f"{name}: PyJWT verifies signature, aud {audience}, iss, exp", repr(e))
        check(True, f"{name}: PyJWT verifies signature, aud {audience}, iss, exp")
        # The same checks must refuse a changed signature and another audience
        # (so the PASS above means something).
        head, payload, sig = token.split(".")
        raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
        raw[len(raw) // 2] ^= 0x01
        forged = ".".join([head, payload, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()])
        try:
            jwt.decode(forged, key=key, algorithms=[ALG], audience=audience, issuer=ISSUER)
            check(False, f"{name}: PyJWT refuses it with one signature bit flipped", "accepted")
        except jwt.InvalidSignatureError:
            check(True, f"{name}: PyJWT refuses it with one signature bit flipped")
        try:
            jwt.decode(token, key=key, algorithms=[ALG], audience="someone-else", issuer=ISSUER)
            check(False, f"{name}: PyJWT refuses it for another audience", "accepted")
        except jwt.InvalidAudienceError:
            check(True, f"{name}: PyJWT refuses it for another audience")
        return claims


def introspect(token):
    """The introspection response; any status but 200 shows in it (and so
    fails the check made on it)."""
    r = post("/oauth/introspect", "resource-server", {"token": token})
    b = body(r)
    return b if r.status_code == 200 else {"_http_status": r.status_code, **b}


def run():
    # (a) The subject token: portal's client_credentials token, addressed to
    # the gateway.
    r = post("/oauth/token", "portal", {"grant_type": "client_credentials",
                                        "scope": "orders:read orders:write billing:read"})
    t0 = token_ok(r, "client_credentials (portal)")["access_token"]
    c0 = unverified_claims(t0)

    v = Verifier()
    v0 = v.verify(t0, "gateway", "subject token")
    check(v0.get("sub") == "portal" and v0.get("client_id") == "portal", "subject token: sub and client_id portal",
          json.dumps(v0))

    # (b) Exchange by the gateway for orders-api, narrower scope.
    r = exchange("gateway", t0, "orders-api", "orders:read billing:read")
    r1 = token_ok(r, "exchange gateway -> orders-api")
    check(r1.get("issued_token_type") == AT, "exchange: issued_token_type access_token",
          str(r1.get("issued_token_type")))
    check(r1.get("scope") == "orders:read billing:read", "exchange: scope narrowed as asked", str(r1.get("scope")))
    check("refresh_token" not in r1, "exchange: no refresh_token", str(r1))
    t1 = r1["access_token"]

    # (c) PyJWT against the JWKS.
    c1 = v.verify(t1, "orders-api", "exchanged token")
    check(c1 == unverified_claims(t1), "exchanged token: verified claims are the payload")
    check(c1.get("sub") == c0["sub"], "exchanged token: sub is the subject token's sub",
          f"{c1.get('sub')} vs {c0['sub']}")
    check(c1.get("act") == {"sub": "gateway"}, "exchanged token: act.sub names the gateway", str(c1.get("act")))
    check(c1.get("client_id") == "gateway", "exchanged token: client_id is the exchanging client",
          str(c1.get("client_id")))
    check(c1.get("scope") == "orders:read billing:read", "exchanged token: scope claim", str(c1.get("scope")))
    check(c1["exp"] <= c0["exp"], "exchanged token: expires no later than the subject token",
          f"{c1['exp']} > {c0['exp']}")
    check(c1.get("organisation_id") == 74, "exchanged token: organisation_id carried over by policy",
          str(c1.get("organisation_id")))
    check("roles" not in c1, "exchanged token: claims not listed are not carried over", str(c1.get("roles")))
    check(c1.get("jti") and c1.get("jti") != c0.get("jti"), "exchanged token: a jti of its own")

    # (d) Second hop: orders -> billing-api; the act chain nests.
    r = exchange("orders", t1, "billing-api", "billing:read")
    r2 = token_ok(r, "exchange orders -> billing-api")
    check(r2.get("issued_token_type") == AT, "second hop: issued_token_type access_token",
          str(r2.get("issued_token_type")))
    t2 = r2["access_token"]
    c2 = v.verify(t2, "billing-api", "second-hop token")
    check(c2.get("sub") == c0["sub"], "second hop: sub is still the subject's", str(c2.get("sub")))
    check(c2.get("act") == {"sub": "orders", "act": {"sub": "gateway"}},
          "second hop: act nests (current actor outermost, RFC 8693 4.1)", str(c2.get("act")))
    check(c2.get("scope") == "billing:read", "second hop: scope billing:read", str(c2.get("scope")))
    check("organisation_id" not in c2, "second hop: orders carries no claims over", str(c2))

    # (e) Refusals.
    oauth_error(exchange("orders", t1, "billing-api", "billing:read orders:write"), 400, "invalid_scope",
                "wider scope than the subject token")
    oauth_error(exchange("gateway", t0, "billing-api"), 400, "invalid_target",
                "an audience the gateway may not ask for")
    oauth_error(exchange("orders", t0, "billing-api"), 400, "invalid_grant",
                "a subject token not addressed to the client")
    r = requests.post(BASE + "/oauth/token", timeout=TIMEOUT,
                      data={"grant_type": TE, "subject_token": t0, "subject_token_type": AT,
                            "audience": "orders-api"},
                      auth=("gateway", "wrong-" + secret("gateway")))
    oauth_error(r, 401, "invalid_client", "a wrong client secret")

    # (f) Introspection (RFC 7662) by a resource server, then revocation of
    # the first token (RFC 7009) ends the chain.
    for tok, name, act in ((t1, "exchanged token", {"sub": "gateway"}),
                           (t2, "second-hop token", {"sub": "orders", "act": {"sub": "gateway"}})):
        i = introspect(tok)
        check(i.get("active") is True, f"introspection of the {name}: active", str(i))
        check(i.get("act") == act, f"introspection of the {name}: act", str(i.get("act")))
        check(i.get("sub") == c0["sub"], f"introspection of the {name}: sub", str(i.get("sub")))
    check(introspect(t0).get("active") is True, "introspection of the subject token: active")
    r = post("/oauth/revoke", "portal", {"token": t0, "token_type_hint": "access_token"})
    check(r.status_code == 200, "revocation of the subject token: HTTP 200", f"{r.status_code} {r.text[:200]}")
    for tok, name in ((t0, "subject token"), (t1, "exchanged token"), (t2, "second-hop token")):
        i = introspect(tok)
        check(i == {"active": False}, f"after revoking the subject token, the {name} is inactive", str(i))
    oauth_error(exchange("orders", t1, "billing-api"), 400, "invalid_grant",
                "no exchange of a token whose ancestor was revoked")


def main():
    try:
        run()
    except Stop as e:
        print(f"FAIL  [{ALG}] stopped: the steps after '{e}' depend on it")
    except (requests.RequestException, KeyError, ValueError) as e:
        check(False, "unexpected error", repr(e))
    return CHECKS.summary()


if __name__ == "__main__":
    sys.exit(main())
