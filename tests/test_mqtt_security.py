"""MQTT access control from the registry, enforced by a real Mosquitto (passwords, ACL, TLS)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import ssl
import stat
import subprocess
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from envcal.broker import Mosquitto, free_port
from envcal.db import init_db, make_engine
from envcal.ingest import IngestService
from envcal.mqtt_security import (
    SecurityConfigError,
    TlsFiles,
    acl_text,
    hash_password,
    read_secrets,
    verify_password,
    write_broker_security,
)
from envcal.registry import StationSpec, sync_registry

OWN = "envcal/ZJ-NB-PP02/NB-PP02-CEMS/data"  # station ZJ-NB-PP02's analyzer
OTHER = "envcal/ZJ-HZ-AQ01/HZ-AQ01-PM/data"  # another station's analyzer
NOT_AUTHORIZED = 0x87
ACCEPTED = (0, 0x10)  # success / no matching subscribers


# --------------------------------------------------------------------------- helpers
class Client:
    """A paho MQTT v5 client that records CONNACK, PUBACK and SUBACK reason codes."""

    def __init__(self, host: str, port: int, user: str | None = None, password: str | None = None,
                 ca: str | None = None) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5)
        if user is not None:
            self.c.username_pw_set(user, password)
        if ca is not None:
            self.c.tls_set(ca_certs=ca)
        self.connack = None
        self.pubacks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.received: list[tuple[str, bytes]] = []
        self._ev = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_publish = lambda c, u, mid, rc, props: self.pubacks.__setitem__(mid, rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.__setitem__(mid, [r.value for r in rcs])
        self.c.on_message = lambda c, u, m: self.received.append((m.topic, m.payload))
        self.c.connect_async(host, port)
        self.c.loop_start()
        self._ev.wait(10)

    def _on_connect(self, c, u, flags, rc, props) -> None:
        self.connack = rc.value
        self._ev.set()

    def publish(self, topic: str, payload: bytes = b"x") -> int:
        info = self.c.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 10
        while info.mid not in self.pubacks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.pubacks[info.mid]

    def subscribe(self, topic: str) -> list[int]:
        _, mid = self.c.subscribe(topic, qos=1)
        deadline = time.monotonic() + 10
        while mid not in self.subacks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.subacks[mid]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def secured(tmp_path, registry):
    """A Mosquitto with the registry's ACL and passwords; yields (broker, credentials)."""
    files = write_broker_security(registry, tmp_path / "sec")
    broker = Mosquitto(tmp_path / "broker", extra_conf=files.conf.read_text()).start()
    yield broker, read_secrets(files.secrets)
    broker.stop()


def _wait(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


# --------------------------------------------------------------------------- files
def test_hash_password_matches_mosquitto_passwd(tmp_path):
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        pytest.skip("mosquitto_passwd not installed (the broker test below still checks our hashes)")
    pw_file = tmp_path / "pw"
    subprocess.run([exe, "-b", "-c", str(pw_file), "alice", "correct horse"], check=True,
                   capture_output=True)
    theirs = pw_file.read_text().strip().split(":", 1)[1]
    assert theirs.startswith("$7$")
    assert verify_password("correct horse", theirs)
    assert not verify_password("wrong", theirs)
    import base64

    _, _, it, salt, _ = theirs.split("$")
    assert hash_password("correct horse", salt=base64.b64decode(salt), iterations=int(it)) == theirs


def test_acl_text_scopes_each_station(registry):
    blocks: dict[str, list[str]] = {}
    user = None
    for ln in acl_text(registry).splitlines():
        if ln.startswith("user "):
            user = ln[5:]
            blocks[user] = []
        elif ln.startswith("topic") or ln.startswith("pattern"):
            assert user is not None, f"rule outside a user block: {ln}"  # would apply to anyone
            blocks[user].append(ln)
    assert blocks["envcal"] == ["topic read envcal/#", "topic write envcal/alerts/#",
                                "topic write envcal/results/#"]
    for sid in registry.stations:
        assert blocks[sid] == [f"topic write envcal/{sid}/+/{k}" for k in ("data", "hj212", "check", "status")]
    assert len(blocks) == len(registry.stations) + 1


def test_acl_text_reserved_station_id_refused(registry):
    registry.stations["alerts"] = StationSpec(id="alerts", name="x", kind="ambient_air", lat=0, lon=0,
                                              operator="x")
    with pytest.raises(SecurityConfigError, match="alerts"):
        acl_text(registry)


def test_write_broker_security_keeps_secrets_private_and_stable(tmp_path, registry):
    first = write_broker_security(registry, tmp_path / "a")
    creds = read_secrets(first.secrets)
    assert set(creds) == {"envcal", *registry.stations}
    assert set(first.generated) == set(creds)
    for p in (first.secrets, first.passwd):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    hashes = dict(line.split(":", 1) for line in first.passwd.read_text().splitlines())
    assert all(verify_password(creds[u], h) for u, h in hashes.items())
    assert not any(pw in first.passwd.read_text() + first.acl.read_text() + first.conf.read_text()
                   for pw in creds.values())
    again = write_broker_security(registry, tmp_path / "a")  # rerun: same passwords, none generated
    assert again.generated == () and read_secrets(again.secrets) == creds


def test_cli_mqtt_acl_never_prints_passwords(tmp_path):
    from envcal.cli import app

    secrets = tmp_path / "given.env"
    secrets.write_text("envcal=given-service-pw\n")
    res = CliRunner().invoke(app, ["mqtt", "acl", "--stations", "stations", "--out", str(tmp_path / "o"),
                                   "--secrets", str(secrets)])
    assert res.exit_code == 0, res.output
    creds = read_secrets(secrets)
    assert creds["envcal"] == "given-service-pw" and len(creds) > 1
    assert not any(pw in res.output for pw in creds.values())
    conf = (tmp_path / "o" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "password_file" in conf and "acl_file" in conf
    bad = CliRunner().invoke(app, ["mqtt", "acl", "--stations", "stations", "--out", str(tmp_path / "p"),
                                   "--tls-cert", str(tmp_path / "missing.pem")])
    assert bad.exit_code == 2


# --------------------------------------------------------------------------- the broker enforces it
def test_broker_station_publishes_only_under_its_own_topic(secured):
    broker, creds = secured
    envcal = Client(broker.host, broker.port, "envcal", creds["envcal"])
    station = Client(broker.host, broker.port, "ZJ-NB-PP02", creds["ZJ-NB-PP02"])
    try:
        assert envcal.connack == 0 and station.connack == 0
        assert envcal.subscribe("envcal/#") == [1]
        # Mosquitto 2.0 grants a SUBACK here but checks read access on delivery: nothing arrives
        assert station.subscribe("envcal/#")[0] in (1, NOT_AUTHORIZED)
        assert station.publish(OWN, b"own") == 0
        assert station.publish(OTHER, b"spoofed") == NOT_AUTHORIZED
        assert station.publish("envcal/alerts/ZJ-NB-PP02/NB-PP02-CEMS", b"fake alert") == NOT_AUTHORIZED
        assert station.publish("envcal/results/ZJ-NB-PP02/NB-PP02-CEMS", b"fake") == NOT_AUTHORIZED
        assert envcal.publish("envcal/alerts/ZJ-NB-PP02/NB-PP02-CEMS", b"real alert") == 0
        assert _wait(lambda: len(envcal.received) >= 2)
        time.sleep(0.3)  # anything refused would have arrived by now
        assert envcal.received == [(OWN, b"own"), ("envcal/alerts/ZJ-NB-PP02/NB-PP02-CEMS", b"real alert")]
        assert station.received == []  # not even its own messages or the alerts about it
    finally:
        envcal.close()
        station.close()


def test_broker_refuses_anonymous_and_wrong_password(secured):
    broker, creds = secured
    anon = Client(broker.host, broker.port)
    wrong = Client(broker.host, broker.port, "ZJ-NB-PP02", creds["ZJ-HZ-AQ01"])
    try:
        assert anon.connack in (0x86, 0x87)  # bad user name or password / not authorized
        assert wrong.connack in (0x86, 0x87)
    finally:
        anon.close()
        wrong.close()


def test_ingest_service_with_credentials_stores_own_and_refused_never_arrives(secured, sqlite_url):
    broker, creds = secured
    eng = make_engine(sqlite_url)
    init_db(eng)
    from envcal.registry import load_registry

    reg = load_registry("stations")
    sync_registry(eng, reg)
    svc = IngestService(broker.url, eng, reg, client_id="ingest-sec", group="envcal", batch_seconds=0.05,
                        username="envcal", password=creds["envcal"]).start()
    station = Client(broker.host, broker.port, "ZJ-NB-PP02", creds["ZJ-NB-PP02"])
    try:
        assert svc.ready.wait(10), "ingest could not subscribe with its credentials"
        ts = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()
        body = json.dumps({"ts": ts, "seq": 1, "values": {"SO2": 1.0}}).encode()
        assert station.publish(OWN, body) == 0
        assert station.publish(OTHER, json.dumps({"ts": ts, "values": {"PM2.5": 3.0}}).encode()) == NOT_AUTHORIZED
        with eng.connect() as conn:
            assert _wait(lambda: conn.execute(sa.text("select count(*) from reading")).scalar_one() == 1)
        time.sleep(0.3)
        with eng.connect() as conn:
            ids = conn.execute(sa.text("select analyzer_id from reading")).scalars().all()
            dead = conn.execute(sa.text("select count(*) from dead_letter")).scalar_one()
        assert ids == ["NB-PP02-CEMS"] and dead == 0
    finally:
        station.close()
        svc.stop()
        eng.dispose()


# --------------------------------------------------------------------------- TLS
def _make_ca_and_server(folder):
    x509 = pytest.importorskip("cryptography.x509")
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("envcal test CA")).issuer_name(name("envcal test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = TlsFiles(folder / "server.pem", folder / "server.key", folder / "ca.pem")
    paths.cafile.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.TraditionalOpenSSL,
                                                serialization.NoEncryption()))
    paths.keyfile.chmod(0o600)
    return paths


def test_tls_listener_ingest_over_mqtts(tmp_path, registry, sqlite_url):
    tls = _make_ca_and_server(tmp_path / "pki")
    tls_port = free_port()
    files = write_broker_security(registry, tmp_path / "sec", tls=tls, tls_port=tls_port,
                                  tls_host="127.0.0.1")
    creds = read_secrets(files.secrets)
    eng = make_engine(sqlite_url)
    init_db(eng)
    sync_registry(eng, registry)
    with Mosquitto(tmp_path / "broker", extra_conf=files.conf.read_text()) as broker:
        assert _wait(lambda: _port_open(tls_port))
        svc = IngestService(f"mqtts://127.0.0.1:{tls_port}", eng, registry, client_id="ingest-tls",
                            batch_seconds=0.05, username="envcal", password=creds["envcal"],
                            ca_file=str(tls.cafile)).start()
        station = Client("127.0.0.1", tls_port, "ZJ-NB-PP02", creds["ZJ-NB-PP02"], ca=str(tls.cafile))
        untrusted = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        untrusted.tls_set()  # system CAs only: our throwaway CA is not among them
        try:
            assert svc.ready.wait(10), "ingest did not connect over TLS"
            assert station.connack == 0
            ts = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()
            assert station.publish(OWN, json.dumps({"ts": ts, "values": {"SO2": 2.5}}).encode()) == 0
            with eng.connect() as conn:
                assert _wait(lambda: conn.execute(sa.text("select count(*) from reading")).scalar_one() == 1)
            with pytest.raises(ssl.SSLError):
                untrusted.connect("127.0.0.1", tls_port)
            assert broker.alive()
        finally:
            station.close()
            svc.stop()
            eng.dispose()


def _port_open(port: int) -> bool:
    from envcal.broker import port_open

    return port_open("127.0.0.1", port)


# --------------------------------------------------------------------------- identity binding
def _acl_cli(tmp_path, *extra: str):
    """Run `envcal mqtt acl` for the repository's registry; (conf text, credentials)."""
    from envcal.cli import app

    out = tmp_path / "sec"
    res = CliRunner().invoke(app, ["mqtt", "acl", "--stations", "stations", "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return (out / "mosquitto.conf").read_text(), read_secrets(out / "secrets.env")


def _ingest_db(sqlite_url):
    from envcal.registry import load_registry

    eng = make_engine(sqlite_url)
    init_db(eng)
    reg = load_registry("stations")
    sync_registry(eng, reg)
    return eng, reg


def _rows(eng) -> int:
    with eng.connect() as conn:
        return conn.execute(sa.text("select count(*) from reading")).scalar_one()


def _intruder(broker, user: str, password: str, client_id: str) -> mqtt.Client:
    """A client that tries to resume ``client_id``'s persistent session (clean start off)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(broker.host, broker.port, clean_start=False, properties=props)
    c.loop_start()
    assert connected.wait(10)
    return c


def test_broker_config_binds_client_ids_and_limits_messages(tmp_path):
    conf, creds = _acl_cli(tmp_path, "--worker", "envcal-2", "--gateway", "gw1")
    assert "use_username_as_clientid true" in conf
    assert "message_size_limit 66560" in conf
    acl = (tmp_path / "sec" / "acl").read_text()
    assert "user envcal-2\ntopic read envcal/#" in acl
    broker = Mosquitto(tmp_path / "broker", extra_conf=conf).start()
    gw = Client(broker.host, broker.port, "gw1", creds["gw1"])
    svc = Client(broker.host, broker.port, "envcal", creds["envcal"])
    hj = "envcal/ZJ-JX-PP01/JX-PP01-CEMS/hj212"
    try:  # the gateway forwards HJ 212 frames for any station, nothing else
        assert svc.subscribe("envcal/#") == [1]
        assert gw.publish("envcal/gateway/status") in ACCEPTED
        assert gw.publish(OWN) == NOT_AUTHORIZED
        assert gw.publish("envcal/alerts/ZJ-JX-PP01/JX-PP01-CEMS") == NOT_AUTHORIZED
        big = Client(broker.host, broker.port, "ZJ-JX-PP01", creds["ZJ-JX-PP01"])
        big.c.publish(hj, b"y" * 70_000, qos=1)  # over message_size_limit: the broker drops it
        time.sleep(0.5)
        big.close()
        assert gw.publish(hj, b"small") in ACCEPTED
        assert _wait(lambda: (hj, b"small") in svc.received)
        assert [p for t, p in svc.received if t == hj] == [b"small"]
    finally:
        gw.close()
        svc.close()
        broker.stop()


def test_broker_station_cannot_take_over_ingest_session(tmp_path, sqlite_url):
    conf, creds = _acl_cli(tmp_path)
    broker = Mosquitto(tmp_path / "broker", extra_conf=conf).start()
    eng, reg = _ingest_db(sqlite_url)

    def service():
        return IngestService(broker.url, eng, reg, client_id="envcal-ingest", batch_seconds=0.05,
                             username="envcal", password=creds["envcal"]).start()

    svc = service()
    station = intruder = None
    try:
        assert svc.ready.wait(10)
        svc.stop()  # the persistent session stays on the broker and queues for the service
        station = Client(broker.host, broker.port, "ZJ-NB-PP02", creds["ZJ-NB-PP02"])
        base = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
        for i in range(5):
            body = json.dumps({"ts": (base + dt.timedelta(seconds=i)).isoformat(), "seq": i,
                               "values": {"SO2": float(i)}}).encode()
            assert station.publish(OWN, body) == 0
        # another station logs in with its own password but asks for ingest's client id
        intruder = _intruder(broker, "ZJ-HZ-AQ01", creds["ZJ-HZ-AQ01"], "envcal-ingest")
        time.sleep(0.5)
        intruder.disconnect()
        intruder.loop_stop()
        svc = service()
        assert svc.ready.wait(10)
        assert _wait(lambda: _rows(eng) == 5), f"queued readings lost: {_rows(eng)} of 5 arrived"
        # the same attempt while the service is connected does not disconnect it
        intruder = _intruder(broker, "ZJ-HZ-AQ01", creds["ZJ-HZ-AQ01"], "envcal-ingest")
        time.sleep(0.5)
        assert svc.connected.is_set() and svc.totals["takeovers"] == 0
    finally:
        for c in (station,):
            if c is not None:
                c.close()
        if intruder is not None:
            intruder.disconnect()
            intruder.loop_stop()
        svc.stop()
        eng.dispose()
        broker.stop()


def test_ingest_group_workers_side_by_side_and_takeover_logged(tmp_path, sqlite_url, caplog):
    conf, creds = _acl_cli(tmp_path, "--worker", "envcal-2")
    broker = Mosquitto(tmp_path / "broker", extra_conf=conf).start()
    eng, reg = _ingest_db(sqlite_url)
    workers = [IngestService(broker.url, eng, reg, client_id=user, group="g", batch_seconds=0.05,
                             username=user, password=creds[user]).start()
               for user in ("envcal", "envcal-2")]
    station = thief = None
    try:
        assert all(w.ready.wait(10) for w in workers)
        station = Client(broker.host, broker.port, "ZJ-NB-PP02", creds["ZJ-NB-PP02"])
        base = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
        for i in range(10):
            body = json.dumps({"ts": (base + dt.timedelta(seconds=i)).isoformat(), "seq": i,
                               "values": {"SO2": float(i)}}).encode()
            assert station.publish(OWN, body) == 0
        assert _wait(lambda: _rows(eng) == 10)
        assert all(w.connected.is_set() and w.totals["takeovers"] == 0 for w in workers)
        # someone holding worker 2's password connects (and reconnects when kicked): the
        # worker notices the repeated takeover and logs it
        with caplog.at_level("ERROR", logger="envcal.ingest"):
            thief = _intruder(broker, "envcal-2", creds["envcal-2"], "whatever")
            assert _wait(lambda: workers[1].totals["takeovers"] >= 1, timeout=30)
        assert any("taken over" in r.getMessage() for r in caplog.records)
    finally:
        if station is not None:
            station.close()
        if thief is not None:
            thief.disconnect()
            thief.loop_stop()
        for w in workers:
            w.stop()
        eng.dispose()
        broker.stop()


def test_broker_acl_agrees_with_ingest_subscriptions(secured, sqlite_url):
    """Every publish a station may make reaches ingest (stored or dead-lettered); the topics
    ingest does not read are refused by the broker instead of vanishing."""
    broker, creds = secured
    eng, reg = _ingest_db(sqlite_url)
    svc = IngestService(broker.url, eng, reg, client_id="envcal", batch_seconds=0.05,
                        username="envcal", password=creds["envcal"]).start()
    station = Client(broker.host, broker.port, "ZJ-NB-PP02", creds["ZJ-NB-PP02"])
    try:
        assert svc.ready.wait(10)
        for topic in (OWN + "/", OWN.replace("/data", "/DATA"), "envcal/ZJ-NB-PP02/x",
                      "envcal/ZJ-NB-PP02/NB-PP02-CEMS/data/extra", "envcal/ZJ-NB-PP02"):
            assert station.publish(topic, b"{}") == NOT_AUTHORIZED, topic
        assert station.publish("envcal/ZJ-NB-PP02/NO-SUCH/data", b"{}") == 0  # allowed: dead-lettered
        with eng.connect() as conn:
            assert _wait(lambda: conn.execute(sa.text("select count(*) from dead_letter")).scalar_one() == 1)
    finally:
        station.close()
        svc.stop()
        eng.dispose()
