"""TLS for every client of the server: which certificates to trust, and what a failure means.

Theory of operation
-------------------
One :class:`TlsSettings` says what a client trusts: the system's CAs (the default), a site CA
file (``--ca-file``/``TORC_CA_FILE``, or Torc's ``--tls-ca-cert``/``TORC_TLS_CA_CERT``), or —
for testing only — nothing (``--tls-insecure``/``TORC_TLS_INSECURE``, Torc's). Certificates
are always verified and the host name checked unless told otherwise. The h11 client
(:mod:`torc_net.http`), the websocket feed (:mod:`torc_net.client`) and the function-job client
(:mod:`torc_trio.jobapi`) all take their context from here, so they cannot disagree on what is
trusted. Contexts are made once per setting (loading a CA bundle costs milliseconds; a runner
opens connections for days).

Settings travel to child processes as environment variables (:meth:`TlsSettings.env`): the
runners ``submit`` starts on compute nodes and the jobs they run inherit them, with the CA file
as an absolute path (they may start in another directory).

A failure to verify is not a network hiccup: retrying for twenty minutes would only hide it.
:func:`describe_ssl_error` turns OpenSSL's error into one line naming the host and the reason,
and :class:`TlsError` carries it to the user, never as a traceback.

Standard library only: :mod:`torc_trio.jobapi` (a function job's client) imports this and must
start fast.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

#: Where a site CA file is named, ours first, then Torc's.
CA_FILE_ENV = ("TORC_CA_FILE", "TORC_TLS_CA_CERT")
INSECURE_ENV = "TORC_TLS_INSECURE"
_TRUE = ("1", "true", "yes", "on")


class TlsError(Exception):
    """TLS cannot work as configured: an unreadable CA file, or a server whose certificate
    cannot be verified. The message is one line for the user."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What a client trusts. ``ca_file`` None: the system's CAs."""

    ca_file: str | None = None
    insecure: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, ca_file: str | None = None,
                 insecure: bool = False) -> TlsSettings:
        """The given values (command-line flags), else the environment's."""
        env = os.environ if env is None else env
        if ca_file is None:
            ca_file = next((env[name] for name in CA_FILE_ENV if env.get(name)), None)
        insecure = insecure or env.get(INSECURE_ENV, "").strip().lower() in _TRUE
        return cls(os.path.abspath(ca_file) if ca_file else None, insecure)

    def context(self) -> ssl.SSLContext:
        """The client context for these settings (made once). Raises :class:`TlsError` for a
        CA file that cannot be read or holds no certificate."""
        return _client_context(self.ca_file, self.insecure)

    def env(self) -> dict[str, str]:
        """These settings as the environment variables a child process reads."""
        out: dict[str, str] = {}
        if self.ca_file:
            out[CA_FILE_ENV[0]] = self.ca_file
        if self.insecure:
            out[INSECURE_ENV] = "1"
        return out


@functools.lru_cache(maxsize=8)
def _client_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError:
        raise TlsError(f"CA file {ca_file}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise TlsError(f"CA file {ca_file}: not a PEM certificate file ({reason})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # h11 speaks nothing else
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def default_settings() -> TlsSettings:
    """The environment's settings (what a client given no flags uses)."""
    return TlsSettings.from_env()


def _root_ssl_error(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


#: OpenSSL's reasons when the other side is no TLS server at all.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
            "UNKNOWN_PROTOCOL", "HTTP_REQUEST")


def describe_ssl_error(exc: BaseException, where: str, settings: TlsSettings) -> str | None:
    """One line for a TLS handshake that failed talking to ``where`` (``host:port``), or None
    when ``exc`` holds no TLS error (the connection merely broke)."""
    err = _root_ssl_error(exc)
    if err is None:
        return None
    if isinstance(err, ssl.SSLCertVerificationError):
        reason = err.verify_message or err.reason or str(err)
        if err.verify_code in (2, 19, 20, 21):  # issuer unknown, self-signed in chain...
            trusted = (f"the CA in {settings.ca_file}" if settings.ca_file
                       else "the system's CAs")
            hint = (f" (it is not signed by {trusted}; name the CA that signed it with "
                    "--ca-file or TORC_CA_FILE)")
        elif "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
            hint = " (use the name or address its certificate was issued for)"
        else:
            hint = ""
        return f"TLS: cannot verify the server at {where}: {reason}{hint}"
    reason = err.reason or str(err)
    if reason in _NOT_TLS:
        return (f"TLS: the server at {where} does not speak TLS ({reason.lower()}): it may "
                "serve plain HTTP; use an http:// URL")
    return f"TLS: handshake with the server at {where} failed: {reason}"
