"""HTTPS for the emulator: a certificate it makes for loopback at start, or one given by file."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from batchedit.im.errors import ConfigError

LOOPBACK: Final = ("127.0.0.1", "::1", "localhost")
"""The names a made certificate is always valid for."""

_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names to leave out, not to bind


@dataclass(frozen=True, slots=True)
class ServerTls:
    """What the server needs for HTTPS, and the CA a client must trust when one was made."""

    context: ssl.SSLContext
    ca_pem: bytes | None = None
    """The made CA's certificate (PEM) for the client's ``--ca-file``; ``None`` for given files."""


def make_certificate(host: str) -> ServerTls:
    """A new CA, and a certificate it signs for :data:`LOOPBACK` and ``host`` (unless a wildcard).

    Needs the ``trustme`` package (``pip install 'batchedit[tls]'``); without it, raises
    :class:`ConfigError` saying so. The CA lives as long as the process: each start makes anew.
    """
    try:
        import trustme  # noqa: PLC0415 - an optional extra, needed only to make a certificate
    except ImportError:
        raise ConfigError(
            "--tls makes its certificate with the trustme package, which is not installed: "
            "pip install 'batchedit[tls]', or serve your own with --tls-cert"
        ) from None
    names = [*LOOPBACK, *([host] if host not in _WILDCARDS and host not in LOOPBACK else [])]
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return ServerTls(context, ca.cert_pem.bytes())


def load_certificate(cert: Path, key: Path | None) -> ServerTls:
    """Serve the PEM certificate chain in ``cert`` with the unencrypted PEM key in ``key`` (or
    in ``cert`` itself when ``key`` is ``None``); anything unreadable raises :class:`ConfigError`.
    """
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            if path is not None:
                path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {flag} {path}: {exc.strerror}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # A password of b"" refuses an encrypted key instead of prompting on the terminal.
        context.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError:
        given = f"--tls-cert {cert}" + (f" with --tls-key {key}" if key else "")
        raise ConfigError(
            f"{given}: not a PEM certificate chain and its unencrypted private key"
        ) from None
    return ServerTls(context)
