"""TLS contexts for the APNs client and the stand-in, built from PEM bytes held in memory.

The push key lives in the database, not on disk, but `ssl.SSLContext.load_cert_chain` only reads
files. So the PEMs go to a private temporary file (0600, in RAM-backed /dev/shm when there is one)
for the duration of that one call, and the file is removed in a `finally`.
"""

from __future__ import annotations

import os
import ssl
import tempfile

from .certificate import PushCertificateError

__all__ = ["client_context", "load_cert_chain_from_memory", "server_context"]


def _private_tmp_dir() -> str | None:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def load_cert_chain_from_memory(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """`context.load_cert_chain` for in-memory PEMs; the key never outlives this call on disk."""
    path: str | None = None
    try:
        with tempfile.NamedTemporaryFile("wb", suffix=".pem", dir=_private_tmp_dir(), delete=False) as tmp:
            path = tmp.name
            os.fchmod(tmp.fileno(), 0o600)  # mkstemp's default already; stated because it matters
            tmp.write(cert_pem.rstrip() + b"\n" + key_pem.rstrip() + b"\n")
        try:
            context.load_cert_chain(certfile=path)
        except ssl.SSLError as exc:
            raise PushCertificateError(
                "The push certificate and private key could not be loaded together "
                f"({exc.reason or exc.__class__.__name__}); check that both are PEM and belong together."
            ) from None
    finally:
        if path is not None:
            os.unlink(path)


def client_context(cert_pem: bytes, key_pem: bytes, ca_file: str | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ client context presenting the push certificate; `ca_file` replaces system trust."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_cert_chain_from_memory(context, cert_pem, key_pem)
    context.set_alpn_protocols(["h2"])  # httpx sets its own list again; APNs speaks only HTTP/2
    return context


def server_context(cert_pem: bytes, key_pem: bytes, client_ca_pem: bytes) -> ssl.SSLContext:
    """The stand-in's context: HTTP/2 only, and a client certificate from `client_ca_pem` required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_cert_chain_from_memory(context, cert_pem, key_pem)
    context.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    return context
