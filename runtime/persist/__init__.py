"""Persistence: the MongoDB sink with a durable spool, replay and dedup (docs/mongodb.md).

* :mod:`runtime.persist.build` — ``build_sink``: ``[sink]`` of collector.toml to a sink;
* :mod:`runtime.persist.fallback` — the fallback chain MongoDB -> spool -> on_full;
* :mod:`runtime.persist.spool` — the durable spool; :mod:`runtime.persist.replay` — its replay;
* :mod:`runtime.persist.mongo` — pymongo writes; :mod:`runtime.persist.keys` — ``_id``s;
* :mod:`runtime.persist.dedup` — the optional dedup window.
"""
