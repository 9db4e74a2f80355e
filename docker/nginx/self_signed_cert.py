"""Write a self-signed certificate for the proxy unless one is there (compose's `certs` step).

    python docker/nginx/self_signed_cert.py /var/lib/fleet/tls

osquery speaks only HTTPS, so the stack serves HTTPS from its first start, as `make run` does.
The pair is kept: agents pin the certificate (`--tls_server_certs`), so a new one on every start
would cut them off. Its names are the public ones in DJANGO_ALLOWED_HOSTS plus `proxy` (the
name the simulated hosts and task agents of the compose profiles use) and `localhost`. Put your
own cert.pem (full chain) and key.pem in the directory instead and this leaves them alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fleet.selfsigned import ensure_certificate


def names_from_allowed_hosts(allowed_hosts: str) -> list[str]:
    """Exact host names from DJANGO_ALLOWED_HOSTS (patterns such as `.example.com` or `*` skipped)."""
    names = []
    for entry in allowed_hosts.split(","):
        host = entry.strip()
        if host and not host.startswith(".") and "*" not in host and host not in names:
            names.append(host.strip("[]"))
    return names


def main(directory: str) -> None:
    names = names_from_allowed_hosts(os.environ.get("DJANGO_ALLOWED_HOSTS", ""))
    names += [name for name in ("proxy", "localhost") if name not in names]
    folder = Path(directory)
    if ensure_certificate(folder / "cert.pem", folder / "key.pem", names):
        sys.stdout.write(f"wrote a self-signed certificate for {', '.join(names)} to {folder}\n")
    else:
        sys.stdout.write(f"keeping the certificate in {folder}\n")


if __name__ == "__main__":
    main(sys.argv[1])
