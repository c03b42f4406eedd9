"""MongoDB error handling, exactly as the server answers (mockupdb), and the layout, ids and
dedup against a real wire-protocol server (nx-27017, or MDGEN_TEST_MONGO_URI)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pymongo
import pytest
from mockupdb import MockupDB, OpMsg  # type: ignore[import-untyped]

from runtime.envelope import Envelope
from runtime.persist.dedup import DedupWindow
from runtime.persist.keys import identities
from runtime.persist.mongo import (
    INDEX_KEYS,
    MongoStore,
    MongoUnavailable,
    RejectStore,
    WriteOutcome,
    client_options,
    documents,
)
from runtime.persist.replay import MongoLink, ReplayWorker
from runtime.persist.spool import Spool
from runtime.persist.testing import nx_binary, shared_mongo_uri

T0 = 1_764_000_000_000_000_000


def trade(n: int, *, exchange: str = "okx", symbol: str = "BTC-USDT") -> Envelope:
    record = {
        "exchange": exchange,
        "channel": "trades",
        "symbol": symbol,
        "symbol_raw": symbol,
        "ts_exchange": T0 + n,
        "ts_recv": T0 + n + 5,
        "seq": None,
        "price": 100.0 + n,
        "size": 1.0,
        "side": "buy",
        "trade_id": str(n),
    }
    return {
        "v": 1,
        "exchange": exchange,
        "instance": exchange,
        "channel": "trades",
        "symbol": symbol,
        "kind": "trades",
        "ts_exchange": record["ts_exchange"],
        "ts_recv": record["ts_recv"],
        "seq": None,
        "message_id": str(n),
        "record": record,
    }


def book(seq: int | None, ts_recv: int, bids: list[list[str]]) -> Envelope:
    record = {
        "exchange": "kraken",
        "channel": "book",
        "symbol": "BTC-USD",
        "symbol_raw": "XBT/USD",
        "ts_exchange": None,
        "ts_recv": ts_recv,
        "seq": seq,
        "type": "update",
        "bids": bids,
        "asks": [],
    }
    env = trade(0)
    env.update(
        exchange="kraken",
        channel="book",
        symbol="BTC-USD",
        kind="book",
        ts_exchange=None,
        ts_recv=ts_recv,
        seq=seq,
        message_id=None,
        record=record,
    )
    return env


# -- identities and the dedup window ------------------------------------------------------------


def test_identities_are_deterministic_and_never_merge_distinct_records() -> None:
    a = [trade(1), trade(2), book(7, T0, [["1", "2"]]), book(7, T0, [["1", "3"]])]
    same = orjson.loads(orjson.dumps(a))  # a copy, as a replay from the spool reads it
    assert identities(a) == identities(same)
    ids = identities(a)
    assert ids[0] == "okx|trades|BTC-USDT|m:1"
    assert ids[2] != ids[3]  # one seq, two different records: both kept
    # two identical updates in one frame (one ts_recv) stay two; the same at another time too
    twice = [book(None, T0, [["1", "2"]]), book(None, T0, [["1", "2"]])]
    later = [book(None, T0 + 1, [["1", "2"]])]
    all_ids = identities(twice) + identities(later)
    assert len(set(all_ids)) == 3
    # ts_recv is not part of a trade's identity: a second collector of the feed is deduplicated
    other = trade(1)
    other["ts_recv"] += 10**6
    other["record"]["ts_recv"] += 10**6
    assert identities([other]) == ids[:1]


def test_dedup_window_by_time_and_count() -> None:
    now = [0.0]
    window = DedupWindow(10.0, 3, clock=lambda: now[0])
    batch = [trade(i) for i in range(3)]
    kept, _ = window.filter(batch, identities(batch))
    assert len(kept) == 3
    kept, _ = window.filter(batch, identities(batch))
    assert kept == [] and window.drops[("okx", "trades")] == 3
    extra = [trade(9)]
    window.filter(extra, identities(extra))  # 4 keys > 3: the oldest (trade 0) is forgotten
    kept, _ = window.filter([trade(0)], identities([trade(0)]))
    assert len(kept) == 1
    now[0] = 11.0  # everything expired
    kept, _ = window.filter(batch, identities(batch))
    assert len(kept) == 3


def test_client_options_never_override_the_uri() -> None:
    opts = client_options(
        "mongodb://u:p@h1,h2/?replicaSet=rs&serverSelectionTimeoutMS=100&tls=true"
    )
    assert "serverSelectionTimeoutMS" not in opts and opts["socketTimeoutMS"] == 10000
    assert "u:p" not in repr(MongoStore("mongodb://u:p@h/", "db"))


# -- exact error handling (mockupdb) ------------------------------------------------------------


@pytest.fixture(scope="module")
def mockup() -> Iterator[MockupDB]:
    srv = MockupDB(auto_ismaster={"maxWireVersion": 21})
    srv.autoresponds("ping")
    srv.autoresponds("endSessions")
    srv.run()
    yield srv
    srv.stop()


_stores: list[MongoStore] = []


@pytest.fixture
def server(mockup: MockupDB) -> Iterator[MockupDB]:
    yield mockup
    while _stores:
        _stores.pop().close()


def mock_store(server: MockupDB, **kw: Any) -> MongoStore:
    uri = f"{server.uri}/?serverSelectionTimeoutMS=1000&socketTimeoutMS=800&connectTimeoutMS=800"
    options: dict[str, Any] = {"create_layout": False, "attempts": 3, "backoff": 0.01}
    options.update(kw)
    store = MongoStore(uri, "db", **options)
    _stores.append(store)
    return store


def in_thread(fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return future


def insert_request(server: MockupDB) -> Any:
    return server.receives(OpMsg({"insert": "trades"}), timeout=10)


def sent_ids(request: Any) -> list[str]:
    return [d["_id"] for d in request.docs[0]["documents"]]


def test_duplicates_count_as_stored(server: MockupDB) -> None:
    store = mock_store(server)
    batch = [trade(i) for i in range(3)]
    future = in_thread(lambda: store.insert_envelopes(batch, identities(batch)))
    insert_request(server).reply(
        {
            "ok": 1,
            "n": 1,
            "writeErrors": [
                {"index": 0, "code": 11000, "errmsg": "E11000 duplicate key"},
                {"index": 2, "code": 11000, "errmsg": "E11000 duplicate key"},
            ],
        }
    )
    outcome: WriteOutcome = future.result(10)
    assert (outcome.inserted, outcome.duplicates, outcome.rejected) == (1, 2, [])


def test_mixed_codes_retry_the_transient_reject_the_rest(server: MockupDB) -> None:
    store = mock_store(server)
    batch = [trade(i) for i in range(4)]
    ids = identities(batch)
    future = in_thread(lambda: store.insert_envelopes(batch, ids))
    insert_request(server).reply(
        {
            "ok": 1,
            "n": 1,
            "writeErrors": [
                {"index": 0, "code": 11000, "errmsg": "dup"},
                {"index": 1, "code": 121, "errmsg": "Document failed validation"},
                {"index": 2, "code": 91, "errmsg": "ShutdownInProgress"},
            ],
        }
    )
    retry = insert_request(server)
    assert sent_ids(retry) == [ids[2]]  # only the transient one is sent again
    retry.ok(n=1)
    outcome = future.result(10)
    assert (outcome.inserted, outcome.duplicates, outcome.retries) == (2, 1, 1)
    assert [(r.code, r.document["_id"]) for r in outcome.rejected] == [(121, ids[1])]


def test_write_concern_error_is_retried(server: MockupDB) -> None:
    store = mock_store(server)
    batch = [trade(i) for i in range(2)]
    future = in_thread(lambda: store.insert_envelopes(batch, identities(batch)))
    insert_request(server).reply(
        {
            "ok": 1,
            "n": 2,
            "writeConcernError": {"code": 64, "errmsg": "waiting for replication timed out"},
        }
    )
    again = insert_request(server)  # applied but not confirmed: sent again
    assert len(sent_ids(again)) == 2
    again.reply(
        {
            "ok": 1,
            "n": 0,
            "writeErrors": [
                {"index": 0, "code": 11000, "errmsg": "dup"},
                {"index": 1, "code": 11000, "errmsg": "dup"},
            ],
        }
    )
    outcome = future.result(10)
    assert (outcome.inserted, outcome.duplicates, outcome.retries) == (0, 2, 1)
    assert outcome.error_codes[64] == 1


def test_not_primary_is_retried(server: MockupDB) -> None:
    store = mock_store(server)
    batch = [trade(1)]
    future = in_thread(lambda: store.insert_envelopes(batch, identities(batch)))
    insert_request(server).command_err(code=10107, errmsg="not primary")
    insert_request(server).ok(n=1)
    outcome = future.result(10)
    assert (outcome.inserted, outcome.retries) == (1, 1)


def test_hang_up_after_the_write_then_duplicates(server: MockupDB) -> None:
    store = mock_store(server)
    batch = [trade(i) for i in range(2)]
    future = in_thread(lambda: store.insert_envelopes(batch, identities(batch)))
    insert_request(server).hangup()  # the server applied it, the reply never came
    insert_request(server).reply(
        {
            "ok": 1,
            "n": 0,
            "writeErrors": [{"index": i, "code": 11000, "errmsg": "dup"} for i in range(2)],
        }
    )
    outcome = future.result(10)
    assert (outcome.inserted, outcome.duplicates, outcome.retries) == (0, 2, 1)


def test_no_reply_times_out_and_goes_to_the_spool(server: MockupDB) -> None:
    """A blackholed write waited a whole socket timeout: no second wait, MongoUnavailable."""
    store = mock_store(server)
    batch = [trade(1)]
    future = in_thread(lambda: store.insert_envelopes(batch, identities(batch)))
    insert_request(server)  # never answered: socketTimeoutMS
    with pytest.raises(MongoUnavailable, match="NetworkTimeout"):
        future.result(10)


def test_a_lasting_outage_raises_mongo_unavailable(server: MockupDB) -> None:
    store = mock_store(server, attempts=2)
    batch = [trade(1)]
    future = in_thread(lambda: store.insert_envelopes(batch, identities(batch)))
    insert_request(server).hangup()
    insert_request(server).hangup()
    with pytest.raises(MongoUnavailable):
        future.result(10)


def test_replay_advances_only_past_stored_records(server: MockupDB, tmp_path: Path) -> None:
    """Partial bulk failures: a spool record is acknowledged only once every document in it
    is inserted, a duplicate, or in the reject store."""
    store = mock_store(server, attempts=2)
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=1 << 16)
    spool.open()
    a, b = [trade(i) for i in range(3)], [trade(i) for i in range(3, 5)]
    for batch in (a, b):
        spool.append([(orjson.dumps([identities(batch), batch]), len(batch))])
    rejects = RejectStore(tmp_path / "rejected.ndjson")

    async def scenario() -> None:
        link = MongoLink()
        worker = ReplayWorker(spool, store, link, rejects, probe_initial=0.05, probe_max=0.1)
        worker.start()
        loop = asyncio.get_running_loop()

        def script() -> None:
            ids_a = identities(a)
            insert_request(server).reply(
                {
                    "ok": 1,
                    "n": 1,
                    "writeErrors": [
                        {"index": 0, "code": 11000, "errmsg": "dup"},
                        {"index": 1, "code": 91, "errmsg": "ShutdownInProgress"},
                    ],
                }
            )
            retry = insert_request(server)
            assert sent_ids(retry) == [ids_a[1]]
            retry.hangup()  # attempts exhausted: the record stays in the spool
            again = insert_request(server)  # the worker probed MongoDB and came back
            assert spool.backlog_items == 5, "advanced past a record not yet stored"
            assert sent_ids(again) == ids_a
            again.reply(
                {
                    "ok": 1,
                    "n": 1,
                    "writeErrors": [
                        {"index": 0, "code": 11000, "errmsg": "dup"},
                        {"index": 2, "code": 11000, "errmsg": "dup"},
                    ],
                }
            )
            nxt = insert_request(server)
            assert spool.backlog_items == 2
            nxt.reply(
                {
                    "ok": 1,
                    "n": 1,
                    "writeErrors": [{"index": 0, "code": 121, "errmsg": "failed validation"}],
                }
            )

        await loop.run_in_executor(None, script)
        for _ in range(100):
            if spool.backlog_items == 0:
                break
            await asyncio.sleep(0.05)
        await worker.stop(1.0)
        assert spool.backlog_items == 0
        assert (worker.stats.inserted, worker.stats.duplicates, worker.stats.rejected) == (2, 2, 1)
        assert worker.stats.failures == 1 and link.outages == 1

    asyncio.run(scenario())
    lines = rejects.path.read_bytes().splitlines()
    assert len(lines) == 1 and orjson.loads(lines[0])["code"] == 121
    spool.close()


# -- against a real wire-protocol server --------------------------------------------------------


@pytest.fixture(scope="session")
def mongo_uri() -> str:
    import os

    from runtime.persist.testing import ENV_URI

    if not os.environ.get(ENV_URI) and nx_binary() is None:
        pytest.skip("no MongoDB: pip install nx-27017, or set MDGEN_TEST_MONGO_URI")
    return shared_mongo_uri()


def test_layout_indexes_and_idempotent_inserts(mongo_uri: str) -> None:
    name = f"t_{uuid.uuid4().hex[:10]}"
    store = MongoStore(mongo_uri, name)
    store.ensure_layout()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    db = client[name]
    assert {"trades", "book", "ticker", "gaps", "dead_letters"} <= set(db.list_collection_names())
    keys = [list(ix["key"].items()) for ix in db.trades.list_indexes()]
    assert [(k, int(v)) for k, v in keys[-1]] == INDEX_KEYS
    batch = [trade(i) for i in range(50)] + [book(None, T0, [["1", "2"]])]
    ids = identities(batch)
    first = store.insert_envelopes(batch, ids)
    second = store.insert_envelopes(batch, ids)  # a retried batch
    assert (first.inserted, first.duplicates) == (51, 0)
    assert (second.inserted, second.duplicates) == (0, 51)
    assert db.trades.count_documents({}) == 50 and db.book.count_documents({}) == 1
    doc = db.trades.find_one({"_id": "okx|trades|BTC-USDT|m:7"})
    assert doc is not None and doc["record"]["price"] == 107.0 and doc["t"].year >= 2025
    by_collection = documents(batch, ids)
    assert set(by_collection) == {"trades", "book"}
    store.close()
    client.drop_database(name)
    client.close()
