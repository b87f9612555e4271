"""A throwaway certificate authority (openssl) for the runtime step: stand-ins for the TLS Secrets an operator
supplies, and the certificates of the other ends (a caller under mTLS, a TLS redis-server).
"""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path

import grpc

from .proc import run
from .report import expect


class Pki:
    """A throwaway CA and the certificates the runtime check needs, made with openssl: stand-ins for the TLS
    Secrets an operator supplies (tls.existingSecret, tls.clientCA, redis.tls), and the other ends (a caller
    with a client certificate, a TLS redis-server). Every leaf is valid for localhost, 127.0.0.1 and ::1."""

    def __init__(self, d: Path) -> None:
        expect(shutil.which("openssl") is not None, "openssl is not installed (needed to stand in for TLS Secrets)")
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = d / "ca.crt", d / "ca.key"
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                      "-subj", "/CN=tokend chart-check CA", "-keyout", self.ca_key, "-out", self.ca,
                      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.server = self._leaf("tokend", "serverAuth")                    # tokend's HTTP and gRPC listeners
        self.client = self._leaf("ci-caller", "clientAuth")                 # a caller under mTLS
        self.redis = self._leaf("redis", "serverAuth")                      # the TLS redis-server
        self.redis_client = self._leaf("tokend-redis-client", "clientAuth")  # tokend towards Redis

    def _openssl(self, *args) -> None:
        r = run(["openssl", *args], timeout=30, cwd=self.dir)
        expect(r.returncode == 0, f"openssl {args[0]} failed: {r.stderr}")

    def _leaf(self, name: str, usage: str) -> tuple[Path, Path]:
        key, csr, crt, ext = (self.dir / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
        ext.write_text(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
                       "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n")
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-days", "2",
                      "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-extfile", ext, "-out", crt)
        return crt, key

    def ssl_context(self, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
        """A TLS client that verifies its peer against the CA and presents cert (a leaf from here), if given."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if cert:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        return ctx

    def context(self, client_cert: bool) -> ssl.SSLContext:
        """A caller that verifies tokend's certificate (and presents one under mTLS)."""
        return self.ssl_context(self.client if client_cert else None)

    def grpc_credentials(self, client_cert: bool) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.client[1].read_bytes() if client_cert else None,
            certificate_chain=self.client[0].read_bytes() if client_cert else None)
