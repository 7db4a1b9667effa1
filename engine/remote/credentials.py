"""Credentials the way the grid passes them: an X.509 proxy and WLCG bearer tokens.

Bearer tokens are found in the order of the WLCG Bearer Token Discovery specification: the
``BEARER_TOKEN`` variable, the file named by ``BEARER_TOKEN_FILE``, ``$XDG_RUNTIME_DIR/bt_u<uid>``,
then ``/tmp/bt_u<uid>``.  The X.509 proxy is ``X509_USER_PROXY`` (else ``/tmp/x509up_u<uid>``),
trusted CAs are ``X509_CERT_DIR`` (else the system's, or ``/etc/grid-security/certificates``).

The HTTPS protocol uses these directly (an ``Authorization: Bearer`` header, the proxy as client
certificate, the CA folder to verify the server).  The XRootD client library reads the same
variables itself (its ztn and gsi security plugins), so ``root://`` needs nothing from here.
"""

from __future__ import annotations

import os
from pathlib import Path

GRID_CA_DIR = Path("/etc/grid-security/certificates")


def bearer_token() -> str | None:
    """The bearer token to present, or None (WLCG discovery order)."""
    token = os.environ.get("BEARER_TOKEN")
    if token and token.strip():
        return token.strip()
    candidates = []
    if os.environ.get("BEARER_TOKEN_FILE"):
        candidates.append(Path(os.environ["BEARER_TOKEN_FILE"]))
    else:
        uid = os.geteuid()
        if os.environ.get("XDG_RUNTIME_DIR"):
            candidates.append(Path(os.environ["XDG_RUNTIME_DIR"]) / f"bt_u{uid}")
        candidates.append(Path(f"/tmp/bt_u{uid}"))
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if text:
            return text
    return None


def x509_proxy() -> str | None:
    """The proxy file (certificate and key) to present, or None."""
    named = os.environ.get("X509_USER_PROXY")
    if named:
        return named
    default = Path(f"/tmp/x509up_u{os.geteuid()}")
    return str(default) if default.is_file() else None


def ca_location() -> str | bool:
    """What to verify servers against: ``X509_CERT_DIR``, the grid CA folder if present, else
    True (the system's trust store, or ``REQUESTS_CA_BUNDLE``)."""
    named = os.environ.get("X509_CERT_DIR")
    if named:
        return named
    if GRID_CA_DIR.is_dir() and not os.environ.get("REQUESTS_CA_BUNDLE"):
        return str(GRID_CA_DIR)
    return True
