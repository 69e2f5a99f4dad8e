"""Metrics (Prometheus, one registry per app), request ids, and the structured decision log.

Everything lives in ``app.extensions["observability"]``; nothing is global, so two apps in one
process (tests) never share counters. :func:`init_app` is idempotent.

Two modes. Without ``PROMETHEUS_MULTIPROC_DIR`` (``flask run``, tests) ``/metrics`` reports this
process. With it (gunicorn and ``python -m app.serve`` set a private one when none is configured:
:func:`prepare_multiprocess_dir`), ``/metrics`` reports every worker of the server, summed from
prometheus_client's multiprocess files: each worker counts in memory (:class:`HotMetrics`, ~1 µs a
request) and adds what it counted to its files every ``METRICS_FLUSH_SECONDS`` (:func:`start_flusher`)
and when it answers a scrape, because writing the files on every request cost ~8 µs (3 updates).
"""

from __future__ import annotations

import bisect
import collections
import glob
import importlib.metadata
import itertools
import json
import logging
import operator
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import values as prometheus_values
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

decision_log = logging.getLogger("app.decisions")
log = logging.getLogger("app.metrics")


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``+Inf``, ``0.005``)."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
_PREPARED_ENV = "LEARNAUTHZ_METRICS_PREPARED"  # "<pid>:<private 0|1>" of the server that prepared it

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_ENV_ID = "learnauthz.request_id"
_ENV_STARTED = "learnauthz.request_started"
# Answered requests a thread queues before it tallies them itself (HotMetrics.answered); the
# flusher (every METRICS_FLUSH_SECONDS) and every scrape tally whatever is queued first.
TALLY_EVERY = 256
_OUTCOME = operator.attrgetter("allowed", "reason")  # a decision's key in the decisions counter
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _Shard:
    """One thread's tallies, written by that thread only (so no increment is ever lost), and its
    queue of answered requests, which any thread may tally (:meth:`HotMetrics._tally`)."""

    __slots__ = ("counts", "hists", "answered")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], float] = {}
        self.hists: dict[tuple[str, ...], list[float]] = {}  # labels → [count per bucket..., sum]
        # Answered decision requests not tallied yet (HotMetrics.answered): appended by this thread,
        # taken by whichever thread tallies (deque.append and popleft are atomic)
        self.answered: deque[_Answered] = deque()


# (decisions, decision histogram key, seconds deciding, request histogram key, seconds answering)
_Answered = tuple[Sequence[Any], tuple[str, ...], float, tuple[str, ...], float]


class HotMetrics(Collector):
    """The per-request counters and histograms, as plain per-thread tallies merged at scrape.

    prometheus_client's own instruments lock on every update: measured in-process, a labelled
    child's ``inc`` 1.3 µs and ``observe`` 2.0 µs, three of them a request (~5 µs, more than the
    decision's engine call). Here an update is a dict increment in the calling thread's shard
    (~0.2 µs); ``collect`` sums the shards into the same Prometheus families (names, labels,
    buckets) for ``generate_latest``.
    """

    def __init__(
        self,
        counters: Mapping[str, tuple[str, Sequence[str]]],
        histograms: Mapping[str, tuple[str, Sequence[str]]],
        buckets: Sequence[float],
        decisions: str = "",
    ) -> None:
        self._decisions = decisions  # the counter :meth:`answered` counts in, labelled (result, reason)
        self._counters = dict(counters)  # name → (help, label names)
        self._histograms = dict(histograms)
        self._buckets = tuple(buckets)
        self._local = threading.local()
        self._shards: list[_Shard] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flushed: dict[tuple[str, ...], list[float]] = {}  # key → the totals already in the files
        self._files: dict[tuple[str, ...], list[Any]] = {}  # key → prometheus_client values (mmap'd)
        # What the answered requests added up to, written only under _tally_lock: authz_decisions by
        # reason (result=allow, result=deny: a string key, no tuple per decision), and histograms
        self._tally_lock = threading.Lock()
        # (allowed, reason) → decisions: counted by Counter.update over an attrgetter map, both in C
        # (a Python loop over a batch's decisions cost ~0.25 µs a decision, ~28 µs a batch of 100)
        self._outcomes: collections.Counter[tuple[bool, str]] = collections.Counter()
        self._hists: dict[tuple[str, ...], list[float]] = {}

    def _shard(self) -> _Shard:
        try:
            return self._local.shard  # type: ignore[no-any-return]
        except AttributeError:
            shard = self._local.shard = _Shard()
            with self._lock:
                self._shards.append(shard)
            return shard

    def inc_each(self, name: str, labels: Iterable[tuple[str, ...]]) -> None:
        """Add 1 to counter name at each of these label values (a batch's decisions)."""
        counts = self._shard().counts
        for values in labels:
            key = (name, *values)
            counts[key] = counts.get(key, 0) + 1

    def observe(self, name: str, labels: tuple[str, ...], value: float, n: int = 1) -> None:
        """n observations of value in histogram name at these label values."""
        self._observe(self._shard().hists, (name, *labels), value, n)

    def _observe(self, hists: dict[tuple[str, ...], list[float]], key: tuple[str, ...], value: float, n: int) -> None:
        row = hists.get(key)
        if row is None:
            row = hists[key] = [0.0] * (len(self._buckets) + 2)  # buckets, +Inf, sum
        row[bisect.bisect_left(self._buckets, value)] += n  # the first bucket with value <= bound
        row[-1] += value * n

    def answered(
        self,
        decisions: Sequence[Any],
        decision_key: tuple[str, ...],
        decision_seconds: float,
        request_key: tuple[str, ...],
        request_seconds: float,
    ) -> None:
        """One answered decision request: each decision (``allowed``, ``reason``) counted by result
        and reason, the mean time of a decision observed once per decision (at ``decision_key``:
        name and labels), the request's latency once (at ``request_key``).

        What :func:`record_decisions`, :func:`observe_decision_time` and ``observe`` record, but
        queued here (one append) and tallied in bulk, every :data:`TALLY_EVERY` requests of a
        thread and before every flush or scrape: tallied one request at a time, the counting code
        and its dictionaries were cold again at each request behind a server (measured in process
        with the caches flushed between requests: 7.9 µs a single check, against 0.8 µs warm)."""
        try:
            queued = self._local.shard.answered  # _shard's lookup, inlined: one call less per request
        except AttributeError:
            queued = self._shard().answered
        queued.append((decisions, decision_key, decision_seconds, request_key, request_seconds))
        if len(queued) >= TALLY_EVERY:
            self._tally()

    def _tally(self) -> None:
        """Add up every thread's queued answered requests (any thread may call it)."""
        with self._tally_lock:
            with self._lock:
                shards = list(self._shards)
            count, hists, observe = self._outcomes.update, self._hists, self._observe
            for shard in shards:
                take = shard.answered.popleft
                for _ in range(len(shard.answered)):  # what is there now; later appends wait for the next tally
                    decisions, decision_key, decision_seconds, request_key, request_seconds = take()
                    count(map(_OUTCOME, decisions))
                    n = len(decisions)
                    observe(hists, decision_key, decision_seconds / (n or 1), n)
                    observe(hists, request_key, request_seconds, 1)

    def _totals(self) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], list[float]]]:
        self._tally()
        with self._lock:
            shards = list(self._shards)
        counts: dict[tuple[str, ...], float] = {}
        hists: dict[tuple[str, ...], list[float]] = {}
        with self._tally_lock:
            for (allowed, reason), n in self._outcomes.items():
                counts[(self._decisions, "allow" if allowed else "deny", reason)] = n
            tallied = [(key, list(row)) for key, row in self._hists.items()]
        for key, row in [*tallied, *(item for shard in shards for item in list(shard.hists.items()))]:
            acc = hists.setdefault(key, [0.0] * len(row))
            for i, v in enumerate(row):
                acc[i] += v
        for shard in shards:
            for key, v in list(shard.counts.items()):
                counts[key] = counts.get(key, 0) + v
        return counts, hists

    def _values(self, key: tuple[str, ...], histogram: bool) -> list[Any]:
        """The prometheus_client values of one series (a counter's; a histogram's buckets and sum),
        keyed as its own Counter and Histogram key them, so MultiProcessCollector merges them."""
        found = self._files.get(key)
        if found is None:
            name, labels = key[0], key[1:]
            value = prometheus_values.ValueClass
            if histogram:
                doc, names = self._histograms[name]
                found = [
                    value("histogram", name, f"{name}_bucket", (*names, "le"), (*labels, _le(b)), doc)
                    for b in (*self._buckets, float("inf"))
                ]
                found.append(value("histogram", name, f"{name}_sum", tuple(names), labels, doc))
            else:
                doc, names = self._counters[name]
                found = [value("counter", name, f"{name}_total", tuple(names), labels, doc)]
            self._files[key] = found
        return found

    def flush(self) -> None:
        """Add what this process counted since the last flush to prometheus_client's values (in
        multiprocess mode its files, which every worker's scrape merges). Totals only grow, so
        what a scrape reads never goes backwards."""
        with self._flush_lock:
            counts, hists = self._totals()
            rows = [(key, [v], False) for key, v in counts.items()]
            rows += [(key, row, True) for key, row in hists.items()]
            for key, row, histogram in rows:
                done = self._flushed.get(key)
                if done == row:
                    continue
                for value, now, before in zip(self._values(key, histogram), row, done or [0.0] * len(row), strict=True):
                    if now != before:
                        value.inc(now - before)
                self._flushed[key] = list(row)

    def collect(self) -> Iterable[Metric]:
        counts, hists = self._totals()
        for name, (doc, labels) in self._counters.items():
            fam = CounterMetricFamily(name, doc, labels=list(labels))
            for key, v in sorted(counts.items()):
                if key[0] == name:
                    fam.add_metric(list(key[1:]), v)
            yield fam
        bounds = [*(_le(b) for b in self._buckets), "+Inf"]
        for name, (doc, labels) in self._histograms.items():
            hfam = HistogramMetricFamily(name, doc, labels=list(labels))
            for key, row in sorted(hists.items()):
                if key[0] == name:
                    cumulative, total = [], 0.0
                    for le, c in zip(bounds, row[:-1], strict=True):
                        total += c
                        cumulative.append((le, total))
                    hfam.add_metric(list(key[1:]), cumulative, row[-1])
            yield hfam


class _WorkerGauges:
    """This worker's gauges in multiprocess mode, written to its own files at each flush.

    ``authz_policy_revision`` is ``livemin``: the revision every live worker has reached (a
    lagging worker shows, a dead one drops out); the process metrics are ``liveall``: one series per
    live worker, labelled ``pid``. Created in the worker that writes them (never in a preloading
    master, whose zero would be a live minimum forever).
    """

    def __init__(self) -> None:
        self.revision = Gauge(
            "authz_policy_revision",
            "Lowest policy revision among the live workers' engines.",
            multiprocess_mode="livemin",
            registry=None,
        )
        self._process = ProcessCollector(registry=None)
        self._gauges: dict[str, Gauge] = {}

    def update(self, revision: int | None) -> None:
        if revision is not None:
            self.revision.set(revision)
        for family in self._process.collect():  # CPU seconds, RSS, open fds, start time
            for sample in family.samples:
                gauge = self._gauges.get(sample.name)
                if gauge is None:
                    gauge = self._gauges[sample.name] = Gauge(
                        sample.name, family.documentation, multiprocess_mode="liveall", registry=None
                    )
                gauge.set(sample.value)


@dataclass
class Observability:
    """The per-app metrics registry and its instruments."""

    registry: CollectorRegistry  # what /metrics renders
    hot: HotMetrics  # authz_decisions, authz_decision_seconds, authz_http_request_seconds
    revision: Gauge | None  # single process only (multiprocess: _WorkerGauges)
    policy_edits: Counter
    multiprocess_dir: str | None = None
    worker_gauges: _WorkerGauges | None = None
    worker_pid: int = 0


DECISIONS = "authz_decisions"
DECISION_SECONDS = "authz_decision_seconds"
REQUEST_SECONDS = "authz_http_request_seconds"


def _version() -> str:
    try:
        return importlib.metadata.version("learnauthz")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"  # a checkout that was never installed


def _multiprocess_values() -> None:
    """prometheus_client picks its value class from the environment when first imported; a
    process that imported it before the server set the directory switches here, once."""
    if prometheus_values.ValueClass is prometheus_values.MutexValue:
        prometheus_values.ValueClass = prometheus_values.MultiProcessValue()  # type: ignore[no-untyped-call]


def init_app(app: Flask) -> Observability:
    """Create the app's registry and instruments, and the request-id hooks (once per app)."""
    existing = app.extensions.get("observability")
    if isinstance(existing, Observability):
        return existing
    app.config.setdefault("DECISION_LOG_SAMPLE", 0.0)
    path = os.environ.get(MULTIPROC_ENV) or None
    registry = CollectorRegistry(auto_describe=True)
    hot = HotMetrics(
        {DECISIONS: ("Decisions answered, by result and reason.", ("result", "reason"))},
        {
            DECISION_SECONDS: ("Time to decide one check (resolution + engine), in seconds.", ("endpoint",)),
            REQUEST_SECONDS: ("HTTP request latency of the API, in seconds.", ("endpoint", "status")),
        },
        LATENCY_BUCKETS,
        DECISIONS,
    )
    revision: Gauge | None = None
    if path is None:
        registry.register(hot)
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, RSS, open fds, start time
        revision = Gauge("authz_policy_revision", "Policy revision of this process's engine.", registry=registry)
    else:
        _multiprocess_values()
        # every worker's files, summed at scrape
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    # Once per scrape, from the worker answering it: they are the same in every worker.
    PlatformCollector(registry=registry)  # python_info
    Info("learnauthz_build", "Version of the installed learnauthz package.", registry=registry).info(
        {"version": _version()}
    )
    edits = Counter(
        "authz_policy_edits", "Policy edits applied, by kind.", ["kind"], registry=None if path else registry
    )
    obs = Observability(registry=registry, hot=hot, revision=revision, policy_edits=edits, multiprocess_dir=path)
    app.extensions["observability"] = obs
    app.before_request(_start_request)
    app.after_request(_finish_request)
    return obs


def _engine_revision(app: Flask) -> int | None:
    authz = app.extensions.get("authz")
    if authz is None:
        return None
    with app.app_context():  # the runtime keys its engines by app (a flush runs outside requests)
        return int(authz.engine.revision) if authz.loaded else None


def flush(app: Flask) -> None:
    """Multiprocess mode: write what this worker counted, its policy revision and its process
    metrics to its files (no-op in single-process mode)."""
    obs = app.extensions.get("observability")
    if not isinstance(obs, Observability) or obs.multiprocess_dir is None:
        return
    obs.hot.flush()
    if obs.worker_gauges is None or obs.worker_pid != os.getpid():
        obs.worker_gauges, obs.worker_pid = _WorkerGauges(), os.getpid()
    obs.worker_gauges.update(_engine_revision(app))


class Flusher:
    """A worker's background flush every ``METRICS_FLUSH_SECONDS``; :meth:`stop` flushes once more."""

    def __init__(self, app: Flask, interval: float) -> None:
        self._app = app
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                flush(self._app)
            except Exception:  # noqa: BLE001 - a full disk must not end the worker; the next flush retries
                log.exception("metrics not written to the multiprocess directory")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 1.0)
        flush(self._app)


def start_flusher(app: Flask) -> Flusher | None:
    """In a server's worker, after fork: start its flush thread (None in single-process mode)."""
    obs = init_app(app)
    if obs.multiprocess_dir is None:
        return None
    flush(app)  # the worker's process metrics and revision from its first moment
    return Flusher(app, float(app.config.get("METRICS_FLUSH_SECONDS", 1.0)))


def prepare_multiprocess_dir() -> str | None:
    """At server start, once (not per worker): empty the configured ``PROMETHEUS_MULTIPROC_DIR``,
    or create a private temporary one and set the variable, so counters start at zero with the
    server and no operator has to configure anything. Returns the private directory (the server
    removes it at exit: :func:`remove_private_dir`), else None. Calling it again in the same
    process (gunicorn re-reads its config on HUP) changes nothing."""
    prepared = os.environ.get(_PREPARED_ENV, "")
    pid, _, private = prepared.partition(":")
    path = os.environ.get(MULTIPROC_ENV)
    if path and pid == str(os.getpid()):
        return path if private == "1" else None
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
        os.environ[_PREPARED_ENV] = f"{os.getpid()}:0"
        return None
    path = tempfile.mkdtemp(prefix="learnauthz-metrics-")
    os.environ[MULTIPROC_ENV] = path
    os.environ[_PREPARED_ENV] = f"{os.getpid()}:1"
    return path


def remove_private_dir(path: str | None) -> None:
    """At server exit: remove the private directory :func:`prepare_multiprocess_dir` created."""
    if path:
        shutil.rmtree(path, ignore_errors=True)


def mark_worker_dead(pid: int) -> None:
    """A worker exited: its live gauges leave the merge (gunicorn's ``child_exit``)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _forget_dead_workers(path: str) -> None:
    """Drop the live gauges of workers that are gone (granian respawns a worker without a hook)."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = os.path.basename(name)[: -len(".db")].rpartition("_")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            mark_process_dead(int(pid), path)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, another user's


def get() -> Observability:
    """The current app's instruments (initialising them if needed)."""
    return init_app(current_app._get_current_object())  # type: ignore[attr-defined]


def request_id() -> str:
    """The current request's id: the caller's X-Request-ID if safe, else a generated one."""
    return request_id_of(request.environ)


def request_id_of(environ: dict[str, Any]) -> str:
    """The id of the request with this WSGI environ (kept there, decided once)."""
    # Kept in the WSGI environ, not in flask.g: g belongs to the app context, which can outlive
    # one request (tests, CLI) and would leak an id into the next request.
    rid = environ.get(_ENV_ID)
    if rid is None:
        raw = environ.get("HTTP_X_REQUEST_ID")
        rid = raw if raw and _REQUEST_ID.fullmatch(raw) else _new_request_id()
        environ[_ENV_ID] = rid
    return rid


class _RequestIds:
    """32 hex digits: a random per-process prefix and a counter (unique without a system call per
    request: ``os.urandom(16).hex()`` cost 1.1 µs a request); a forked child draws a new prefix."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_new_request_id = _RequestIds()


def _start_request() -> None:
    request.environ[_ENV_STARTED] = time.perf_counter()
    request_id()


def _finish_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = request_id()
    started = request.environ.get(_ENV_STARTED)
    endpoint = request.endpoint or "unmatched"
    if started is not None and endpoint.startswith(("decision.", "policy.")):
        obs = get()
        obs.hot.observe(REQUEST_SECONDS, (endpoint, str(response.status_code)), time.perf_counter() - started)
    return response


def record_decisions(outcomes: Sequence[tuple[bool, str]], obs: Observability | None = None) -> None:
    """Count decisions by result and reason."""
    (obs or get()).hot.inc_each(DECISIONS, (("allow" if allowed else "deny", reason) for allowed, reason in outcomes))


def observe_decision_time(endpoint: str, seconds: float, n: int = 1, obs: Observability | None = None) -> None:
    """Record per-decision latency; a batch records its mean once per item."""
    (obs or get()).hot.observe(DECISION_SECONDS, (endpoint,), seconds / max(n, 1), n)


def _no_email(subject: Any) -> Any:
    """A subject named by email is logged as ``email`` (personal data stays out of INFO)."""
    return "email" if isinstance(subject, str) and "@" in subject else subject


def log_decisions(entries: Iterable[Mapping[str, Any]]) -> int:
    """Write sampled decisions as one JSON line each (a subject asked about by email appears as
    ``email``, ids as given); returns how many were written."""
    rate = float(current_app.config.get("DECISION_LOG_SAMPLE", 0.0) or 0.0)
    if rate <= 0.0 or not decision_log.isEnabledFor(logging.INFO):
        return 0
    rid = request_id()
    written = 0
    for entry in entries:
        if rate < 1.0 and random.random() >= rate:  # noqa: S311 - sampling, not security
            continue
        line = {"event": "decision", "request_id": rid, "ts": round(time.time(), 6), **entry}
        if "subject" in line:
            line["subject"] = _no_email(line["subject"])
        decision_log.info(json.dumps(line, separators=(",", ":"), sort_keys=True, default=str))
        written += 1
    return written


def metrics_response() -> Response:
    """The Prometheus text exposition: this process's, or every worker's in multiprocess mode."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    obs = init_app(app)
    if obs.multiprocess_dir is not None:
        flush(app)  # this worker's counts are exact in its own answer
        _forget_dead_workers(obs.multiprocess_dir)
    elif obs.revision is not None:
        revision = _engine_revision(app)
        if revision is not None:
            obs.revision.set(revision)
    return Response(generate_latest(obs.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
