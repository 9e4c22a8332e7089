"""Start and stop a local Mosquitto broker with envcal's configuration.

Used by the test fixtures and by ``envcal demo``: a real ``mosquitto`` binary from PATH
(or ``/usr/sbin``), on a loopback port, with persistence in its own folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CONF_TEMPLATE = Path(__file__).with_name("mosquitto.conf")


class BrokerError(RuntimeError):
    """Mosquitto is missing or did not start."""


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` binary, or None."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Mosquitto:
    """A Mosquitto process with envcal's config on ``host:port``, data in ``data_dir``.

    Parameters
    ----------
    data_dir : Path
        Folder for the generated config, the persistence file and the log.
    port : int, optional
        Port to listen on; a free one when omitted (kept across restarts).
    host : str, default "127.0.0.1"
    extra_conf : str, optional
        Lines appended to the config (e.g. ``password_file``, ``acl_file``, TLS).
    """

    def __init__(self, data_dir: str | Path, port: int | None = None, host: str = "127.0.0.1",
                 extra_conf: str = "") -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    def write_conf(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = CONF_TEMPLATE.read_text().format(port=self.port, host=self.host,
                                                data_dir=self.data_dir.resolve())
        if os.geteuid() == 0 and "\nuser " not in f"\n{self.extra_conf}":
            # as root, mosquitto drops to the 'mosquitto' user and then cannot write its
            # persistence file in our folder: sessions would not survive a restart
            text += "user root\n"
        if self.extra_conf:
            text += "\n" + self.extra_conf.strip() + "\n"
        self.conf_path.write_text(text)
        return self.conf_path

    def start(self, timeout: float = 10.0) -> Mosquitto:
        exe = find_mosquitto()
        if exe is None:
            raise BrokerError("mosquitto not found on PATH; install it: "
                              "sudo apt-get update && sudo apt-get install -y mosquitto")
        self.write_conf()
        self.proc = subprocess.Popen([exe, "-c", str(self.conf_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = (self.data_dir / "mosquitto.log")
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}: {err} {tail}")
            if port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s")

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        deadline = time.monotonic() + timeout
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` / ``mqtts://host:port`` -> (host, port, tls)."""
    from urllib.parse import urlparse

    u = urlparse(url if "://" in url else f"mqtt://{url}")
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"unsupported broker URL scheme {u.scheme!r} in {url!r}")
    tls = u.scheme in ("mqtts", "ssl")
    return u.hostname or "127.0.0.1", u.port or (8883 if tls else 1883), tls


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (and is not a zombie we reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
