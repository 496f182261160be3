"""TLS for the REST client: which CAs to trust, and a check that the server's certificate
verifies before a run sends anything.

Verification is never switched off: an endpoint signed by a private CA (a proxy, a test server)
is trusted by naming that CA's certificate, never by skipping the check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

from yarl import URL

from batchedit.im.errors import ConfigError


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """An SSL context that verifies servers and their host names.

    ``ca_file`` is a PEM file of the CA certificates to trust instead of the system's (as curl's
    ``--cacert``); ``None`` trusts the system's. A file that cannot be read or holds no
    certificate raises :class:`ConfigError`.
    """
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError:
        raise ConfigError(f"--ca-file {ca_file} holds no PEM certificate") from None
    except OSError as exc:
        raise ConfigError(f"cannot read --ca-file {ca_file}: {exc.strerror}") from None


async def check_certificate(endpoint: str, context: ssl.SSLContext, seconds: float) -> None:
    """Refuse an ``https`` endpoint whose certificate does not verify with ``context``.

    One TLS handshake, no request: a certificate that does not verify, or a server that does not
    speak TLS, raises :class:`ConfigError` with what to do. Anything else (a refused connection,
    no handshake within ``seconds``) is left to the run's own requests, which retry it. An
    ``http`` endpoint is not checked.
    """
    url = URL(endpoint)
    if url.scheme != "https" or not url.host:
        return
    where = f"{url.host}:{url.port}"
    try:
        async with asyncio.timeout(seconds):
            _, writer = await asyncio.open_connection(url.host, url.port, ssl=context)
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(
            f"{where}: certificate verify failed ({exc.verify_message}): pass --ca-file (or set "
            "TIM_CA_FILE) with the certificate of the CA that signed the server's, and check the "
            "host name in the endpoint"
        ) from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{where}: TLS handshake failed ({exc.reason or exc}): does this endpoint speak "
            "https? If it serves plain HTTP, give its URL with http://"
        ) from None
    except (OSError, TimeoutError):
        return
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(seconds):
            await writer.wait_closed()
