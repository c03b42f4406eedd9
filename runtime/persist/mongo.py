"""MongoDB writes with pymongo: layout, deterministic ids, error classification, retries.

Layout (docs/mongodb.md): one regular collection per channel kind (``trades``, ``book``,
``ticker``, ``candles``, ...), plus ``gaps`` and ``dead_letters`` (frames the parser did not
understand). A document is the envelope with ``_id`` (its identity, :mod:`runtime.persist.keys`)
and ``t`` (a BSON date: the exchange time, or the receive time when the exchange gives none).
Each collection has the unique ``_id`` index (the dedup) and ``exchange_channel_symbol_t``.

:class:`MongoStore` is synchronous: callers run it in a worker thread. It never logs the URI.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import bson
import orjson
import pymongo
from bson.errors import InvalidDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    CollectionInvalid,
    ConnectionFailure,
    DocumentTooLarge,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from compiler.kinds import KIND_FIELDS
from runtime.envelope import Envelope

log = logging.getLogger("mdgen.mongo")

Document = dict[str, Any]

DUPLICATE_KEY_CODES = frozenset({11000, 11001, 12582})
"""Duplicate key: the document is already stored."""

TRANSIENT_CODES = frozenset(
    {6, 7, 50, 89, 91, 112, 133, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 64}
)
"""Server errors worth retrying (network, elections, shutdown, timeouts, write conflicts,
write concern): HostUnreachable, HostNotFound, MaxTimeMSExpired, NetworkTimeout,
ShutdownInProgress, WriteConflict, FailedToSatisfyReadPreference, ReadConcernMajorityNotAvailable,
PrimarySteppedDown, ExceededTimeLimit, SocketException, NotWritablePrimary,
InterruptedAtShutdown, InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk,
NotPrimaryOrSecondary, WriteConcernFailed."""

COLLECTION_OF_KIND = {"gap": "gaps", "dead_letter": "dead_letters"}
STANDARD_COLLECTIONS = (*KIND_FIELDS, "gaps", "dead_letters")
INDEX_NAME = "exchange_channel_symbol_t"
INDEX_KEYS = [("exchange", 1), ("channel", 1), ("symbol", 1), ("t", 1)]

CLIENT_DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 3000,
    "connectTimeoutMS": 3000,
    "socketTimeoutMS": 10000,
    "appname": "mdgen",
}
"""Client options applied unless the URI sets them (the URI always wins)."""


class MongoUnavailable(Exception):
    """MongoDB cannot take writes now (down, unreachable, no primary, refused); retry later."""


@functools.cache
def collection_name(kind: str) -> str:
    """The collection of an envelope kind."""
    name = COLLECTION_OF_KIND.get(kind, kind)
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "_unknown"


def client_options(uri: str) -> dict[str, Any]:
    """:data:`CLIENT_DEFAULTS` minus the options the URI sets itself (case-insensitive)."""
    query = uri.split("?", 1)[1] if "?" in uri else ""
    given = {k.lower() for k, _ in parse_qsl(query, keep_blank_values=True)}
    return {k: v for k, v in CLIENT_DEFAULTS.items() if k.lower() not in given}


def documents(batch: Sequence[Envelope], ids: Sequence[str]) -> dict[str, list[Document]]:
    """The documents of a batch, grouped by collection."""
    out: dict[str, list[Document]] = defaultdict(list)
    fromts = datetime.fromtimestamp
    for env, ident in zip(batch, ids, strict=True):
        ts = env.get("ts_exchange")
        if ts is None:
            ts = env.get("ts_recv")
        doc: Document = {"_id": ident, **env}
        if isinstance(ts, int):
            doc["t"] = fromts(ts // 1_000_000 / 1e3, UTC)
        out[collection_name(env.get("kind"))].append(doc)
    return out


@dataclass
class Rejected:
    """A document MongoDB refused for good (not a duplicate, not transient)."""

    collection: str
    document: Document
    code: int | None
    error: str


@dataclass
class WriteOutcome:
    """What one write did: every document is inserted, a duplicate, or rejected."""

    inserted: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    retries: int = 0
    error_codes: Counter[int] = field(default_factory=Counter)

    def add(self, other: WriteOutcome) -> None:
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.rejected.extend(other.rejected)
        self.retries += other.retries
        self.error_codes.update(other.error_codes)


def is_outage(exc: BaseException) -> bool:
    """Whether a pymongo error means "not reachable now" (by base class, not exact name)."""
    if isinstance(exc, ConnectionFailure):  # AutoReconnect, NetworkTimeout, NotPrimaryError, ...
        return True
    return isinstance(exc, OperationFailure) and exc.code in TRANSIENT_CODES


class MongoStore:
    """Batched, idempotent inserts into one database (call from a worker thread)."""

    def __init__(
        self,
        uri: str,
        database: str,
        *,
        attempts: int = 3,
        backoff: float = 0.1,
        create_layout: bool = True,
        client: pymongo.MongoClient[Document] | None = None,
    ) -> None:
        self._uri = uri
        self.database_name = database
        self.attempts = attempts
        self.backoff = backoff
        self.create_layout = create_layout
        """False: the collections and indexes are managed elsewhere; mdgen creates nothing."""
        self._client = client
        self._ready: set[str] = set()

    def __repr__(self) -> str:  # never the URI
        return f"MongoStore(database={self.database_name!r})"

    @property
    def client(self) -> pymongo.MongoClient[Document]:
        if self._client is None:
            self._client = pymongo.MongoClient(self._uri, **client_options(self._uri))
        return self._client

    @property
    def db(self) -> Database[Document]:
        return self.client[self.database_name]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def ping(self) -> None:
        """Raise :class:`MongoUnavailable` unless the server answers."""
        try:
            self.client.admin.command("ping")
        except PyMongoError as exc:
            raise MongoUnavailable(describe(exc)) from exc

    # -- layout ----------------------------------------------------------------------------

    def ensure_layout(self, names: Iterable[str] = STANDARD_COLLECTIONS) -> None:
        """Create the collections and their index (idempotent)."""
        for name in names:
            self._ensure(name)

    def _ensure(self, name: str) -> None:
        if name in self._ready or not self.create_layout:
            return
        db = self.db
        try:
            if name not in db.list_collection_names(filter={"name": name}):
                try:
                    db.create_collection(name)
                except CollectionInvalid:
                    log.debug("collection %s created concurrently", name)
            db[name].create_index(INDEX_KEYS, name=INDEX_NAME)
        except OperationFailure as exc:
            if is_outage(exc):
                raise MongoUnavailable(describe(exc)) from exc
            # e.g. an index of another definition exists: write anyway, say so once
            log.warning("collection %s: layout not applied: %s", name, describe(exc))
        except PyMongoError as exc:
            raise MongoUnavailable(describe(exc)) from exc
        self._ready.add(name)

    # -- writes ----------------------------------------------------------------------------

    def insert(self, by_collection: Mapping[str, list[Document]]) -> WriteOutcome:
        """Insert every document (unordered); raise :class:`MongoUnavailable` if some could not.

        Duplicates (11000) count as stored. Documents refused for good are returned in
        ``rejected``. Outages and transient errors are retried ``attempts`` times with backoff
        (a server-selection timeout is not: it already waited); then MongoUnavailable.
        """
        total = WriteOutcome()
        for name, docs in by_collection.items():
            self._ensure(name)
            total.add(self._insert_collection(self.db[name], docs))
        return total

    def insert_envelopes(self, batch: Sequence[Envelope], ids: Sequence[str]) -> WriteOutcome:
        return self.insert(documents(batch, ids))

    def _insert_collection(self, coll: Collection[Document], docs: list[Document]) -> WriteOutcome:
        outcome = WriteOutcome()
        pending = docs
        attempt = 0
        while pending:
            try:
                coll.insert_many(pending, ordered=False, bypass_document_validation=False)
                outcome.inserted += len(pending)
                return outcome
            except BulkWriteError as exc:
                pending = self._classify(coll.name, pending, exc.details, outcome)
                why = "transient write errors"
            except (InvalidDocument, DocumentTooLarge, OverflowError) as exc:
                pending = self._reject_unencodable(coll.name, pending, exc, outcome)
                continue  # not a server round trip: no attempt used
            except (ServerSelectionTimeoutError, NetworkTimeout) as exc:
                # Already waited a full timeout (no server, or a blackhole): the spool is the
                # better place for this batch than another wait.
                raise MongoUnavailable(describe(exc)) from exc
            except ConnectionFailure as exc:  # hang-up, timeout, not primary: retry
                why = describe(exc)
            except OperationFailure as exc:
                outcome.error_codes[exc.code or 0] += 1
                if exc.code not in TRANSIENT_CODES:  # refused as a whole (auth, quota)
                    raise MongoUnavailable(describe(exc)) from exc
                why = describe(exc)
            except PyMongoError as exc:
                raise MongoUnavailable(describe(exc)) from exc
            if not pending:
                return outcome
            attempt += 1
            if attempt >= self.attempts:
                raise MongoUnavailable(f"{len(pending)} document(s) not stored: {why}")
            outcome.retries += 1
            time.sleep(self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random()))
        return outcome

    @staticmethod
    def _classify(
        name: str, pending: list[Document], details: Mapping[str, Any], outcome: WriteOutcome
    ) -> list[Document]:
        """Sort a BulkWriteError: duplicates are stored, transient ones retried, others rejected.

        With a write concern error, the documents without a write error were applied but not
        confirmed: they are sent again (and come back as duplicates once confirmed).
        """
        errors = details.get("writeErrors", [])
        concern = details.get("writeConcernErrors", [])
        failed = {e["index"] for e in errors}
        retry: list[Document] = []
        for err in errors:
            code = int(err.get("code", 0))
            outcome.error_codes[code] += 1
            doc = pending[err["index"]]
            if code in DUPLICATE_KEY_CODES:
                outcome.duplicates += 1
            elif code in TRANSIENT_CODES:
                retry.append(doc)
            else:
                outcome.rejected.append(Rejected(name, doc, code, str(err.get("errmsg", ""))))
        if concern:
            for wce in concern:
                outcome.error_codes[int(wce.get("code", 0))] += 1
            retry.extend(d for i, d in enumerate(pending) if i not in failed)
        else:
            outcome.inserted += int(details.get("nInserted", 0))
        return retry

    @staticmethod
    def _reject_unencodable(
        name: str, pending: list[Document], exc: Exception, outcome: WriteOutcome
    ) -> list[Document]:
        keep = []
        for doc in pending:
            try:
                data = bson.encode(doc)
            except (InvalidDocument, OverflowError) as err:
                outcome.rejected.append(Rejected(name, doc, None, f"not encodable: {err}"))
                continue
            if len(data) > 16 * 1024 * 1024:
                outcome.rejected.append(Rejected(name, doc, None, "document over 16 MiB"))
                continue
            keep.append(doc)
        if len(keep) == len(pending):  # nothing singled out: the whole batch is the problem
            raise MongoUnavailable(f"insert failed: {exc}") from exc
        return keep


def describe(exc: BaseException) -> str:
    """A short description of a pymongo error (class, code, message; no URI)."""
    code = getattr(exc, "code", None)
    text = str(exc)
    for cut in (", full error:", " (configured timeouts", ", Timeout:", ", Topology Description"):
        text = text.split(cut)[0]
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(exc).__name__}{f' {code}' if code is not None else ''}: {text}"


class RejectStore:
    """The dead-letter store of write errors: one NDJSON line per refused document, fsynced.

    ``<spool_dir>/rejected.ndjson``: ``{"ts", "collection", "code", "error", "document"}``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def add(self, rejected: Sequence[Rejected]) -> None:
        if not rejected:
            return
        now = time.time_ns()
        lines = []
        for r in rejected:
            entry = {
                "ts": now,
                "collection": r.collection,
                "code": r.code,
                "error": r.error,
                "document": r.document,
            }
            try:
                lines.append(orjson.dumps(entry, default=repr))
            except TypeError:
                entry["document"] = repr(r.document)
                lines.append(orjson.dumps(entry))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(b"\n".join(lines) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.count += len(rejected)
        log.error("%d document(s) refused by MongoDB written to %s", len(rejected), self.path)
