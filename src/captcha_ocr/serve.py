"""The HTTP service: a thin FastAPI layer over one :class:`~captcha_ocr.infer.Reader` per worker.

A request to ``POST /v1/read`` flows through this file top to bottom:

1. body limit: refused from its ``Content-Length``, and counted again as bytes arrive;
2. parse: JSON ``{"images": [base64, ...]}`` or multipart files in the field ``image``;
3. decode the images in a thread pool (:func:`captcha_ocr.images.open_image` refuses an image
   with too many pixels from its header, before decoding it);
4. :class:`MicroBatcher`: the images of concurrent requests share one model call, in a thread;
5. CTC decoding per request (each its own ``allowed_chars`` and ``beam_width``) -> JSON.

Every error is ``{"error": "<kind>", "detail": "<what is wrong>"}`` with a real status code:
400 malformed body or base64, 413 over a limit, 415 not an image, 422 bad parameter.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.images import ImageLoadError, ImageTooLargeError, open_image
from captcha_ocr.infer import Prediction, Reader

log = logging.getLogger(__name__)

# With several workers, uvicorn starts each one from an import string, so the model and the
# settings reach :func:`app_from_environment` through these variables.
MODEL_ENV = "CAPTCHA_OCR_SERVE_MODEL"
SETTINGS_ENV = "CAPTCHA_OCR_SERVE_SETTINGS"

# Beam search is pure Python and its cost grows with the width: cap it so that one request
# cannot hold a worker for seconds. Widths past ~10 rarely change a captcha's reading.
MAX_BEAM_WIDTH = 32

# JSON bodies larger than this are parsed in a thread, so the event loop keeps serving.
JSON_IN_THREAD_BYTES = 256_000


@dataclass(frozen=True)
class ServeSettings:
    """What one server worker does and accepts. The limits suit captchas (a few KB each)."""

    # ONNX Runtime threads per worker. None: 1, because ONNX Runtime's own default (one per
    # core, spin-waiting) starves the event loop: measured on 2 cores, a read then costs 1.6x
    # the CPU time. Use more workers to use more cores.
    threads: int | None = None
    batch_wait_ms: float = 2.0  # longest a request waits to share a model call; 0: no batching
    max_batch: int = 64  # most images in one model call
    max_image_bytes: int = 2_000_000  # encoded bytes of one image (after base64 decoding)
    max_images: int = 64  # images in one request
    max_pixels: int = 4_000_000  # width x height of one image, checked from its header
    max_body_bytes: int = 20_000_000  # whole request body (base64 adds a third to each image)

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be >= 1 (got {getattr(self, name)})"
            for name in (
                "max_batch",
                "max_image_bytes",
                "max_images",
                "max_pixels",
                "max_body_bytes",
            )
            if getattr(self, name) < 1
        ]
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be >= 1 (got {self.threads})")
        if not self.batch_wait_ms >= 0:  # also refuses NaN
            problems.append(f"batch_wait_ms must be >= 0 (got {self.batch_wait_ms})")
        if problems:
            raise CaptchaOCRError("serve settings: " + "; ".join(problems))


# --- request and response shapes (they also make the OpenAPI page at /docs) ------------------


class ReadOptions(BaseModel):
    """How to read: the same fields in a JSON body, as form fields or as query parameters."""

    model_config = ConfigDict(extra="forbid")

    allowed_chars: str | None = Field(
        None,
        min_length=1,
        description="Only these characters may be read; each must be in the model's charset.",
    )
    beam_width: int | None = Field(
        None,
        ge=1,
        le=MAX_BEAM_WIDTH,
        description="1 (default): greedy decoding; more: CTC beam search with that width.",
    )
    min_confidence: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="A reading below this confidence has text null and rejected true.",
    )


class ReadJSON(ReadOptions):
    """The JSON form of a read request."""

    images: list[str] = Field(
        description="Base64-encoded image files (PNG, JPEG, ...), read in this order."
    )


class ReadResult(BaseModel):
    text: str | None = Field(description="What was read; null when rejected.")
    confidence: float = Field(description="The model's probability of the text (0 to 1).")
    rejected: bool = Field(description="True when confidence < min_confidence.")


class ReadResponse(BaseModel):
    model: str
    version: str
    results: list[ReadResult] = Field(description="One per image, in request order.")


class ErrorBody(BaseModel):
    error: str = Field(description="The kind of problem, e.g. invalid_base64, not_an_image.")
    detail: str = Field(description="What is wrong and, where it helps, what to send instead.")


class Health(BaseModel):
    status: str = Field(description='"ok" once the model is loaded.')
    ready: bool
    model: str


class Limits(BaseModel):
    max_images: int
    max_image_bytes: int
    max_pixels: int
    max_body_bytes: int
    max_beam_width: int


class ModelInfo(BaseModel):
    name: str
    charset: str = Field(description="The characters the model can read; class i+1 is charset[i].")
    height: int
    width: int
    channels: int
    blank_index: int
    max_label_length: int
    preset: str
    version: str
    limits: Limits


def _option_schemas() -> dict[str, dict[str, Any]]:
    """The fields of :class:`ReadOptions` as OpenAPI schemas, for query and form fields."""
    schemas = {}
    for name, prop in ReadOptions.model_json_schema()["properties"].items():
        schema = next(s for s in prop["anyOf"] if s.get("type") != "null")
        schemas[name] = {**schema, "description": prop["description"]}
    return schemas


READ_OPENAPI = {
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in _option_schemas().items()
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ReadJSON.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Image files (repeat the field), read in this order.",
                        },
                        **_option_schemas(),
                    },
                }
            },
        },
    },
}


# --- errors ------------------------------------------------------------------------------------


class ApiError(Exception):
    """A client's mistake: answered with ``status`` and ``{"error": kind, "detail": detail}``."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


def error_response(status: int, kind: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status)


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    """Pydantic's error list -> ``"beam_width: Input should be ... ; ..."``."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("query", "body")]
        parts.append(f"{'.'.join(loc) or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or FastAPI's, gets the same JSON shape."""

    async def api_error(_request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.kind, error.detail)

    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_parameter", _validation_detail(list(error.errors())))

    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        response = error_response(error.status_code, kind, str(error.detail))
        if error.headers:
            response.headers.update(error.headers)
        return response

    async def internal_error(_request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error", exc_info=error)
        return error_response(500, "internal_error", "the server failed; see its log")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


class BodyLimitMiddleware:
    """ASGI middleware: refuse a body over ``max_bytes`` from its Content-Length, before reading
    it, and count the bytes of every body as they arrive (chunked bodies have no length)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = error_response(413, "body_too_large", self._detail(int(value)))
                await response(scope, receive, send)
                return
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError(413, "body_too_large", self._detail(received))
            return message

        await self.app(scope, counting_receive, send)

    def _detail(self, size: int) -> str:
        return f"the request body ({size:,} bytes) is over the limit of {self.max_bytes:,} bytes"


# --- micro-batching ------------------------------------------------------------------------------


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


# --- the app -------------------------------------------------------------------------------------


class _Service:
    """The per-worker state behind the routes: reader, settings, thread pools, batcher."""

    def __init__(self, reader: Reader, settings: ServeSettings) -> None:
        self.reader = reader
        self.settings = settings
        self.open()
        # A base64 string longer than this decodes to more than max_image_bytes, even with line
        # breaks (MIME wraps at 76 characters) and a data: URL prefix: refused undecoded.
        self.max_base64_chars = (4 * settings.max_image_bytes // 3) * 103 // 100 + 256

    def open(self) -> None:
        """Start the thread pools and the batcher (again, after :meth:`close`: a server or a
        test client may run the app's lifespan more than once)."""
        # Image decoding (Pillow releases the GIL while it decodes) and beam search.
        self.cpu_pool = concurrent.futures.ThreadPoolExecutor(
            max(2, os.cpu_count() or 2), thread_name_prefix="decode"
        )
        self.model_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
        self.batcher = MicroBatcher(
            self.reader,
            self.model_pool,
            self.settings.batch_wait_ms / 1000,
            self.settings.max_batch,
        )
        self.closed = False

    def close(self) -> None:
        self.batcher.close()
        self.cpu_pool.shutdown(wait=False, cancel_futures=True)
        self.model_pool.shutdown(wait=False, cancel_futures=True)
        self.closed = True

    def model_info(self) -> dict[str, Any]:
        spec, limits = self.reader.spec, self.settings
        return {
            "name": self.reader.name,
            "charset": spec.charset,
            "height": spec.height,
            "width": spec.width,
            "channels": spec.channels,
            "blank_index": spec.blank_index,
            "max_label_length": spec.max_label_length,
            "preset": spec.preset,
            "version": spec.version,
            "limits": {
                "max_images": limits.max_images,
                "max_image_bytes": limits.max_image_bytes,
                "max_pixels": limits.max_pixels,
                "max_body_bytes": limits.max_body_bytes,
                "max_beam_width": MAX_BEAM_WIDTH,
            },
        }

    async def read(self, request: Request) -> dict[str, Any]:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "application/json" or media_type.endswith("+json"):
            sources, given = await self._parse_json(request)
        elif media_type == "multipart/form-data":
            sources, given = await self._parse_multipart(request)
        else:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"send application/json or multipart/form-data, not {media_type or 'no type'!r}",
            )
        options = self._options(request, given)
        if not sources:
            raise ApiError(422, "no_images", "the request has no images")
        if len(sources) > self.settings.max_images:
            raise ApiError(
                413,
                "too_many_images",
                f"{len(sources)} images is over the limit of {self.settings.max_images} a request",
            )
        log_probs = await self.batcher.log_probs(self._load_images(sources))  # (n, T, classes)
        beam_width = options.beam_width or 1
        if beam_width > 1:
            loop = asyncio.get_running_loop()
            predictions = await loop.run_in_executor(
                self.cpu_pool, self.reader.decode, log_probs, beam_width, options.allowed_chars
            )
        else:
            predictions = self.reader.decode(log_probs, 1, options.allowed_chars)
        return {
            "model": self.reader.name,
            "version": self.reader.spec.version,
            "results": [self._result(p, options.min_confidence) for p in predictions],
        }

    @staticmethod
    def _result(prediction: Prediction, min_confidence: float | None) -> dict[str, Any]:
        rejected = min_confidence is not None and prediction.confidence < min_confidence
        return {
            "text": None if rejected else prediction.text,
            "confidence": prediction.confidence,
            "rejected": rejected,
        }

    def _options(self, request: Request, given: dict[str, Any]) -> ReadOptions:
        """Query parameters, overridden by the same fields in the body (``given``).

        (Parsed here rather than by a FastAPI query model, which costs a sixth of the event
        loop's time per request.)
        """
        merged: dict[str, Any] = {}
        for name, value in request.query_params.multi_items():
            if name in merged:
                raise ApiError(422, "invalid_parameter", f"{name}: given more than once")
            merged[name] = value
        merged.update(given)
        try:
            options = ReadOptions.model_validate(merged)
        except ValidationError as error:
            raise ApiError(
                422, "invalid_parameter", _validation_detail(list(error.errors()))
            ) from None
        if options.allowed_chars is not None:
            unknown = self.reader.charset.unknown(options.allowed_chars)
            if unknown:
                raise ApiError(
                    422,
                    "invalid_parameter",
                    f"allowed_chars has characters the model cannot output: {unknown!r} "
                    f"(its charset is {self.reader.charset.chars!r})",
                )
        return options

    async def _parse_json(self, request: Request) -> tuple[list[str], dict[str, Any]]:
        body = await request.body()
        try:
            if len(body) > JSON_IN_THREAD_BYTES:
                loop = asyncio.get_running_loop()
                data = await loop.run_in_executor(self.cpu_pool, json.loads, body)
            else:
                data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise ApiError(
                400, "malformed_body", 'the JSON body must be an object: {"images": [...]}'
            )
        if "images" not in data:
            raise ApiError(
                400, "missing_field", 'the JSON body needs "images": a list of base64 strings'
            )
        images = data.pop("images")
        if not isinstance(images, list) or not all(isinstance(s, str) for s in images):
            raise ApiError(400, "malformed_body", '"images" must be a list of base64 strings')
        return images, data

    async def _parse_multipart(self, request: Request) -> tuple[list[bytes], dict[str, Any]]:
        limit = self.settings.max_images
        try:
            # Past these counts the parser stops reading: answered below as too many images.
            form = await request.form(max_files=limit + 1, max_fields=limit + 16)
        except StarletteHTTPException as error:
            if "Too many files" in str(error.detail):
                raise ApiError(
                    413, "too_many_images", f"over the limit of {limit} images a request"
                ) from None
            raise ApiError(400, "malformed_body", f"bad multipart body: {error.detail}") from None
        try:
            images: list[bytes] = []
            given: dict[str, Any] = {}
            for name, value in form.multi_items():
                if name == "image":
                    if not isinstance(value, UploadFile):
                        raise ApiError(
                            400, "malformed_body", 'the field "image" must be a file, not text'
                        )
                    if value.size is not None and value.size > self.settings.max_image_bytes:
                        raise self._too_many_bytes(len(images), value.size)
                    images.append(await value.read())
                elif name in ReadOptions.model_fields:
                    if name in given:
                        raise ApiError(422, "invalid_parameter", f"{name}: given more than once")
                    if isinstance(value, UploadFile):
                        raise ApiError(
                            422, "invalid_parameter", f"{name}: must be text, not a file"
                        )
                    given[name] = value
                else:
                    raise ApiError(
                        422,
                        "invalid_parameter",
                        f"unknown field {name!r}: send files as 'image' and options as "
                        + ", ".join(ReadOptions.model_fields),
                    )
            return images, given
        finally:
            await form.close()

    def _too_many_bytes(self, index: int, size: int, about: str = "") -> ApiError:
        return ApiError(
            413,
            "image_too_large",
            f"images[{index}] is {about}{size:,} bytes, over the limit of "
            f"{self.settings.max_image_bytes:,}",
        )

    async def _load_images(self, sources: list[bytes] | list[str]) -> np.ndarray:
        """Decode every image in the thread pool; the first bad one (in order) is the error."""
        for index, source in enumerate(sources):
            if isinstance(source, str) and len(source) > self.max_base64_chars:
                raise self._too_many_bytes(index, len(source) * 3 // 4, "about ")
        loop = asyncio.get_running_loop()
        loaded = await asyncio.gather(
            *(
                loop.run_in_executor(self.cpu_pool, self._load_image, index, source)
                for index, source in enumerate(sources)
            ),
            return_exceptions=True,
        )
        for item in loaded:
            if isinstance(item, BaseException):
                raise item
        return np.stack(loaded)

    def _load_image(self, index: int, source: bytes | str) -> np.ndarray:
        """One image (file bytes or base64) -> ``(H, W, C)`` uint8 model input. Runs in a thread."""
        data = _decode_base64(source, index) if isinstance(source, str) else source
        if len(data) > self.settings.max_image_bytes:
            raise self._too_many_bytes(index, len(data))
        try:
            return self.reader.preprocess(open_image(data, self.settings.max_pixels))
        except ImageTooLargeError as error:
            message = str(error).removeprefix("<bytes>: ").removeprefix("<image>: ")
            raise ApiError(413, "image_too_large", f"images[{index}]: {message}") from None
        except ImageLoadError as error:
            message = str(error).removeprefix("<bytes>: ").removeprefix("<image>: ")
            raise ApiError(415, "not_an_image", f"images[{index}]: {message}") from None
        except (OSError, ValueError) as error:  # a mode Pillow cannot convert, ...
            raise ApiError(
                415, "not_an_image", f"images[{index}]: unreadable image ({error})"
            ) from None


def _decode_base64(text: str, index: int) -> bytes:
    """Standard base64 (a ``data:image/...;base64,`` prefix and line breaks are allowed)."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(
            400, "invalid_base64", f"images[{index}] is not valid base64 ({error})"
        ) from None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed JSON, multipart body or base64."},
    413: {"model": ErrorBody, "description": "Body, image bytes, pixels or image count too large."},
    415: {"model": ErrorBody, "description": "A file that is not an image, or a wrong body type."},
    422: {"model": ErrorBody, "description": "A bad parameter, or no images."},
}


def create_app(model: str | os.PathLike | Reader, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app for one model, loaded here once (never per request).

    ``model``: a run folder, an ``.onnx`` file or a loaded :class:`~captcha_ocr.infer.Reader`.

    >>> app = create_app("runs/latest")  # doctest: +SKIP
    >>> # then: uvicorn.run(app), or fastapi.testclient.TestClient(app)
    """
    settings = settings or ServeSettings()
    reader = model if isinstance(model, Reader) else Reader.load(model, settings.threads or 1)
    service = _Service(reader, settings)
    spec = reader.spec
    log.info(
        "serving %s: %s preset, %dx%d, charset %r; batch wait %g ms, up to %d images a call",
        reader.name,
        spec.preset,
        spec.width,
        spec.height,
        spec.charset,
        settings.batch_wait_ms,
        settings.max_batch,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if service.closed:
            service.open()
        yield
        service.close()

    app = FastAPI(
        title="captcha-ocr",
        version=spec.version,
        description=f"Reads captchas with the model {reader.name!r} (charset {spec.charset!r}).",
        lifespan=lifespan,
    )
    app.state.service = service
    _install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

    @app.get(
        "/healthz",
        summary="Liveness and readiness (the model is loaded before serving)",
        response_model=Health,
    )
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "ready": True, "model": reader.name}

    @app.get(
        "/v1/model",
        summary="The model: charset, input size, blank index, version, limits",
        response_model=ModelInfo,
    )
    async def model_info() -> dict[str, Any]:
        return service.model_info()

    @app.post(
        "/v1/read",
        summary="Read one or more captchas",
        response_model=ReadResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=READ_OPENAPI,
    )
    async def read(request: Request) -> JSONResponse:
        """Images as multipart files (field ``image``, repeatable) or as JSON base64 strings.
        Options go in the JSON body, as form fields or as query parameters (the body wins)."""
        return JSONResponse(await service.read(request))

    return app


def app_from_environment() -> FastAPI:
    """The app factory uvicorn calls in each worker process (see :func:`run_server`)."""
    model = os.environ.get(MODEL_ENV)
    if not model:
        raise CaptchaOCRError(f"{MODEL_ENV} is not set: start the server with captcha-ocr serve")
    settings = ServeSettings(**json.loads(os.environ.get(SETTINGS_ENV, "{}")))
    return create_app(model, settings)


def run_server(
    model: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    settings: ServeSettings | None = None,
) -> None:
    """Serve ``model`` with uvicorn until interrupted; each worker loads the model once."""
    import uvicorn

    settings = settings or ServeSettings()
    if workers < 1:
        raise CaptchaOCRError(f"--workers must be >= 1 (got {workers})")
    if workers == 1:
        uvicorn.run(create_app(model, settings), host=host, port=port, log_level="info")
        return
    Reader.load(model, threads=1)  # a bad model fails here, once, not in every worker
    os.environ[MODEL_ENV] = os.path.abspath(model)
    os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    uvicorn.run(
        "captcha_ocr.serve:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )
