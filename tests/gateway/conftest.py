"""Fixtures of the gateway tests: real Mosquitto (tests/conftest.py), a migrated SQLite
database with this folder's registry, a real ingest service, a gateway on a real socket."""

from __future__ import annotations

import uuid

import pytest

from envcal.db import init_db, make_engine
from envcal.ingest import IngestService
from envcal.registry import sync_registry
from tests.gateway.support import GatewayThread, registry


@pytest.fixture
def gw_engine(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    sync_registry(eng, registry())
    yield eng
    eng.dispose()


@pytest.fixture
def ingest(mosquitto, gw_engine):
    svc = IngestService(mosquitto.url, gw_engine, registry(), client_id=f"ingest-{uuid.uuid4().hex[:8]}",
                        batch_seconds=0.05).start()
    assert svc.ready.wait(10), "ingest did not subscribe"
    yield svc
    svc.stop()


@pytest.fixture
def gateway(mosquitto):
    g = GatewayThread(mosquitto.url, backfill=False).start()
    yield g
    g.stop()
