"""PostgresDriver against the real PostgreSQL on 127.0.0.1:5432, database ``test`` (no mocks)."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any, Iterator

import pytest

from ofnotebook.sidecar.drivers.base import ComponentConfig, ComponentError
from ofnotebook.sidecar.drivers import Driver
from tests.sidecar.conformance import BrokerConformance
from tests.sidecar.support import free_port, needs_broker, uid

psycopg = pytest.importorskip("psycopg")

from ofnotebook.sidecar.drivers.postgresql import PostgresDriver  # noqa: E402

DSN = "host=127.0.0.1 user=postgres port=5432 dbname=test"
POSTGRES_TYPES = ["state.postgresql", "bindings.postgresql", "bindings.postgres"]


pytestmark = needs_broker("PostgreSQL")


@pytest.fixture
def db() -> Iterator[Any]:
    """A plain connection for checks; the tables listed in ``db.tables`` are dropped after."""
    conn = psycopg.connect(DSN, autocommit=True)
    tables: list[str] = []
    yield conn, tables
    for table in tables:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.close()


def _make(drivers: list, type_: str, start: bool = True, version: str = "v1",
          **md: str) -> PostgresDriver:
    driver = PostgresDriver(ComponentConfig(name=f"pg-{uid()}", type=type_, version=version,
                                            metadata={"connectionString": DSN, **md}))
    drivers.append(driver)
    if start:
        driver.start()
    return driver


def _state(drivers: list, db: Any, **md: str) -> tuple[PostgresDriver, str, str]:
    """A state driver on a fresh table and metadata table (both dropped after the test)."""
    table, meta = md.pop("tableName", f"ofn_state_{uid()}"), f"ofn_meta_{uid()}"
    db[1].extend([table, meta])
    return _make(drivers, "state.postgresql", tableName=table, metadataTableName=meta,
                 **md), table, meta


# -- state store ------------------------------------------------------------------------------
def test_state_get_save_delete_with_etags(drivers: list, db: Any) -> None:
    driver, table, _ = _state(drivers, db)
    conn = db[0]
    assert driver.get_state("k") == (None, "")
    driver.save_state("k", b"\x00bytes\xff")
    value, etag = driver.get_state("k")
    assert value == b"\x00bytes\xff"
    stored, isbinary, xmin = conn.execute(
        f"SELECT value, isbinary, xmin::text FROM {table} WHERE key = 'k'").fetchone()
    assert (stored, isbinary, etag) == (base64.b64encode(b"\x00bytes\xff").decode(), True, xmin)

    driver.save_state("k", b"two", etag)  # right etag: written, new etag
    value, etag2 = driver.get_state("k")
    assert value == b"two" and etag2 != etag
    with pytest.raises(ComponentError, match="etag mismatch"):
        driver.save_state("k", b"stale", etag)
    with pytest.raises(ComponentError, match="invalid etag"):
        driver.save_state("k", b"x", "not-a-number")
    with pytest.raises(ComponentError, match="etag mismatch"):  # Dapr v1: UPDATE finds no row
        driver.save_state("missing", b"x", "1")
    driver.save_state("k", b"three")  # no etag: last write wins (upsert)
    value, etag3 = driver.get_state("k")
    assert value == b"three"
    with pytest.raises(ComponentError, match="etag mismatch"):
        driver.delete_state("k", etag2)
    driver.delete_state("k", etag3)
    assert driver.get_state("k") == (None, "")
    driver.save_state("k", b"again")
    driver.delete_state("k")  # no etag: unconditional
    driver.delete_state("never-there")
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


def test_state_table_layout_and_migration_marker(drivers: list, db: Any) -> None:
    driver, table, meta = _state(drivers, db)
    conn = db[0]
    columns = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
    assert columns == [
        ("key", "text", "NO"), ("value", "jsonb", "NO"), ("isbinary", "boolean", "NO"),
        ("insertdate", "timestamp with time zone", "NO"),
        ("updatedate", "timestamp with time zone", "YES"),
        ("expiredate", "timestamp with time zone", "YES")]
    assert conn.execute(f"SELECT value FROM {meta} WHERE key = 'migrations'").fetchone() == ("2",)
    driver.close()
    again = _make(drivers, "state.postgresql", tableName=table, metadataTableName=meta)
    again.save_state("k", b"v")  # starting on an existing table is fine
    assert again.get_state("k")[0] == b"v"


def test_state_upgrades_a_table_made_by_an_older_dapr(drivers: list, db: Any) -> None:
    conn, tables = db
    table, meta = f"ofn_state_{uid()}", f"ofn_meta_{uid()}"
    tables.extend([table, meta])
    conn.execute(f"CREATE TABLE {table} (key text NOT NULL PRIMARY KEY, value jsonb NOT NULL, "
                 "isbinary boolean NOT NULL, insertdate TIMESTAMP WITH TIME ZONE NOT NULL "
                 "DEFAULT NOW(), updatedate TIMESTAMP WITH TIME ZONE NULL)")
    conn.execute(f"CREATE TABLE {meta} (key text NOT NULL PRIMARY KEY, value text NOT NULL)")
    conn.execute(f"INSERT INTO {meta} VALUES ('migrations', '1')")
    conn.execute(f"INSERT INTO {table} (key, value, isbinary) VALUES ('json', "
                 """'{"a": [1, "x"]}', false)""")
    driver = _make(drivers, "state.postgresql", tableName=table, metadataTableName=meta)
    # a row written through daprd's HTTP API (isbinary = false) reads back as its JSON text
    value, etag = driver.get_state("json")
    assert json.loads(value) == {"a": [1, "x"]} and etag
    assert conn.execute(f"SELECT value FROM {meta} WHERE key = 'migrations'").fetchone() == ("2",)
    conn.execute(f"UPDATE {table} SET expiredate = now() - interval '1 second'")
    assert driver.get_state("json") == (None, "")  # expired rows read as missing, as in Dapr


def test_state_bad_metadata(drivers: list, db: Any) -> None:
    with pytest.raises(ComponentError, match="tableName"):
        _make(drivers, "state.postgresql", tableName="state; DROP TABLE x")
    with pytest.raises(ComponentError, match="version v1"):
        _make(drivers, "state.postgresql", version="v2")
    driver = _make(drivers, "bindings.postgresql")
    with pytest.raises(ComponentError, match="does not support"):
        driver.get_state("k")
    state, _, _ = _state(drivers, db)
    with pytest.raises(ComponentError, match="does not support"):
        state.invoke("query", b"", {"sql": "SELECT 1"})


# -- output binding ---------------------------------------------------------------------------
@pytest.mark.parametrize("type_", ["bindings.postgresql", "bindings.postgres"])
def test_binding_exec_and_query(drivers: list, db: Any, type_: str) -> None:
    table = f"ofn_bind_{uid()}"
    db[1].append(table)
    driver = _make(drivers, type_)
    data, meta = driver.invoke("exec", b"", {
        "sql": f"CREATE TABLE {table} (id int PRIMARY KEY, name text, price numeric, "
               "tags jsonb, at timestamptz, ok boolean)"})
    assert data == b"" and meta["operation"] == "exec" and meta["rows-affected"] == "0"
    assert set(meta) == {"operation", "sql", "start-time", "end-time", "duration",
                         "rows-affected"}
    insert = f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6)"
    _, meta = driver.invoke("exec", b"", {"sql": insert, "params": json.dumps(
        [1, "a'b %s", 9.5, {"k": [1]}, "2024-01-02T03:04:05Z", True])})
    assert meta["rows-affected"] == "1"
    driver.invoke("exec", b"", {"sql": insert, "params": json.dumps([2, None, 3, None, None,
                                                                      False])})
    _, meta = driver.invoke("exec", b"", {"sql": f"UPDATE {table} SET ok = true; "
                                                 f"UPDATE {table} SET name = 'z' WHERE id = 2"})
    assert meta["rows-affected"] == "1"  # several statements: the last one counts, as pgx
    data, meta = driver.invoke("query", b"", {
        "sql": f"SELECT id, name, price, tags, at, ok FROM {table} WHERE id >= $1 ORDER BY id",
        "params": "[1]"})
    assert "rows-affected" not in meta and meta["operation"] == "query"
    assert json.loads(data) == [[1, "a'b %s", 9.5, {"k": [1]}, "2024-01-02T03:04:05Z", True],
                                [2, "z", 3, None, None, True]]
    data, _ = driver.invoke("query", b"", {"sql": f"SELECT * FROM {table} WHERE id = 99"})
    assert data == b"[]"


def test_binding_errors_and_close(drivers: list) -> None:
    driver = _make(drivers, "bindings.postgresql")
    with pytest.raises(ComponentError, match="exec, query, or close"):
        driver.invoke("create", b"", {"sql": "SELECT 1"})
    with pytest.raises(ComponentError, match="sql"):
        driver.invoke("query", b"", {})
    with pytest.raises(ComponentError, match="params"):
        driver.invoke("query", b"", {"sql": "SELECT $1", "params": '{"a": 1}'})
    with pytest.raises(ComponentError, match="ofn_no_such_table"):
        driver.invoke("query", b"", {"sql": "SELECT * FROM ofn_no_such_table"})
    assert json.loads(driver.invoke("query", b"", {"sql": "SELECT 1"})[0]) == [[1]]  # still ok
    with pytest.raises(ComponentError, match="does not support"):
        driver.publish("t", b"", {})
    assert driver.invoke("close", b"", {}) == (b"", {})
    with pytest.raises(ComponentError, match="closed"):  # as daprd: the component is closed
        driver.invoke("query", b"", {"sql": "SELECT 1"})
    driver.invoke("close", b"", {})  # closing twice is fine


def test_connection_is_reopened_after_it_breaks(drivers: list, db: Any) -> None:
    driver, _, _ = _state(drivers, db)
    driver.save_state("k", b"v")
    pid = driver._conn.info.backend_pid
    db[0].execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert driver.get_state("k")[0] == b"v"  # reads retry once on a fresh connection


def test_close_does_not_wait_for_a_long_query(drivers: list) -> None:
    driver = _make(drivers, "bindings.postgresql")
    errors: list[Exception] = []

    def sleep() -> None:
        try:
            driver.invoke("query", b"", {"sql": "SELECT pg_sleep(4)"})
        except ComponentError as exc:
            errors.append(exc)

    worker = threading.Thread(target=sleep)
    worker.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    driver.close()
    worker.join(5)
    assert time.monotonic() - t0 < 3 and not worker.is_alive()
    assert errors  # the interrupted call failed with a ComponentError


# -- failures ---------------------------------------------------------------------------------
@pytest.mark.parametrize("type_", POSTGRES_TYPES)
def test_unreachable_server_fails_fast(drivers: list, type_: str) -> None:
    port = free_port()
    driver = _make(drivers, type_, start=False,
                   connectionString=f"host=127.0.0.1 user=postgres port={port} database=test")
    t0 = time.monotonic()
    with pytest.raises(ComponentError, match=f"127.0.0.1:{port}.*connectionString"):
        driver.start()
    assert time.monotonic() - t0 < 4


@pytest.mark.parametrize("type_", POSTGRES_TYPES)
def test_missing_or_bad_connection_string(drivers: list, type_: str) -> None:
    driver = PostgresDriver(ComponentConfig(name="p", type=type_, metadata={}))
    drivers.append(driver)
    with pytest.raises(ComponentError, match="connectionString"):
        driver.start()
    with pytest.raises(ComponentError, match="connectionString"):
        _make(drivers, type_, connectionString="host=127.0.0.1 bogus_option=1")


def test_url_connection_string_with_pgx_options(drivers: list) -> None:
    driver = _make(drivers, "bindings.postgresql",
                   connectionString="postgres://postgres@127.0.0.1:5432/test?pool_max_conns=4")
    assert json.loads(driver.invoke("query", b"", {"sql": "SELECT current_database()"})[0]) \
        == [["test"]]


def test_close_is_idempotent_and_unstarted_close_is_safe(drivers: list) -> None:
    _make(drivers, "state.postgresql", start=False).close()
    driver = _make(drivers, "bindings.postgresql")
    driver.close()
    driver.close()
    with pytest.raises(ComponentError, match="closed"):
        driver.invoke("query", b"", {"sql": "SELECT 1"})


class TestPostgresConformance(BrokerConformance):
    types = ("state.postgresql", "bindings.postgresql", "bindings.postgres")
    bad_metadata = (
        ("state.postgresql", {"connectionString": DSN, "tableName": "state; DROP TABLE x"},
         "tableName"),
        ("bindings.postgresql", {}, "connectionString"),
        ("state.postgresql", {"connectionString": "host=127.0.0.1 bogus_option=1"},
         "connectionString"),
    )

    def metadata(self, type_: str) -> dict[str, str]:
        if type_.startswith("state."):
            return {"connectionString": DSN, "tableName": f"ofn_conf_{uid()}",
                    "metadataTableName": f"ofn_conf_meta_{uid()}"}
        return {"connectionString": DSN}

    unreachable_fix = ("connectionString",)

    def unreachable(self, type_: str, port: int) -> dict[str, str]:
        return {"connectionString": f"host=127.0.0.1 user=postgres port={port} database=test"}

    def cleanup(self, drivers: list[Driver]) -> None:
        tables = {d.component.get(k) for d in drivers  # only the suite's own tables
                  for k in ("tableName", "metadataTableName")
                  if d.component.get(k).startswith("ofn_conf_")}
        if tables:
            with psycopg.connect(DSN, autocommit=True) as conn:
                for table in tables:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
