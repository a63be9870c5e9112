"""Kafka connection security (SPEC §3, issue 17), in one place for every Kafka client.

The ``SNOOPWATCH_SECURITY_PROTOCOL``, ``SASL_*`` and ``SSL_*`` settings become faust's
``broker_credentials`` (the worker) and aiokafka's client keyword arguments (every other
producer, consumer and admin client). They are checked when read: a missing or unreadable
file or a combination that cannot work is one ``ValueError`` line naming the setting. The
password is read from a file, never from the environment, and never shown: not in a repr,
not in a log line, not in an error.

aiokafka retries a refused connection for as long as it is allowed to, so every command
first makes one connection with the same credentials (:func:`check_connection`), bounded in
time, and turns a refusal (wrong password, untrusted certificate, a plaintext client at a
TLS port) into one line that says which setting to look at.

>>> s = Security.from_settings(_settings())
>>> s.protocol, s.client_kwargs()
('PLAINTEXT', {'security_protocol': 'PLAINTEXT'})
>>> s.broker_credentials() is None
True
>>> Security.from_settings(_settings(security_protocol="TLS"))
Traceback (most recent call last):
ValueError: SNOOPWATCH_SECURITY_PROTOCOL='TLS': must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
>>> Security.from_settings(_settings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN"))
Traceback (most recent call last):
ValueError: SNOOPWATCH_SASL_USERNAME: required with SNOOPWATCH_SECURITY_PROTOCOL=SASL_SSL
>>> Security.from_settings(_settings(ssl_cafile="/ca.pem"))
Traceback (most recent call last):
ValueError: SNOOPWATCH_SSL_CAFILE is set but SNOOPWATCH_SECURITY_PROTOCOL=PLAINTEXT uses no TLS
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from detectors.settings import PREFIX, Settings, bootstrap_servers

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# A refusal is reported well within the 30 s an operator (and the suite) waits for one.
CONNECT_TIMEOUT_S = 15.0


class KafkaRefused(ValueError):
    """The broker refused (or never answered) a connection: one line, no secret in it."""


def _settings(**changes: Any) -> Settings:
    return Settings(**changes)


def _env(name: str) -> str:
    return PREFIX + name.upper()


def _read(name: str, path: str) -> bytes:
    """A file named by setting ``name``; a missing or unreadable one is one line naming it."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise ValueError(f"{_env(name)}={path}: cannot read ({err.strerror})") from None


@dataclass(frozen=True)
class Security:
    """What a Kafka client needs to connect; built by :meth:`from_settings`."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    # Kept out of repr: a Security object may end up in a log line or a traceback.
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, s: Settings) -> Security:
        """Check the settings' combination, read their files and build the SSL context."""
        proto = s.security_protocol.strip().upper()
        if proto not in PROTOCOLS:
            raise ValueError(f"{_env('security_protocol')}={s.security_protocol!r}: must be "
                             "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
        sasl, tls = proto.startswith("SASL_"), proto in ("SSL", "SASL_SSL")
        given = {"sasl_mechanism": s.sasl_mechanism, "sasl_username": s.sasl_username,
                 "sasl_password_file": s.sasl_password_file}
        for name, value in given.items():
            if value and not sasl:
                raise ValueError(f"{_env(name)} is set but {_env('security_protocol')}={proto} "
                                 "uses no SASL")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(s, name) and not tls:
                raise ValueError(f"{_env(name)} is set but {_env('security_protocol')}={proto} "
                                 "uses no TLS")
        mechanism = username = password = None
        if sasl:
            for name, value in given.items():
                if not value:
                    raise ValueError(f"{_env(name)}: required with "
                                     f"{_env('security_protocol')}={proto}")
            mechanism = s.sasl_mechanism.strip().upper()
            if mechanism not in MECHANISMS:
                raise ValueError(f"{_env('sasl_mechanism')}={s.sasl_mechanism!r}: must be "
                                 "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
            username = s.sasl_username
            raw = _read("sasl_password_file", s.sasl_password_file)
            try:
                # The first line: a trailing newline (echo, kubectl create secret) is no part of it.
                password = raw.decode("utf-8").splitlines()[0] if raw.strip() else ""
            except UnicodeDecodeError:
                raise ValueError(f"{_env('sasl_password_file')}={s.sasl_password_file}: "
                                 "not UTF-8 text") from None
            if not password:
                raise ValueError(f"{_env('sasl_password_file')}={s.sasl_password_file}: empty")
        context = _ssl_context(s) if tls else None
        return cls(proto, mechanism, username, password, context)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``/``Consumer``/``AdminClient``."""
        kw: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            kw["ssl_context"] = self.ssl_context
        if self.mechanism is not None:
            kw.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                      sasl_plain_password=self.password)
        return kw

    def broker_credentials(self) -> Any:
        """faust's ``broker_credentials`` for these settings (None: plaintext)."""
        import faust

        if self.mechanism is not None:
            # With an SSL context faust speaks SASL_SSL, without one SASL_PLAINTEXT.
            return faust.SASLCredentials(username=self.username, password=self.password,
                                         ssl_context=self.ssl_context,
                                         mechanism=self.mechanism)
        if self.ssl_context is not None:
            return faust.SSLCredentials(self.ssl_context)
        return None


def _ssl_context(s: Settings) -> ssl.SSLContext:
    """Verifying TLS client context: the CA file (else the system's CAs), host names
    checked, and the client certificate for mutual TLS when one is given."""
    if s.ssl_keyfile and not s.ssl_certfile:
        raise ValueError(f"{_env('ssl_keyfile')} is set without {_env('ssl_certfile')}")
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(s, name):
            _read(name, getattr(s, name))  # missing/unreadable: the one-line error
    try:
        context = ssl.create_default_context(cafile=s.ssl_cafile or None)
    except ssl.SSLError as err:
        raise ValueError(f"{_env('ssl_cafile')}={s.ssl_cafile}: not a PEM CA certificate "
                         f"({err.reason or err})") from None
    if s.ssl_certfile:
        try:
            context.load_cert_chain(s.ssl_certfile, s.ssl_keyfile or None)
        except ssl.SSLError as err:
            raise ValueError(f"{_env('ssl_certfile')}={s.ssl_certfile}"
                             + (f" / {_env('ssl_keyfile')}={s.ssl_keyfile}" if s.ssl_keyfile
                                else "") + f": not a certificate and its key ({err.reason or err})"
                             ) from None
    return context


_CACHE: dict[tuple[str, ...], Security] = {}


def security(settings: Settings) -> Security:
    """:meth:`Security.from_settings`, once per distinct configuration in a process."""
    key = (settings.security_protocol, settings.sasl_mechanism, settings.sasl_username,
           settings.sasl_password_file, settings.ssl_cafile, settings.ssl_certfile,
           settings.ssl_keyfile)
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = Security.from_settings(settings)
    return found


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments (bootstrap servers plus security) for these settings."""
    return {"bootstrap_servers": bootstrap_servers(settings.broker),
            **security(settings).client_kwargs()}


def kafka_kw(servers: str) -> dict[str, Any]:
    """aiokafka keyword arguments for ``servers`` (``host:port,...``) with the security of
    the ``SNOOPWATCH_*`` environment: for tools (benchmarks) that pass addresses around."""
    return {"bootstrap_servers": servers, **security(Settings.from_env()).client_kwargs()}


def broker_credentials(settings: Settings) -> Any:
    return security(settings).broker_credentials()


def describe(settings: Settings) -> str:
    """How snoopwatch connects, for a log line (no secret in it).

    >>> describe(_settings())
    'PLAINTEXT'
    >>> describe(_settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
    ...                    sasl_username="sw", sasl_password_file="/run/secrets/pw"))
    'SASL_SSL, SCRAM-SHA-512 as sw (password from /run/secrets/pw)'
    """
    out = settings.security_protocol.upper()
    if settings.sasl_mechanism:
        out += (f", {settings.sasl_mechanism.upper()} as {settings.sasl_username} "
                f"(password from {settings.sasl_password_file})")
    if settings.ssl_certfile:
        out += f", client certificate {settings.ssl_certfile}"
    return out


async def check_connection(settings: Settings, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Connect to a bootstrap server with the settings' security and ask for metadata.

    Raises :class:`KafkaRefused` (one line) if no bootstrap server accepts us within
    ``timeout_s``: the reason of the first one's refusal.
    """
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    sec = security(settings)
    kwargs = sec.client_kwargs()
    first: KafkaRefused | None = None
    deadline = asyncio.get_running_loop().time() + timeout_s
    for hostport in bootstrap_servers(settings.broker).split(","):
        host, _, port = hostport.rpartition(":")
        left = max(1.0, deadline - asyncio.get_running_loop().time())
        conn = None
        try:
            conn = await asyncio.wait_for(create_conn(
                host, int(port), request_timeout_ms=int(left * 1000), **kwargs), left)
            left = max(1.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait_for(conn.send(MetadataRequest([])), left)
            return
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt | SystemExit | asyncio.CancelledError):
                raise
            first = first or KafkaRefused(refusal(err, hostport, settings, timeout_s))
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
    assert first is not None
    raise first


def refusal(err: BaseException, hostport: str, settings: Settings, timeout_s: float) -> str:
    """One line for a failed connection: what happened and which setting to check."""
    from aiokafka import errors

    proto = settings.security_protocol.upper()
    where = f"Kafka at kafka://{hostport} ({describe(settings)})"
    cause = err
    # The root cause (an SSL error wrapped in a connection error), but not past a timeout:
    # asyncio.wait_for raises TimeoutError from the CancelledError of the task it stopped.
    while cause.__cause__ is not None and not isinstance(
            cause, ssl.SSLError | asyncio.TimeoutError | TimeoutError):
        cause = cause.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (f"{where}: the broker's certificate is not trusted ({cause.verify_message}); "
                f"check {_env('ssl_cafile')}")
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or str(cause)
        if "CERTIFICATE" in reason.upper() or "HANDSHAKE_FAILURE" in reason.upper():
            return (f"{where}: the broker refused the TLS handshake ({reason}); it may require "
                    f"a client certificate: check {_env('ssl_certfile')}/{_env('ssl_keyfile')}")
        return (f"{where}: TLS handshake failed ({reason}); is this a TLS listener? check "
                f"{_env('security_protocol')} and {_env('broker')}")
    if isinstance(cause, errors.SaslAuthenticationFailed) or (
            isinstance(cause, errors.KafkaError) and "auth" in str(cause).lower()):
        return (f"{where}: login refused for user {settings.sasl_username!r}: wrong user name or "
                f"password ({_env('sasl_username')}, {_env('sasl_password_file')}) or mechanism "
                f"({_env('sasl_mechanism')})")
    if isinstance(cause, errors.UnsupportedSaslMechanismError):
        return (f"{where}: the broker does not offer this SASL mechanism; check "
                f"{_env('sasl_mechanism')}")
    if isinstance(cause, socket.gaierror):
        return f"{where}: cannot resolve the host name ({cause.strerror}); check {_env('broker')}"
    if isinstance(cause, ConnectionRefusedError):
        return f"{where}: connection refused (nothing listens there?); check {_env('broker')}"
    if isinstance(cause, asyncio.TimeoutError | TimeoutError | errors.KafkaTimeoutError
                  | errors.RequestTimedOutError):
        return (f"{where}: no answer within {timeout_s:.0f} s; check {_env('broker')} (a "
                f"firewall?) and {_env('security_protocol')}")
    if isinstance(cause, asyncio.IncompleteReadError) and proto in ("PLAINTEXT", "SASL_PLAINTEXT"):
        # A TLS listener answers a plaintext request with a TLS alert, read as a huge length.
        return (f"{where}: the answer is not plaintext Kafka: a TLS or SASL listener? check "
                f"{_env('security_protocol')}")
    if isinstance(cause, errors.KafkaConnectionError | ConnectionError | OSError
                  | asyncio.IncompleteReadError):
        hint = (f"is it a TLS or SASL listener? check {_env('security_protocol')}"
                if proto == "PLAINTEXT" else f"check {_env('security_protocol')} and "
                f"{_env('broker')}")
        text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        return f"{where}: connection closed ({text}); {hint}"
    text = str(cause).splitlines()[0] if str(cause) else ""
    return f"{where}: {type(cause).__name__}{': ' + text if text else ''}"
