"""Dynamic batching: inputs of requests that arrive together share one model call.

One model call on 32 inputs costs far less than 32 calls on one (the graph's fixed costs are
paid once and the matrix products run wider), so under concurrent load the server gathers
inputs for up to ``max_wait`` seconds or ``max_batch`` inputs. The model runs in one worker
thread, so the event loop keeps accepting and decoding requests while it computes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Batcher", "BatchStats"]


@dataclass
class BatchStats:
    """What the batcher did since it started: requests, inputs, model calls and their sizes."""

    requests: int = 0
    inputs: int = 0
    model_calls: int = 0
    batch_sizes: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        mean = self.inputs / self.model_calls if self.model_calls else 0.0
        return {"requests": self.requests, "inputs": self.inputs, "model_calls": self.model_calls,
                "mean_batch": round(mean, 3), "largest_batch": max(self.batch_sizes, default=0),
                "batch_sizes": {str(size): n for size, n in sorted(self.batch_sizes.items())}}


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future
    arrived: float


class Batcher:
    """Queues inputs from any number of requests; one task runs them through ``run_batch`` (a
    list of inputs to one row of probabilities each) in batches, and gives each request its rows."""

    def __init__(self, run_batch: Callable[[list], np.ndarray], max_batch: int, max_wait: float) -> None:
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait
        self.stats = BatchStats()
        self._pending: deque[_Pending] = deque()
        self._arrived: asyncio.Event | None = None  # made in start(): an event belongs to one loop
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the worker task (in the server's event loop)."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="headstart-model")
        self._arrived = asyncio.Event()
        self._worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop the worker; inputs still queued fail instead of waiting forever."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._pending:
            entry = self._pending.popleft()
            if not entry.future.done():
                entry.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    async def submit(self, items: Sequence[Any]) -> list[np.ndarray]:
        """The probabilities of each input, in order, once the batches holding them have run."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        entries = [_Pending(item, loop.create_future(), now) for item in items]
        self._pending.extend(entries)
        self.stats.requests += 1
        self._arrived.set()
        return list(await asyncio.gather(*(entry.future for entry in entries)))

    async def _loop(self) -> None:
        while True:
            await self._gathered()
            batch = self._take()
            if batch:
                await self._run(batch)

    async def _gathered(self) -> None:
        """Return once an input waits and either the batch is full or the oldest input has
        waited ``max_wait`` (inputs queued while the model ran have waited already)."""
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = self._pending[0].arrived + self.max_wait
        while len(self._pending) < self.max_batch and (remaining := deadline - loop.time()) > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _take(self) -> list[_Pending]:
        """Up to ``max_batch`` queued inputs, oldest first, skipping those whose request is gone."""
        batch: list[_Pending] = []
        while self._pending and len(batch) < self.max_batch:
            entry = self._pending.popleft()
            if not entry.future.done():
                batch.append(entry)
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(self._executor, self.run_batch, [entry.item for entry in batch])
        except Exception as exc:  # noqa: BLE001 - the requests of this batch fail; the server keeps serving
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            return
        self.stats.model_calls += 1
        self.stats.inputs += len(batch)
        self.stats.batch_sizes[len(batch)] += 1
        for entry, row in zip(batch, rows):
            if not entry.future.done():
                entry.future.set_result(row)
