"""PostgreSQL ``state.postgresql`` (v1 layout) and the ``bindings.postgresql`` output binding, with
the SQL daprd's components run, so a real daprd can take over the same tables.

* state (Dapr v1): table ``tableName`` (default ``state``) with columns ``key text PRIMARY KEY,
  value jsonb, isbinary boolean, insertdate, updatedate, expiredate``; the etag is the row's
  ``xmin``. Values arrive as bytes, so they are stored as daprd's gRPC API stores bytes:
  ``isbinary = true`` and ``value`` = the base64 text as a JSON string. Rows with
  ``isbinary = false`` (written through daprd's HTTP API) read back as their JSON text. Expired
  rows (``expiredate`` in the past) read as missing.
* Migrations: the table is created with ``expiredate`` at once (Dapr's migrations 0 and 1), and the
  ``migrations`` row of ``metadataTableName`` (default ``dapr_metadata``) is raised to ``2``, so a
  daprd started later on the same database does not try to add the column again.
* binding: operations ``exec``, ``query`` (``sql`` and optional ``params``, a JSON array bound to
  ``$1, $2...``) and ``close``; ``query`` returns the rows as a JSON array of arrays.
* Not daprd: one connection instead of a pool (``maxConns``, ``timeout``, ``queryExecMode`` are
  ignored; ``connect_timeout`` defaults to 3 s), ``state.postgresql`` v2 is refused, and TTLs
  are honoured on read but never set (the driver interface has no request metadata).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import threading
import time
import uuid
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..golang import format_duration
from .base import ComponentError, Driver, EtagInvalid, EtagMismatch, StateOperation

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)

_OPERATIONS = ("exec", "query", "close")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")
_PAIR = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")
_RENAMED = {"database": "dbname"}  # pgx accepts both; libpq only dbname


def _conninfo(raw: str) -> str:
    """Turn a pgx connection string (URL or key=value) into one libpq accepts: pgx-only keys
    (``pool_*``) are dropped, ``database`` becomes ``dbname``, ``connect_timeout`` defaults to 3."""
    raw = raw.strip()
    if raw.startswith(("postgres://", "postgresql://")):
        parts = urlsplit(raw)
        query = [(k, v) for k, v in parse_qsl(parts.query) if not k.startswith("pool_")]
        params = conninfo_to_dict(urlunsplit(parts._replace(query=urlencode(query))))
    else:
        params, pos = {}, 0
        while pos < len(raw.rstrip()):
            match = _PAIR.match(raw, pos)
            if not match:
                raise ValueError(f"cannot parse {raw[pos:]!r}")
            key, value = match.groups()
            if value.startswith("'"):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[_RENAMED.get(key, key)] = value
            pos = match.end()
        params = {k: v for k, v in params.items() if not k.startswith("pool_")}
    params.setdefault("connect_timeout", "3")
    return make_conninfo("", **params)


def _jsonable(value: Any) -> Any:
    """A query result value as pgx's ``rows.Values()`` marshals it with ``encoding/json``."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return f"{value.isoformat()}T00:00:00Z"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (dt.time, dt.timedelta, uuid.UUID)):
        return str(value)
    return value


def _param(value: Any) -> str | None:
    """A JSON param as text of unknown type: PostgreSQL infers the type, as with pgx."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


class PostgresDriver(Driver):
    """One connection (autocommit) shared under a lock; it is reopened when it breaks."""

    def __init__(self, component: Any) -> None:
        super().__init__(component)
        self._conn: Any = None
        self._conninfo = ""
        self._lock = threading.RLock()

    def _ident(self, key: str, default: str) -> str:
        name = self.component.get(key, default)
        if not _IDENT.fullmatch(name):
            raise ComponentError(f"component {self.name!r}: metadata {key}={name!r} is not a "
                                 "table name ([schema.]name, letters, digits and _)")
        return name

    def _start(self) -> None:
        state = self.component.type == "state.postgresql"
        if state and self.component.version not in ("", "v1"):
            raise ComponentError(f"component {self.name!r}: state.postgresql "
                                 f"{self.component.version} is not supported locally; use "
                                 "version v1 (tableName) in the component spec")
        raw = self.component.get("url") or self.component.require("connectionString")  # alias
        try:
            self._conninfo = _conninfo(raw)
            params = conninfo_to_dict(self._conninfo)
        except (ValueError, psycopg.Error) as exc:
            raise ComponentError(f"component {self.name!r}: metadata connectionString is not "
                                 f"valid ({exc}); use e.g. 'host=127.0.0.1 user=postgres "
                                 "port=5432 dbname=test'") from None
        self._address = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
        if state:
            self._table = self._ident("tableName", "state")
            self._meta = self._ident("metadataTableName", "dapr_metadata")
        self._conn = self._connect()
        if state:
            self._run(self._migrate)

    def _connect(self) -> Any:
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            reason = " ".join(line.strip() for line in str(exc).splitlines()) or repr(exc)
            raise ComponentError(
                f"component {self.name!r} ({self.component.type}) cannot connect to PostgreSQL "
                f"at {self._address}: {reason} Start PostgreSQL there or fix metadata "
                "connectionString (e.g. 'host=127.0.0.1 user=postgres port=5432 dbname=test')."
            ) from None

    def _close(self) -> None:
        locked = self._lock.acquire(timeout=1.0)  # a long query must not hang close()
        try:
            if self._conn is not None:
                if not locked:  # stop the running statement on the server too
                    self._conn.cancel_safe(timeout=1.0)
                self._conn.close()
                self._conn = None
        except Exception:  # close() must never raise
            log.exception("closing PostgreSQL component %r", self.name)
        finally:
            if locked:
                self._lock.release()

    def _run(self, work: Callable[[Any], Any], retry: bool = False) -> Any:
        """Run ``work(connection)``; a broken connection is reopened (and idempotent work retried)."""
        with self._lock:
            self._require_started(self._conninfo or None)
            for attempt in (1, 2):
                conn = self._conn
                if conn is None or conn.closed or conn.broken:
                    if conn is not None:
                        conn.close()
                    self._conn = None
                    conn = self._conn = self._connect()
                try:
                    return work(conn)
                except psycopg.OperationalError as exc:
                    if not (conn.broken or conn.closed) or not retry or attempt == 2 \
                            or self._lifecycle == "closed":
                        raise ComponentError(f"component {self.name!r}: PostgreSQL at "
                                             f"{self._address} failed: {exc}") from None
                except psycopg.Error as exc:
                    raise ComponentError(f"component {self.name!r}: {exc}") from None

    def _migrate(self, conn: Any) -> None:
        statements = (
            f"CREATE TABLE IF NOT EXISTS {self._meta} (key text NOT NULL PRIMARY KEY, "
            "value text NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self._table} (key text NOT NULL PRIMARY KEY, "
            "value jsonb NOT NULL, isbinary boolean NOT NULL, "
            "insertdate TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(), "
            "updatedate TIMESTAMP WITH TIME ZONE NULL, expiredate TIMESTAMP WITH TIME ZONE NULL)",
            f"ALTER TABLE {self._table} ADD COLUMN IF NOT EXISTS expiredate "
            "TIMESTAMP WITH TIME ZONE",
            f"INSERT INTO {self._meta} (key, value) VALUES ('migrations', '2') ON CONFLICT (key) "
            f"DO UPDATE SET value = '2' WHERE {self._meta}.value IN ('0', '1')",
        )
        for statement in statements:
            try:
                conn.execute(statement)
            except psycopg.errors.UniqueViolation:
                pass  # another sidecar created the same table at the same moment (as Dapr)

    # -- state store (Dapr v1) --------------------------------------------------------------
    def _get_state(self, key: str) -> tuple[bytes | None, str]:
        row = self._run(lambda conn: conn.execute(
            f"SELECT value::text, isbinary, xmin::text FROM {self._table} WHERE key = %s "
            "AND (expiredate IS NULL OR expiredate >= CURRENT_TIMESTAMP)", (key,)).fetchone(),
            retry=True)
        if row is None:
            return None, ""
        text, isbinary, etag = row
        if isbinary:
            return base64.b64decode(json.loads(text)), etag
        return text.encode(), etag

    def _etag(self, key: str, etag: str) -> str:
        if not etag.isdigit() or int(etag) >= 2**32:
            raise EtagInvalid(f"invalid etag {etag!r} for key {key!r}: PostgreSQL etags are "
                              "the numbers get_state returns")
        return etag

    def _mismatch(self, key: str, etag: str) -> ComponentError:
        return EtagMismatch(f"etag mismatch for key {key!r}: the row changed since etag "
                            f"{etag!r} was read; read it again and retry")

    def _statement(self, op: StateOperation) -> tuple[str, tuple[str, ...]]:
        """The SQL of one state operation and its parameters (Dapr's v1 statements)."""
        if op.kind == "delete":
            if not op.etag:
                return f"DELETE FROM {self._table} WHERE key = %s", (op.key,)
            return (f"DELETE FROM {self._table} WHERE key = %s AND xmin = %s::xid",
                    (op.key, self._etag(op.key, op.etag)))
        payload = json.dumps(base64.b64encode(op.value).decode())
        if not op.etag:
            return (f"INSERT INTO {self._table} AS t (key, value, isbinary, expiredate) "
                    "VALUES (%s, %s::jsonb, true, NULL) ON CONFLICT (key) DO UPDATE SET "
                    "value = excluded.value, isbinary = excluded.isbinary, "
                    "updatedate = CURRENT_TIMESTAMP, expiredate = NULL", (op.key, payload))
        return (f"UPDATE {self._table} SET value = %s::jsonb, isbinary = true, "
                "updatedate = CURRENT_TIMESTAMP, expiredate = NULL WHERE key = %s "
                "AND xmin = %s::xid AND (expiredate IS NULL OR expiredate > CURRENT_TIMESTAMP)",
                (payload, op.key, self._etag(op.key, op.etag)))

    def _apply(self, conn: Any, op: StateOperation, sql: str, params: tuple[str, ...]) -> None:
        rows = conn.execute(sql, params).rowcount
        if op.etag and rows != 1:
            raise self._mismatch(op.key, op.etag)
        if op.kind == "upsert" and rows != 1:
            raise ComponentError(f"component {self.name!r}: no item was updated for {op.key!r}")

    def _save_state(self, key: str, value: bytes, etag: str | None) -> None:
        op = StateOperation("upsert", key, value, etag)
        sql, params = self._statement(op)
        self._run(lambda conn: self._apply(conn, op, sql, params), retry=not etag)

    def _delete_state(self, key: str, etag: str | None) -> None:
        op = StateOperation("delete", key, etag=etag)
        sql, params = self._statement(op)
        self._run(lambda conn: self._apply(conn, op, sql, params), retry=not etag)

    def _transact(self, operations: Sequence[StateOperation]) -> None:
        """Every statement in one SQL transaction: a stale etag (an UPDATE or DELETE that
        matches no row) raises inside it, so PostgreSQL rolls all of them back."""
        statements = [(op, *self._statement(op)) for op in operations]  # bad etags first

        def work(conn: Any) -> None:
            with conn.transaction():
                for op, sql, params in statements:
                    self._apply(conn, op, sql, params)
        self._run(work)

    # -- output binding ---------------------------------------------------------------------
    def invoke(self, operation: str, data: bytes, metadata: Mapping[str, str]
               ) -> tuple[bytes, dict[str, str]]:
        if operation == "close" and self._closed_reason:
            return b"", {}  # closing twice is fine, as in daprd
        return super().invoke(operation, data, metadata)

    def _invoke(self, operation: str, data: bytes, metadata: Mapping[str, str]
                ) -> tuple[bytes, dict[str, str]]:
        if operation == "close":  # as daprd: closes the component; later calls fail
            self._closed_reason = "a 'close' operation ran"
            self.close()
            return b"", {}
        if operation not in _OPERATIONS:
            raise ComponentError(f"invalid operation type: {operation!r}. Expected exec, query, "
                                 f"or close (component {self.name!r})")
        sql = metadata.get("sql", "")
        if not sql:
            raise ComponentError("required metadata not set: sql (the statement to run)")
        try:
            args = json.loads(metadata["params"]) if metadata.get("params") else []
            if not isinstance(args, list):
                raise ValueError("not a JSON array")
        except ValueError as exc:
            raise ComponentError(f"invalid metadata property params: failed to unserialize into "
                                 f"an array: {exc}") from None
        params = [_param(v) for v in args]
        start, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()

        def work(conn: Any) -> Any:
            with psycopg.RawCursor(conn) as cur:  # $1, $2... placeholders, as pgx
                cur.execute(sql, params or None)
                if operation == "query":
                    return cur.fetchall() if cur.description else []
                count = cur.rowcount
                while cur.nextset():  # several statements: the last one counts, as pgx
                    count = cur.rowcount
                return count

        result = self._run(work)
        end = dt.datetime.now(dt.timezone.utc)
        meta = {"operation": operation, "sql": sql,
                "start-time": start.isoformat().replace("+00:00", "Z"),
                "end-time": end.isoformat().replace("+00:00", "Z"),
                "duration": format_duration(time.perf_counter() - t0)}
        if operation == "exec":
            meta["rows-affected"] = str(max(result, 0))
            return b"", meta
        body = json.dumps([_jsonable(list(row)) for row in result], separators=(",", ":"))
        return body.encode(), meta
