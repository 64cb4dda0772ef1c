"""The streaming worker: document events from a Redis stream, latency first, at-least-once delivery
with an exactly-once effect.

One loop, one batch at a time:

    claim (XAUTOCLAIM, entries idle > claim_idle_ms: dead or stuck consumers, or our own failures)
      or read new entries (XREADGROUP ``>``; up to max_batch_size, lingering at most max_wait_ms
      after the first one for others to join)
    -> validate each entry (invalid: dead-lettered with the reason)
    -> collapse: several events of one document keep only the highest version (ties: the first)
    -> resolve documents: ``content`` parsed in place, ``uri`` read through the batch sources
       (a document that cannot be read or parsed is dead-lettered with the reason)
    -> read the routing record (routing.py): the targets of this batch, each warmed up (a target
       refused, e.g. an alias or a missing active collection, holds the batch like an invalid record)
    -> for each target: DocumentIndexer.index(upserts) (one batched model call) and .delete(...)
       through the version ledger, exactly as batch writes
    -> per document, the first (active) target decides (outcomes.py): its failure is
       dead-lettered; a secondary target's failure alone is recorded in that target's repair set
       (before acknowledging); acknowledge the rest (XACK) after the writes returned, in one
       MULTI/EXEC with the dead-letter XADDs.

Failures:
- an exception while writing to the active target (Milvus or Redis unavailable) is transient (one
  in a secondary target fails the batch's documents there, into its repair set): the whole batch is retried
  with exponential backoff (tenacity); the ledger makes a retry idempotent. When the retries run
  out the entries stay pending, so XAUTOCLAIM (after claim_idle_ms) or a restart redelivers them,
  and an entry that fails on its max_deliveries-th delivery is dead-lettered with the error;
- an entry delivered more than max_deliveries times without being acknowledged (its consumers
  crashed on it) is dead-lettered without another attempt.
Superseded and unchanged results are successes: the index already holds something newer or equal.

The loop is one class on purpose (about 400 lines): reading, claiming, handling, retrying and
settling a batch share the delivery guarantees above, and are easier to check read together. What
it writes to (targets opened, cached and closed by routing record) is streaming/targets.py's TargetSet;
the documents events carry are streaming/documents.py's.

Starting: warm_up() retries Redis and Milvus while they are unreachable (capped back-off, one log
line per attempt) for warm_up_timeout_s (0: forever), so a worker started before them does not
crash-loop; a stop() during warm-up ends it at once (StoppedDuringWarmUp). In the loop, Redis
connection errors and transient error replies (READONLY after a failover, OOM, LOADING, BUSY,
MASTERDOWN) back off and retry; any other error reply is fatal.

Stopping: ``stop()`` (SIGTERM/SIGINT through ``lifecycle.install_signal_handlers``) makes the loop stop
reading (a batch lingering for late joiners goes at once), finish and acknowledge the batch in
flight, and return; a watchdog ends the process if that takes longer than drain_timeout_s (the
entries are then redelivered to another consumer). The report's ``drained`` is true only when
nothing this consumer read was left unacknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from tenacity import Retrying, retry_if_exception, wait_exponential

from tributary_workers.contract.routing import RoutingError, RoutingRecord, read_routing, record_repairs
from tributary_workers.documents import (
    Document,
    DocumentError,
)
from tributary_workers.errors import one_line
from tributary_workers.pipeline.parsers import Parser
from tributary_workers.streaming.config import StreamConfig
from tributary_workers.streaming.decisions import (
    backoff_delay,
    collapse,
    dead_letter_after_failure,
    dead_letter_cause,
    exhausted_deliveries,
    latency_seconds,
    transient_redis_reply,
)
from tributary_workers.streaming.events import Event, EventError, event_from_fields
from tributary_workers.streaming.queue import DeadLetter, Entry, GroupState, RedisStream
from tributary_workers.streaming.report import (
    BATCH_SECONDS,
    BATCH_SIZE,
    DEAD_LETTERED,
    EVENTS,
    LAG,
    LATENCY,
    PENDING,
    RECLAIMED,
    RESULT_OF_STATUS,
    RETRIES,
    TRIMMED,
    Handled,
    StreamReport,
)
from tributary_workers.streaming.generation import Generations
from tributary_workers.streaming.outcomes import (
    DocOutcome,
    TargetResult,
    apply_to_targets,
    classify,
    repairs_by_collection,
)
from tributary_workers.streaming.documents import EventDocuments
from tributary_workers.streaming.targets import TargetSet, WriteTarget, stage_settings
from tributary_workers.streaming.warmup import Retrier, StoppedDuringWarmUp, WarmUpTimeout, redacted

__all__ = ["StoppedDuringWarmUp", "StreamWorker", "WarmUpTimeout"]

log = logging.getLogger("tributary.stream")

DEAD_LETTERED_RESULT = "dead_lettered"
LINGER_POLL_S = 0.001  # poll interval while a batch's first entry waits for others (max_wait_ms)


# --- the worker ---------------------------------------------------------------------------------


class _Transient(Exception):
    """A batch failed with an error worth retrying later; wraps the last error."""


class _Held(Exception):
    """The batch is held back (invalid routing record while stopping): leave it pending."""


class StreamWorker:
    def __init__(self, config: StreamConfig, observer: Callable[[list[Handled]], None] | None = None):
        self.config = config
        self.observer = observer
        self.report = StreamReport()
        self.parser = Parser(config.parser)
        self.documents = EventDocuments(self.parser)
        self.stream: RedisStream | None = None
        self.targets = TargetSet(config)
        self._stop = threading.Event()
        self._deadline: float | None = None
        self.generations = Generations()
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_maintenance = 0.0
        self._failures = 0
        self._held = False  # a batch was left pending while stopping (routing record invalid)
        names = config.names
        self._labels = (names.stream, names.group)

    # -- set-up ----------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Connect to Redis, load the model, open the write targets. Redis or Milvus unreachable
        (not yet started, failing over) is retried with capped back-off until warm_up_timeout_s,
        one log line per attempt; a stop() meanwhile raises StoppedDuringWarmUp at once."""
        cfg = self.config
        self.stream = RedisStream.from_url(cfg.redis_url, cfg.names, block_ms=cfg.block_ms,
                                           dead_letter_maxlen=cfg.dead_letter_maxlen)
        until_ready = Retrier(cfg.warm_up_timeout_s, cfg.retry_initial_s, cfg.failure_backoff_max_s, self._stop)
        redis_at = f"Redis at {redacted(cfg.redis_url)}"
        until_ready(redis_at, lambda: (self.stream.client.ping(), self.stream.ensure_group()))
        self.parser.warm_up()
        self.targets.stages(stage_settings(None, cfg))
        record = until_ready(redis_at, self._routing_at_warm_up)
        if record is None:
            # The configured collection: unreachable Milvus is retried; another dimension is fatal.
            (target,) = self._targets(None)
            until_ready(f"Milvus at {redacted(cfg.milvus_uri)}", target.warm_up)
            return
        self.generations.warm(self._targets(record))

    def _routing_at_warm_up(self) -> RoutingRecord | None:
        try:
            return read_routing(self.stream.client, self.config.index)
        except RoutingError as exc:
            log.error("%s; not consuming until it is fixed", exc)
            return None

    def _targets(self, record: RoutingRecord | None) -> list[WriteTarget]:
        targets = self.targets.of(record)
        self.generations.routed_to(record.generation if record else 0, targets)
        return targets

    # -- the loop --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading; the batch in flight is finished and acknowledged before run() returns."""
        if not self._stop.is_set():
            self._deadline = time.monotonic() + self.config.drain_timeout_s
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> StreamReport:
        import redis

        try:
            self._recover_own_pending()
        except redis.RedisError as exc:  # XAUTOCLAIM picks them up later
            log.warning("cannot read this consumer's pending entries: %s", one_line(exc))
        while not self._stop.is_set():
            try:
                self._maintain()
                entries = self._claim() or self._read()
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    log.warning("the consumer group disappeared; creating it again")
                    self._ensure_group_again()
                    continue
                if not transient_redis_reply(str(exc), type(exc).__name__):
                    raise
                self._back_off(f"redis: {one_line(exc)}")  # READONLY after a failover, OOM, LOADING...
                continue
            except redis.RedisError as exc:
                self._back_off(f"redis: {one_line(exc)}")
                continue
            if entries:
                self._handle(entries)
        self._maintain(force=True)
        self.report.drained = self._nothing_left_pending()
        return self.report

    def _ensure_group_again(self) -> None:
        import redis

        try:
            self.stream.ensure_group()
        except redis.RedisError as exc:
            self._back_off(f"cannot create the consumer group: {one_line(exc)}")

    def _nothing_left_pending(self) -> bool:
        """Drained truthfully: no batch held back, and nothing this consumer read left unacknowledged
        (a batch whose retries or drain timeout ran out). False when Redis cannot tell."""
        if self._held:
            return False
        try:
            return self.stream.own_pending(self.config.consumer) == 0
        except Exception as exc:
            log.warning("cannot tell whether entries are left pending: %s", one_line(exc))
            return False

    def _recover_own_pending(self) -> None:
        """Entries this consumer name read before a restart and never acknowledged."""
        after = "0-0"
        while not self._stop.is_set():
            entries = self.stream.read_own_pending(self.config.consumer, self.config.max_batch_size, after)
            if not entries:
                return
            after = entries[-1].id
            self._handle(entries)

    def _read(self) -> list[Entry]:
        cfg = self.config
        entries = self.stream.read_new(cfg.consumer, cfg.max_batch_size, cfg.block_ms)
        if not entries:
            return entries
        # Linger for late joiners with non-blocking reads: Redis serves a short BLOCK timeout only at
        # its next event-loop tick (up to 1000/hz ms, 100 ms by default), far beyond max_wait_ms.
        deadline = time.monotonic() + cfg.max_wait_ms / 1000
        while len(entries) < cfg.max_batch_size and not self._stop.is_set():  # stopping: handle what we have
            more = self.stream.read_new(cfg.consumer, cfg.max_batch_size - len(entries), None)
            if more:
                entries += more
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(remaining, LINGER_POLL_S))
        return entries

    def _claim(self) -> list[Entry]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        cfg = self.config
        self._claim_cursor, entries = self.stream.autoclaim(cfg.consumer, cfg.claim_idle_ms, self._claim_cursor,
                                                            cfg.max_batch_size)
        if self._claim_cursor in ("0-0", "0") and not entries:
            # A full scan found nothing idle: look again in a fraction of claim_idle_ms.
            self._next_claim = now + min(max(cfg.claim_idle_ms / 2000, 0.05), 5.0)
            self._claim_cursor = "0-0"
        if entries:
            RECLAIMED.inc(len(entries))
            self.report.reclaimed += len(entries)
            log.info("claimed %d idle pending entries (deliveries %s)", len(entries),
                     sorted({e.deliveries for e in entries}))
        return entries

    def _maintain(self, force: bool = False) -> None:
        """Every maintenance_interval_s: lag/pending gauges, safe trimming, the routing generation."""
        now = time.monotonic()
        if not force and now < self._next_maintenance:
            return
        self._next_maintenance = now + self.config.maintenance_interval_s
        try:
            states = self.stream.group_states()
            self._observe(states)
            _, removed = self.stream.trim(states)
            TRIMMED.inc(removed)
            if not force:
                self.generations.warm(self._targets(read_routing(self.stream.client, self.config.index)))
            self._report_generation(heartbeat=True)
        except RoutingError as exc:
            log.error("%s", exc)
        except Exception as exc:  # maintenance must never stop the loop
            log.warning("stream maintenance failed: %s", one_line(exc))

    def _observe(self, states: Sequence[GroupState]) -> None:
        for state in states:
            if state.name == self.stream.names.group:
                LAG.labels(*self._labels).set(state.lag or 0)
                PENDING.labels(*self._labels).set(state.pending)

    def _report_generation(self, heartbeat: bool = False) -> None:
        self.generations.report(self.stream.client, self.config.index, self.config.consumer, heartbeat)

    def _back_off(self, why: str) -> None:
        self._failures += 1
        delay = backoff_delay(self._failures + 1, self.config.retry_initial_s, self.config.failure_backoff_max_s)
        log.warning("%s; backing off %.2fs", why, delay)
        self._stop.wait(delay)

    # -- one batch -------------------------------------------------------------------------------

    def _handle(self, entries: list[Entry]) -> None:
        cfg = self.config
        started = time.perf_counter()
        BATCH_SIZE.observe(len(entries))
        self.report.batches += 1
        dead: list[DeadLetter] = []
        outcomes: list[Handled] = []

        candidates: list[tuple[Entry, Event]] = []
        for entry in entries:
            if exhausted_deliveries(entry.deliveries, cfg.max_deliveries):
                dead.append(DeadLetter(entry, f"delivered {entry.deliveries} times without being acknowledged "
                                              f"(max_deliveries {cfg.max_deliveries}): its consumers crashed or "
                                              "timed out on it"))
                continue
            try:
                candidates.append((entry, event_from_fields(entry.fields)))
            except EventError as exc:
                dead.append(DeadLetter(entry, f"invalid event: {exc}"))

        kept, superseded = collapse(candidates)
        upserts: list[tuple[Entry, Event, Document]] = []
        deletes: list[tuple[Entry, Event]] = []
        for entry, event in kept:
            if event.op == "delete":
                deletes.append((entry, event))
                continue
            try:
                upserts.append((entry, event, self.documents.resolve(event)))
            except DocumentError as exc:
                dead.append(DeadLetter(entry, f"document {event.doc_id!r} version {event.version}: {exc}"))
            except Exception as exc:  # a parser bug on odd input is this document's failure, not the batch's
                dead.append(DeadLetter(entry, f"document {event.doc_id!r} version {event.version}: "
                                              f"unexpected {type(exc).__name__}: {one_line(exc)}"))

        results: dict[str, list[TargetResult]] = {}
        if upserts or deletes:
            docs = [document for _, _, document in upserts]
            removals = [(event.doc_id, event.version) for _, event in deletes]
            try:
                results = self._with_retries(self._route_and_apply, docs, removals)
            except _Held:  # stopping while the routing record is broken: leave the batch pending
                self._held = True
                return
            except _Transient as exc:
                attempted = [e for e, _, _ in upserts] + [e for e, _ in deletes] + [e for e, _ in superseded]
                self._after_transient_failure(exc, attempted, dead)
                return

        acked: list[str] = []
        to_repair: list[tuple[str, int, DocOutcome]] = []
        for entry, event in [(e, ev) for e, ev, _ in upserts] + deletes:
            outcome = classify(results.get(event.doc_id, []))
            if outcome.failure is not None:
                dead.append(DeadLetter(entry, f"document {event.doc_id!r} version {event.version}: {outcome.failure}"))
                continue
            to_repair.append((event.doc_id, event.version, outcome))
            acked.append(entry.id)
            outcomes.append(Handled(entry.id, event, RESULT_OF_STATUS[outcome.active.status]))
        for entry, event in superseded:
            acked.append(entry.id)
            outcomes.append(Handled(entry.id, event, "superseded",
                                    reason="a newer version of the document was in the same batch"))

        if cfg.ack_delay_s:
            time.sleep(cfg.ack_delay_s)
        try:
            # Recorded before the acknowledgement: a crash in between redelivers, never loses.
            for collection, versions in repairs_by_collection(to_repair).items():
                self._with_retries(record_repairs, self.stream.client, cfg.index, collection, versions)
                self.report.repairs += len(versions)
            self._with_retries(self.stream.settle, acked, dead, cfg.consumer)
        except _Transient as exc:
            # Written but not acknowledged: redelivered later, and the ledger answers "unchanged".
            self.report.failed_batches += 1
            self._back_off(f"cannot acknowledge a written batch: {exc}")
            return
        self._failures = 0
        try:
            self._report_generation()
        except Exception as exc:  # informational only
            log.warning("cannot record the routing generation: %s", one_line(exc))

        now_ns = time.time_ns()
        for handled in outcomes:
            handled.latency_s = latency_seconds(handled.event, handled.entry_id, now_ns)
            LATENCY.observe(handled.latency_s)
        for item in dead:
            event = next((ev for e, ev in candidates if e is item.entry), None)
            outcomes.append(Handled(item.entry.id, event, DEAD_LETTERED_RESULT, reason=item.reason))
            DEAD_LETTERED.labels(dead_letter_cause(item.reason)).inc()
            log.warning("dead-lettered %s: %s", item.entry.id, item.reason)
        for handled in outcomes:
            EVENTS.labels(handled.result).inc()
            self.report.add(handled)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        if self.observer is not None:
            self.observer(outcomes)

    def _route_and_apply(self, docs: Sequence[Document], deletes: Sequence[tuple[str, int]]
                         ) -> dict[str, list[TargetResult]]:
        """Write one batch to the targets of the routing record read now. While the record is
        invalid the worker holds the batch (it is not the events' fault) until it is fixed."""
        while True:
            try:
                targets = self._targets(read_routing(self.stream.client, self.config.index))
                self.targets.refuse_unfit(targets)
                break
            except RoutingError as exc:
                if self._stop.is_set():
                    log.error("%s; stopping with the batch left pending", exc)
                    raise _Held() from None
                self._back_off(str(exc))
        results = apply_to_targets(targets, docs, deletes)
        self.generations.note(targets)
        return results

    def _with_retries(self, fn, *args):
        """Run fn, retrying any exception with exponential backoff; _Transient when they run out."""
        cfg = self.config

        def give_up(retry_state) -> bool:
            if retry_state.attempt_number >= cfg.retry_attempts:
                return True
            return self._deadline is not None and time.monotonic() >= self._deadline

        def before_sleep(retry_state) -> None:
            RETRIES.inc()
            self.report.retries += 1
            log.warning("attempt %d failed: %s", retry_state.attempt_number,
                        one_line(retry_state.outcome.exception()))

        def sleep(seconds: float) -> None:
            if self._deadline is not None:
                seconds = max(0.0, min(seconds, self._deadline - time.monotonic()))
            time.sleep(seconds)

        retrying = Retrying(
            stop=give_up, wait=wait_exponential(multiplier=cfg.retry_initial_s, max=cfg.retry_max_s),
            retry=retry_if_exception(lambda exc: not isinstance(exc, (_Transient, _Held, KeyboardInterrupt))),
            before_sleep=before_sleep, sleep=sleep, reraise=True,
        )
        try:
            return retrying(fn, *args)
        except (_Transient, _Held):
            raise
        except Exception as exc:
            raise _Transient(one_line(exc)) from exc

    def _after_transient_failure(self, exc: _Transient, attempted: list[Entry], dead: list[DeadLetter]) -> None:
        """Retries ran out: the last allowed delivery is dead-lettered, the rest stays pending (the
        events a batch winner superseded too: they stand or fall with it)."""
        cfg = self.config
        for entry in attempted:
            if dead_letter_after_failure(entry.deliveries, cfg.max_deliveries, transient=True):
                dead.append(DeadLetter(entry, f"failed on delivery {entry.deliveries} of {cfg.max_deliveries}: {exc}"))
        self.report.failed_batches += 1
        try:
            self.stream.settle([], dead, cfg.consumer)  # invalid and exhausted entries never succeed
            for item in dead:
                DEAD_LETTERED.labels(dead_letter_cause(item.reason)).inc()
                EVENTS.labels(DEAD_LETTERED_RESULT).inc()
                self.report.add(Handled(item.entry.id, None, DEAD_LETTERED_RESULT, reason=item.reason))
                log.warning("dead-lettered %s: %s", item.entry.id, item.reason)
        except Exception as settle_exc:
            log.warning("cannot dead-letter: %s", one_line(settle_exc))
        left = len(attempted) - sum(1 for d in dead if d.entry in attempted)
        self._back_off(f"batch failed after {cfg.retry_attempts} attempts ({exc}); {left} entries left pending "
                       f"for redelivery after {cfg.claim_idle_ms} ms")

    def close(self) -> None:
        self.targets.close()
        if self.stream is not None:
            self.stream.close()
