"""Mosquitto access control from the station registry: ACL, password file, TLS listener.

What the generated files enforce (DESIGN.md section 4, topics):

- each station has one account (user name = station id) that may **publish only** on
  ``envcal/{station}/+/{kind}`` for the topic kinds ingest subscribes to
  (:data:`envcal.ingest.TOPIC_KINDS`: data, hj212, check, status; LWT included) and
  subscribe to nothing. ACL and subscriptions agree: every publish a station may make is
  received by ingest, so it is stored or dead-lettered, never acknowledged into nothing;
- envcal's own account (default ``envcal``) and each extra worker account (``workers``)
  subscribe to ``envcal/#`` (shared subscriptions included) and are the only ones that may
  publish ``envcal/alerts/#`` and ``envcal/results/#``;
- each gateway account (``gateways``: the HJ 212 TCP gateway) may publish ``hj212`` and
  ``status`` for any station's analyzers (it forwards what DAUs send over TCP) and use
  ``envcal/gateway/#``;
- the client id is the account name (``use_username_as_clientid true``): no client can
  connect under another account's client id, so none can take over another's session
  (e.g. ingest's persistent session with its queued readings). One connection per account:
  every ingest worker of a group runs under its own worker account;
- messages larger than :data:`MESSAGE_SIZE_LIMIT` are refused by the broker
  (``message_size_limit``);
- anonymous clients are refused (``allow_anonymous false``).

Passwords are read from a secrets file (``user=password`` lines) or generated and written
there (mode 0600); the ``passwd`` file holds only Mosquitto's ``$7$`` PBKDF2-SHA512 hashes.
Nothing here logs or prints a password.

References
----------
Mosquitto 2.0 ``mosquitto.conf(5)`` (``acl_file``, ``password_file``, ``allow_anonymous``,
``use_username_as_clientid``, ``message_size_limit``, ``certfile``/``keyfile``/``cafile``)
and ``mosquitto_passwd(1)``; RFC 8018 §5.2 (PBKDF2);
OASIS MQTT 5.0 §3.4.2.1 (PUBACK reason code 0x87 Not authorized).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from envcal.registry import Registry

#: envcal's own MQTT account.
SERVICE_USER = "envcal"
#: Topic levels under ``envcal/`` that belong to envcal, never to a station.
RESERVED_LEVELS = ("alerts", "results")
#: The HJ 212 gateway's own topic level (``envcal/gateway/...``: status, control).
GATEWAY_LEVEL = "gateway"
#: Largest message the generated broker configuration accepts [bytes] (ingest's own
#: limit, :data:`envcal.ingest.MAX_PAYLOAD`, plus room for the MQTT header).
MESSAGE_SIZE_LIMIT = 65536 + 1024
#: PBKDF2 iterations Mosquitto 2.0 ``mosquitto_passwd`` uses for ``$7$`` hashes.
PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


class SecurityConfigError(ValueError):
    """The registry or secrets cannot be turned into a safe broker configuration."""


# --------------------------------------------------------------------------- passwords
def hash_password(password: str, *, salt: bytes | None = None,
                  iterations: int = PBKDF2_ITERATIONS) -> str:
    """A Mosquitto ``$7$`` password hash (PBKDF2-HMAC-SHA512).

    Parameters
    ----------
    password : str
        The clear-text password.
    salt : bytes, optional
        Salt (random 12 bytes when omitted, as ``mosquitto_passwd`` does).
    iterations : int, default 101
        PBKDF2 iteration count.

    Returns
    -------
    str
        ``$7$<iterations>$<base64 salt>$<base64 64-byte hash>``.

    References
    ----------
    RFC 8018 §5.2 (PBKDF2); Mosquitto 2.0 ``mosquitto_passwd(1)``.
    """
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    dk = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` (PBKDF2-SHA512) or ``$6$`` (SHA512) hash."""
    parts = hashed.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            it, salt, want = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
            got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, it, len(want))
            return hmac.compare_digest(got, want)
        if len(parts) == 4 and parts[1] == "6":
            salt, want = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            got = hashlib.sha512(password.encode("utf-8") + salt).digest()
            return hmac.compare_digest(got, want)
    except (ValueError, TypeError):
        return False
    return False


def read_secrets(path: str | Path) -> dict[str, str]:
    """``user=password`` lines (``#`` comments, blank lines allowed) -> dict.

    Raises
    ------
    SecurityConfigError
        On a malformed line (the message names the line number, never its content).
    """
    out: dict[str, str] = {}
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        user, sep, pw = s.partition("=")
        user, pw = user.strip(), pw.strip()
        if not sep or not user or not pw:
            raise SecurityConfigError(f"{path}: line {i}: want USER=PASSWORD")
        if user in out:
            raise SecurityConfigError(f"{path}: line {i}: duplicate user {user!r}")
        out[user] = pw
    return out


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (created 0600, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def accounts(registry: Registry, service_user: str = SERVICE_USER,
             workers: tuple[str, ...] = (), gateways: tuple[str, ...] = ()) -> list[str]:
    """MQTT user names for a registry: envcal's account, its worker accounts, gateway
    accounts, then one per station (sorted)."""
    service = [service_user, *workers, *gateways]
    if len(set(service)) != len(service):
        raise SecurityConfigError(f"worker and gateway accounts must differ from each other "
                                  f"and from {service_user!r}")
    names = [*service, *sorted(registry.stations)]
    for sid in registry.stations:
        if sid in (*RESERVED_LEVELS, GATEWAY_LEVEL):
            raise SecurityConfigError(f"station id {sid!r} collides with envcal's own topic "
                                      f"envcal/{sid}/#; rename the station")
        if sid in service:
            raise SecurityConfigError(f"station id {sid!r} is the name of a service account")
    return names


def ensure_credentials(registry: Registry, secrets_path: str | Path, *,
                       service_user: str = SERVICE_USER,
                       workers: tuple[str, ...] = (),
                       gateways: tuple[str, ...] = ()) -> tuple[dict[str, str], list[str]]:
    """Passwords for every account: read from ``secrets_path``, missing ones generated.

    Generated passwords are appended to the secrets file (rewritten with mode 0600), so
    they can be given to the station's DAU; they are never printed.

    Returns
    -------
    (dict of user to password, list of user names whose password was generated)
    """
    path = Path(secrets_path)
    creds = read_secrets(path) if path.exists() else {}
    generated = []
    for user in accounts(registry, service_user, workers, gateways):
        if user not in creds:
            creds[user] = secrets.token_urlsafe(24)
            generated.append(user)
    if generated or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(f"{u}={p}\n" for u, p in creds.items())
        _write_private(path, "# envcal MQTT credentials (USER=PASSWORD); keep secret\n" + body)
    return creds, generated


def passwd_text(credentials: Mapping[str, str]) -> str:
    """A Mosquitto ``password_file``: ``user:$7$...`` lines."""
    for u in credentials:
        if ":" in u or not u.strip():
            raise SecurityConfigError(f"invalid MQTT user name {u!r}")
    return "".join(f"{u}:{hash_password(p)}\n" for u, p in credentials.items())


# --------------------------------------------------------------------------- ACL
def acl_text(registry: Registry, *, service_user: str = SERVICE_USER,
             readers: tuple[str, ...] = (), workers: tuple[str, ...] = (),
             gateways: tuple[str, ...] = ()) -> str:
    """A Mosquitto ``acl_file`` derived from the registry.

    Parameters
    ----------
    registry : Registry
    service_user : str, default "envcal"
        envcal's account: reads ``envcal/#``, alone writes ``envcal/alerts/#`` and
        ``envcal/results/#``.
    readers : tuple of str
        Extra accounts (alert consumers) that may only subscribe to alerts and results.
    workers : tuple of str
        Extra service accounts with the rights of ``service_user`` (one per ingest worker
        of a group: the client id is the account name).
    gateways : tuple of str
        HJ 212 gateway accounts: publish ``envcal/+/+/hj212`` and ``.../status``, read and
        write ``envcal/gateway/#``.

    Returns
    -------
    str
    """
    from envcal.ingest import TOPIC_KINDS

    accounts(registry, service_user, workers, gateways)
    lines = ["# generated by `envcal mqtt acl` from the station registry; do not edit by hand",
             "# (no top-level topic lines: anonymous/unknown users get nothing)"]
    for svc in (service_user, *workers):
        lines += ["", f"user {svc}", "topic read envcal/#"]
        lines += [f"topic write envcal/{lvl}/#" for lvl in RESERVED_LEVELS]
    for g in gateways:
        lines += ["", f"user {g}", "topic write envcal/+/+/hj212", "topic write envcal/+/+/status",
                  f"topic readwrite envcal/{GATEWAY_LEVEL}/#"]
    for r in readers:
        lines += ["", f"user {r}"] + [f"topic read envcal/{lvl}/#" for lvl in RESERVED_LEVELS]
    for sid in sorted(registry.stations):
        analyzers = sorted(a.id for a in registry.analyzers.values() if a.station == sid)
        lines += ["", f"# station {sid}: analyzers {', '.join(analyzers) or '(none)'}",
                  f"user {sid}"]
        # exactly the topics ingest subscribes to (envcal.ingest.topics): nothing a station
        # may publish goes unread
        lines += [f"topic write envcal/{sid}/+/{kind}" for kind in TOPIC_KINDS]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TlsFiles:
    """Server certificate, its key and the CA that signed client-trusted certs (PEM paths)."""

    certfile: Path
    keyfile: Path
    cafile: Path | None = None


def conf_snippet(out_dir: str | Path, *, tls: TlsFiles | None = None, tls_port: int = 8883,
                 tls_host: str | None = None) -> str:
    """``mosquitto.conf`` lines: passwords, ACL, no anonymous access, client ids bound to
    accounts, a message size limit, optional TLS listener.

    Parameters
    ----------
    out_dir : str or Path
        Folder holding ``passwd`` and ``acl`` (written as absolute paths).
    tls : TlsFiles, optional
        Adds ``listener tls_port [tls_host]`` with ``certfile``, ``keyfile``, ``cafile``
        (TLS 1.2 at least).
    tls_port : int, default 8883
    tls_host : str, optional
        Bind address of the TLS listener (all interfaces when omitted).

    Returns
    -------
    str

    References
    ----------
    Mosquitto 2.0 ``mosquitto.conf(5)``.
    """
    out = Path(out_dir).resolve()
    lines = ["# envcal access control (generated by `envcal mqtt acl`)",
             "per_listener_settings false", "allow_anonymous false",
             f"password_file {out / 'passwd'}", f"acl_file {out / 'acl'}",
             "# the client id is the account name: no client can take over another's session",
             "use_username_as_clientid true",
             f"message_size_limit {MESSAGE_SIZE_LIMIT}"]
    if tls is not None:
        lines += ["", f"listener {tls_port}" + (f" {tls_host}" if tls_host else ""),
                  f"certfile {Path(tls.certfile).resolve()}", f"keyfile {Path(tls.keyfile).resolve()}"]
        if tls.cafile is not None:
            lines.append(f"cafile {Path(tls.cafile).resolve()}")
        lines.append("tls_version tlsv1.2")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SecurityFiles:
    """Paths written by :func:`write_broker_security` (no passwords in here)."""

    acl: Path
    passwd: Path
    conf: Path
    secrets: Path
    users: tuple[str, ...]
    generated: tuple[str, ...]


def write_broker_security(registry: Registry, out_dir: str | Path, *,
                          secrets_path: str | Path | None = None,
                          service_user: str = SERVICE_USER, readers: tuple[str, ...] = (),
                          tls: TlsFiles | None = None, tls_port: int = 8883,
                          tls_host: str | None = None,
                          workers: tuple[str, ...] = (),
                          gateways: tuple[str, ...] = ()) -> SecurityFiles:
    """Write ``acl``, ``passwd`` and ``mosquitto.conf`` for a registry into ``out_dir``.

    Parameters
    ----------
    registry : Registry
    out_dir : str or Path
    secrets_path : str or Path, optional
        ``USER=PASSWORD`` file; missing accounts get generated passwords appended.
        Default ``out_dir/secrets.env``.
    service_user, readers, workers, gateways, tls, tls_port, tls_host
        See :func:`acl_text` and :func:`conf_snippet`.

    Returns
    -------
    SecurityFiles
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sp = Path(secrets_path) if secrets_path is not None else out / "secrets.env"
    creds, generated = ensure_credentials(registry, sp, service_user=service_user, workers=workers,
                                          gateways=gateways)
    for r in readers:
        if r not in creds:
            raise SecurityConfigError(f"reader account {r!r} has no password in {sp}")
    wanted = {u: creds[u] for u in [*accounts(registry, service_user, workers, gateways), *readers]}
    acl = out / "acl"
    acl.write_text(acl_text(registry, service_user=service_user, readers=readers, workers=workers,
                            gateways=gateways), encoding="utf-8")
    passwd = out / "passwd"
    _write_private(passwd, passwd_text(wanted))
    conf = out / "mosquitto.conf"
    conf.write_text(conf_snippet(out, tls=tls, tls_port=tls_port, tls_host=tls_host), encoding="utf-8")
    return SecurityFiles(acl, passwd, conf, sp, tuple(wanted), tuple(generated))
