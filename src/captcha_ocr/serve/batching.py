"""Micro-batching: the images of concurrent requests share one model call."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass

import numpy as np

from captcha_ocr.infer import Reader


@dataclass
class _Job:
    pixels: np.ndarray  # (n, H, W, C) uint8, n <= max_batch
    future: asyncio.Future
    arrived: float  # event-loop time


class MicroBatcher:
    """Runs the model once for the images of concurrent requests.

    A request is counted from the moment its images start decoding. A batch waits for the
    requests on their way (never for ones that may come) until ``max_batch`` images are
    queued or the oldest has waited ``wait_s``: a lone request never waits. While
    the model runs, new requests queue up and form the next batch. With ``wait_s == 0`` every
    request gets its own model call. The model runs in ``executor`` (one thread).
    """

    def __init__(
        self,
        reader: Reader,
        executor: concurrent.futures.Executor,
        wait_s: float,
        max_batch: int,
    ) -> None:
        self.reader = reader
        self.executor = executor
        self.wait_s = wait_s
        self.max_batch = max_batch
        self._jobs: deque[_Job] = deque()
        self._queued = 0  # images in _jobs
        self._incoming = 0  # requests decoding their images, to be submitted soon
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._arrived = asyncio.Event()  # a job is queued
        self._go = asyncio.Event()  # the batch is full, or no more requests are on the way

    async def log_probs(self, images: Awaitable[np.ndarray]) -> np.ndarray:
        """Await ``images`` (a request's decoding, ``(n, H, W, C)`` uint8), then run the model on
        them with other requests' images: -> ``(n, T, classes)`` log-probabilities."""
        self._incoming += 1
        try:
            pixels = await images
        finally:
            self._incoming -= 1
            if self._incoming == 0:
                self._go.set()  # the batch being filled need not wait for anyone else
        loop = asyncio.get_running_loop()
        if self.wait_s <= 0:
            return await loop.run_in_executor(self.executor, self.reader.log_probs, pixels)
        self._start(loop)
        futures = []
        for start in range(0, len(pixels), self.max_batch):
            part = pixels[start : start + self.max_batch]
            futures.append(loop.create_future())
            self._jobs.append(_Job(part, futures[-1], loop.time()))
            self._queued += len(part)
        self._arrived.set()
        if self._queued >= self.max_batch or self._incoming == 0:
            self._go.set()
        parts = await asyncio.gather(*futures) if len(futures) > 1 else [await futures[0]]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the batching task on this event loop (a test client may use several loops)."""
        if self._task is not None and self._loop is loop and not self._task.done():
            return
        self._loop = loop
        self._jobs.clear()
        self._queued = 0
        self._arrived, self._go = asyncio.Event(), asyncio.Event()
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            delay = self._jobs[0].arrived + self.wait_s - loop.time()
            if delay > 0 and self._queued < self.max_batch and self._incoming > 0:
                self._go.clear()
                timer = loop.call_later(delay, self._go.set)
                try:
                    await self._go.wait()
                finally:
                    timer.cancel()
            jobs = self._take()
            if jobs:
                await self._run_model(jobs)

    def _take(self) -> list[_Job]:
        """The oldest jobs, up to ``max_batch`` images; jobs whose client left are dropped."""
        jobs: list[_Job] = []
        size = 0
        while self._jobs and size + len(self._jobs[0].pixels) <= self.max_batch:
            job = self._jobs.popleft()
            self._queued -= len(job.pixels)
            if not job.future.done():
                jobs.append(job)
                size += len(job.pixels)
        return jobs

    async def _run_model(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        try:
            batch = np.concatenate([j.pixels for j in jobs]) if len(jobs) > 1 else jobs[0].pixels
            output = await loop.run_in_executor(self.executor, self.reader.log_probs, batch)
        except Exception as error:  # handed to each request, which answers 500 and logs it
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        start = 0
        for job in jobs:
            end = start + len(job.pixels)
            if not job.future.done():
                job.future.set_result(output[start:end])
            start = end
