"""Background responses: durable jobs that any gateway replica runs (``background: true``).

Protocol (OpenAI Responses background mode, docs/responses-api.md §1-§3):

* Create (``routes/background.py``) stores the response ``queued``, its job (the request's
  ``GenerateRequest`` and normalised body) and the event ``response.queued`` (sequence 0),
  in one transaction, and answers at once.
* Every replica runs a :class:`BackgroundRunner`: one loop that, every
  ``--event-poll-interval-s`` (at once after a local create), (1) watches the jobs this
  replica owns: renews their leases every third of ``--job-lease-s`` and reacts to cancel
  requests and lost leases; (2) claims queued jobs, and running jobs whose lease expired,
  up to ``--background-workers`` at a time (``store.claim_jobs``).
* A claimed job (:class:`JobRun`) is decided from its row and its event log:
  already final -> settle; cancel requested -> cancelled; a stored stream whose replica
  died, a job whose log already holds output, or more than ``--job-max-attempts``
  claims -> failed (``job_endings.py``); otherwise it runs: status ``in_progress`` plus
  ``response.created``/``response.in_progress`` (those not logged yet), then Generate,
  each event logged as produced, and the final response, its last events and the job's
  end written in one fenced transaction. A re-run therefore only ever happens when no
  output had been logged, and it continues the same log: a replayed stream is valid. The
  generation itself is the one driver's (``driver.run``), with the job as its sink.
* Cancel: the owner sees the flag within one poll interval, cancels its gRPC call (the
  service aborts the engine request) and stores ``cancelled``. A lost lease stops the
  job without writing anything (its new owner decides). On shutdown the runner stops
  claiming, gives running jobs ``--shutdown-timeout-s`` and abandons the rest to lease
  expiry.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time

import grpc

from trtllm_responses.inference.v1 import inference_pb2 as pb

from . import driver, generation, job_endings
from .errors import ApiError, to_api_error
from .event_log import EventLog, JobLost
from .events import PAGE, LogHub, Registration
from .objects import stored
from .request import parse_create
from .store import FINAL_STATUSES, Job, JobOwner, StoredResponse, StoreError
from .streaming import StreamState, finalize

log = logging.getLogger("trtllm_gateway.background")

SPEC_VERSION = 1  # of the job spec written at create
END_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, None)  # a job's final write: retries, then give up


def job_spec(body: dict, g: generation.Generation) -> dict:
    """What a replica needs to run the job: the normalised request and the exact Generate."""
    body = {k: v for k, v in body.items() if k not in ("background", "stream")}
    body["input"] = g.req.input.items
    return {"version": SPEC_VERSION, "body": body, "before": [item for item in g.state.output if item],
            "generate": base64.b64encode(g.request.SerializeToString()).decode()}


class BackgroundRunner:
    """Claims and runs jobs on this replica (see the module docstring)."""

    def __init__(self, gw, hub: LogHub) -> None:
        self.gw, self.hub, self.store, self.settings = gw, hub, hub.store, gw.settings
        self.runs: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._renewed = 0.0
        self._claiming = True
        self._idle_polls = 0  # polls in a row that owned nothing and claimed nothing

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop())

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, timeout: float) -> None:
        """Stop claiming; let running jobs finish (leases still renewed) for ``timeout``."""
        self._claiming = False
        if self.runs:
            await asyncio.wait(list(self.runs.values()), timeout=timeout)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for rid, task in list(self.runs.items()):  # abandoned: the lease expires, another replica decides
            self.hub.unregister(rid)
            task.cancel()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            for step in (self._watch, self._claim):
                try:
                    await step()
                except StoreError:
                    log.warning("background %s failed", step.__name__, exc_info=True)
                except Exception:
                    log.exception("background %s failed", step.__name__)
            self._idle_polls = 0 if self.hub.owned or self.runs else self._idle_polls + 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_poll())
            if self._wake.is_set():
                self._idle_polls = 0

    def _next_poll(self) -> float:
        """``--event-poll-interval-s`` while this process owns a job (its cancel requests and
        lease need it); when idle, doubled per empty poll up to ``--claim-backoff-max-s`` (at
        most a third of ``--job-lease-s``): an idle process then polls the store once every
        2 s by default instead of five times a second. A local create or cancel wakes the
        loop at once; what waits is only a queued job of another, busy process and an
        orphaned job, which waits for its lease to expire anyway."""
        base = self.settings.event_poll_interval_s
        ceiling = max(base, min(self.settings.claim_backoff_max_s, self.settings.job_lease_s / 3))
        return min(base * 2 ** min(max(self._idle_polls - 1, 0), 16), ceiling)

    async def _watch(self) -> None:
        attempts = {rid: reg.attempt for rid, reg in self.hub.owned.items()}
        if not attempts:
            return
        renew = time.monotonic() - self._renewed >= self.settings.job_lease_s / 3
        watch = await self.store.watch_jobs(self.hub.replica, attempts, self.hub.lease_ms if renew else None)
        if renew:
            self._renewed = time.monotonic()
        for rid, react in [(r, "on_lost") for r in watch.lost] + [(r, "on_cancel") for r in watch.cancel]:
            reg = self.hub.owned.get(rid)
            if reg is not None and reg.attempt == attempts[rid] and getattr(reg, react) is not None:
                getattr(reg, react)()

    async def _claim(self) -> None:
        free = self.settings.background_workers - len(self.runs)
        if free <= 0 or not self._claiming:
            return
        for job in await self.store.claim_jobs(self.hub.replica, free, self.hub.lease_ms):
            self.launch(job)

    def launch(self, job: Job) -> None:
        """Run a claimed job (also a job the cancel endpoint claimed) in its own task."""
        run = JobRun(self, job)
        task = asyncio.create_task(run.main())
        self.runs[job.response_id] = task
        self.hub.register(job.response_id, Registration(job.attempt, lambda: run.interrupt("lost"),
                                                        lambda: run.interrupt("cancel")))

        def done(_task: asyncio.Task) -> None:
            if self.runs.get(job.response_id) is task:
                del self.runs[job.response_id]
                self.hub.unregister(job.response_id)

        task.add_done_callback(done)


class JobRun:
    """One claim of one job, from decision to its last fenced write."""

    def __init__(self, runner: BackgroundRunner, job: Job) -> None:
        self.runner, self.job, self.gw = runner, job, runner.gw
        self.log = EventLog(runner.hub, job.response_id, owner=JobOwner(runner.hub.replica, job.attempt))
        self.reason: str | None = None    # why the task was cancelled: "cancel" | "lost"
        self.state: StreamState | None = None  # once the record is read
        self.g: generation.Generation | None = None  # once generation is prepared
        self.logged: list[dict] = []      # the log: as found at the claim plus what this run wrote
        self.live = False                 # self.state holds the generated items (no replay needed)
        self.record: StoredResponse | None = None
        self.next_seq = 0
        self.abandoned: tuple[dict, list[dict]] | None = None  # the driver's cancelled ending

    @property
    def _st(self) -> StreamState:
        assert self.state is not None, "the state exists once the record is read"
        return self.state

    @property
    def _rec(self) -> StoredResponse:
        assert self.record is not None, "the record is read first"
        return self.record

    def interrupt(self, reason: str) -> None:
        task = self.runner.runs.get(self.job.response_id)
        if self.reason is None and task is not None:
            self.reason = reason
            task.cancel()

    async def main(self) -> None:
        try:
            await self._decide_and_run()
        except asyncio.CancelledError:
            if self.reason != "cancel" or self.state is None:
                return  # lost lease or shutdown: write nothing, the next owner decides
            ending = self.abandoned or job_endings.cancelled(self.state, self._replay())
            with contextlib.suppress(JobLost, StoreError):
                await self._end(*ending)
        except JobLost:
            log.info("job %s went to another replica", self.job.response_id)
        except StoreError:  # the store is failing: stop; once the lease expires a replica recovers it
            log.exception("background job %s: store error", self.job.response_id)
        except Exception as exc:
            log.exception("background job %s failed", self.job.response_id)
            if self.state is not None:
                with contextlib.suppress(JobLost, StoreError):
                    await self._fail(to_api_error(exc).message)

    def _replay(self) -> list[dict]:
        return [] if self.live else self.logged

    async def _read_log(self) -> list[dict]:
        events: list[dict] = []
        after = -1
        while True:
            page = await self.runner.store.read_events(self.job.response_id, self.job.tenant, after, PAGE)
            if page is None:
                return events
            events += [json.loads(e.payload) for e in page.events]
            if len(page.events) < PAGE:
                return events
            after = page.events[-1].sequence_number

    async def _decide_and_run(self) -> None:
        job = self.job
        self.record = await self.runner.store.get(job.response_id, job.tenant)
        if self.record is None:
            return  # deleted: its job went with it
        self.logged = await self._read_log()
        self.next_seq = self.logged[-1]["sequence_number"] + 1 if self.logged else 0
        response = dict(self.record.response, status="in_progress")
        self.state = StreamState(response, dialect=self.gw.settings.reasoning_dialect,
                                 seal=job_endings.sealer(self.gw.settings.reasoning_key, job.tenant, job.spec))
        if self.record.status in FINAL_STATUSES:
            return await self._write(job_endings.settled(self.record.response, self.logged), None, True)
        if job.cancel_requested:
            return await self._end(*job_endings.cancelled(self._st, self.logged))
        problem = self._problem()
        if problem is not None:
            return await self._fail(problem)
        await self._generate()

    def _problem(self) -> str | None:
        if self.job.kind == "stream":
            return job_endings.MESSAGES["stream"]
        if job_endings.has_output(self.logged):
            return job_endings.MESSAGES["interrupted"]
        if self.job.attempt > self.gw.settings.job_max_attempts:
            return job_endings.MESSAGES["attempts"].format(n=self.job.attempt - 1)
        return None

    def _number(self, events: list[dict]) -> list[dict]:
        for event in events:
            event["sequence_number"] = self.next_seq
            self.next_seq += 1
        if not self.live:  # a live run's items are in self.state: its log is not kept in memory too
            self.logged += events
        return events

    async def _write(self, events: list[dict], record: StoredResponse | None, done: bool) -> None:
        await self.log.finish(self._number(events), record=record, done=done)

    async def _fail(self, message: str) -> None:
        await self._end(*job_endings.failed(self._st, self.logged, message, self._replay()))

    async def _end(self, resp: dict, events: list[dict]) -> None:
        """The job's last write: final events, final response, job done (fenced). Store
        errors are retried (same events, same numbers) while the lease is still renewed."""
        record = self._record(resp)
        events = self._number(events)
        for delay in END_RETRY_DELAYS_S:
            try:
                return await self.log.finish(events, record=record, done=True)
            except StoreError:
                if delay is None:
                    raise
                log.warning("job %s: final write failed, retrying", self.job.response_id)
                events = []  # the log re-queued them
                await asyncio.sleep(delay)

    def _record(self, resp: dict) -> StoredResponse:
        rec = self._rec
        return stored(resp, rec.tenant, rec.input_items, rec.previous_response_id)

    async def _prepare(self) -> generation.Generation:
        """The Generation as create built it: same request, same Generate, same response id."""
        spec = self.job.spec
        req = parse_create(spec["body"])
        g = await generation.prepare(self.gw, req, self.job.tenant, time.perf_counter(), history=[],
                                     before=spec.get("before", []))  # a compaction item, made at create
        g.request = pb.GenerateRequest.FromString(base64.b64decode(spec["generate"]))
        g.state.response = self._st.response  # the stored object: id, created_at, background
        return g

    async def _generate(self) -> None:
        g = await self._prepare()
        self.state, self.live = g.state, True
        await self._write(job_endings.missing_opening(g.state, self.logged),
                          self._record(dict(g.state.response)), False)
        self.g = g
        try:
            await driver.run(self.gw, g, self, opening=False, foreground=False)
        except (grpc.aio.AioRpcError, ApiError) as exc:  # refused at the start: failed, with the reason
            resp, closing = finalize(g.state, error=to_api_error(exc).message)
            await driver.finish_hooks(self.gw, g, resp)
            await self._end(resp, closing)

    # The driver's sink (driver.Sink): events go to the job's log as they come.
    committed = True

    async def open(self) -> None:
        pass

    async def send(self, events: list[dict]) -> None:
        self.log.add(self._number(events))

    async def persist(self, resp: dict, closing: list[dict]) -> list[dict]:
        await self._end(resp, closing)
        return []

    async def deliver(self, closing: list[dict]) -> None:
        pass  # followers read the log

    def abandon(self, resp: dict, closing: list[dict]) -> None:
        self.abandoned = (resp, closing)  # main() writes it when a cancel request stopped the job
