"""A throwaway redis-server for the runtime step: on a free loopback port, optionally TLS-only (with
client-certificate auth), stoppable and restartable on the same port for the store-outage checks.
"""

from __future__ import annotations

import socket
from pathlib import Path

from .pki import Pki
from .proc import Child, free_port, poll
from .report import expect


class Redis:
    """A throwaway redis-server on a free loopback port; with tls (a Pki), on a TLS-only port
    (--tls-auth-clients yes when client_auth)."""

    def __init__(self, workdir: Path, password: str | None, port: int | None = None,
                 tls: Pki | None = None, client_auth: bool = False) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.password = password
        self.tls = tls
        self.client_auth = client_auth
        self.start()

    def start(self) -> None:
        """Starts redis-server and waits (up to 10 s) until it answers PING."""
        args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.workdir]
        if self.tls:
            args += ["--port", "0", "--tls-port", self.port,
                     "--tls-cert-file", self.tls.redis[0], "--tls-key-file", self.tls.redis[1],
                     "--tls-ca-cert-file", self.tls.ca, "--tls-auth-clients", "yes" if self.client_auth else "no"]
        else:
            args += ["--port", self.port]
        if self.password:
            args += ["--requirepass", self.password]
        self.child = Child(args, grace=5)

        def answers() -> tuple[bool, None]:
            if self.ping():
                return True, None
            expect(self.child.alive(), f"redis-server exited at start (code {self.child.proc.returncode}): {args}")
            return False, None
        try:
            poll(answers, 10, 0.05, lambda _: "redis-server did not answer PING within 10 s")
        except Exception:
            self.stop()
            raise

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                s = raw
                if self.tls:
                    cert = self.tls.redis_client if self.client_auth else None
                    s = self.tls.ssl_context(cert).wrap_socket(raw, server_hostname="127.0.0.1")
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        self.child.stop()
