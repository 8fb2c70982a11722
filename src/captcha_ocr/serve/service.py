"""One worker's reading service behind the routes: parse a request (JSON or multipart), check
its options and limits, decode its images in threads, batch them through the model, decode CTC.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import json
import os
from typing import Any

import numpy as np
from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from captcha_ocr.config import ServeSettings
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.images import ImageLoadError, ImageTooLargeError, open_image
from captcha_ocr.infer import Prediction, Reader
from captcha_ocr.serve.batching import MicroBatcher
from captcha_ocr.serve.errors import ApiError, validation_detail
from captcha_ocr.serve.schemas import MAX_BEAM_WIDTH, ReadOptions

# JSON bodies larger than this are parsed in a thread, so the event loop keeps serving.
JSON_IN_THREAD_BYTES = 256_000


class ReadService:
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
            "not_usable": self.reader.not_usable,
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
        decode_args = (log_probs, beam_width, options.allowed_chars, bool(options.positions))
        if beam_width > 1 or options.positions:
            loop = asyncio.get_running_loop()
            predictions = await loop.run_in_executor(
                self.cpu_pool, self.reader.decode, *decode_args
            )
        else:
            predictions = self.reader.decode(*decode_args)
        results = [self._result(p, options.min_confidence) for p in predictions]
        if options.positions:
            for result, prediction in zip(results, predictions):
                result["positions"] = None if result["rejected"] else _positions(prediction)
                result["time_steps"] = log_probs.shape[1]
        return {"model": self.reader.name, "version": self.reader.spec.version, "results": results}

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
                422, "invalid_parameter", validation_detail(list(error.errors()))
            ) from None
        if options.allowed_chars is not None:
            try:  # here, before the images are decoded
                self.reader.charset.check_known(options.allowed_chars, "allowed_chars")
            except CaptchaOCRError as error:
                raise ApiError(422, "invalid_parameter", str(error)) from None
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


def _positions(prediction: Prediction) -> list[dict[str, Any]]:
    """A prediction's character positions as JSON (see schemas.CharPosition)."""
    return [
        {"char": p.char, "steps": list(p.steps), "span": list(p.span)}
        for p in prediction.positions or ()
    ]


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
