"""The FastAPI app for one model (loaded once per worker), and the uvicorn server around it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from captcha_ocr.config import ServeSettings
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.infer import Reader
from captcha_ocr.serve.errors import BodyLimitMiddleware, install_error_handlers
from captcha_ocr.serve.schemas import ERROR_RESPONSES, READ_OPENAPI, Health, ModelInfo, ReadResponse
from captcha_ocr.serve.service import ReadService

log = logging.getLogger(__name__)

# With several workers, uvicorn starts each one from an import string, so the model and the
# settings reach :func:`app_from_environment` through these variables.
MODEL_ENV = "CAPTCHA_OCR_SERVE_MODEL"
SETTINGS_ENV = "CAPTCHA_OCR_SERVE_SETTINGS"
# The "try a model" page at GET /: one self-contained HTML file shipped in the package.
TRY_PAGE = "try.html"


def create_app(model: str | os.PathLike | Reader, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app for one model, loaded here once (never per request).

    ``model``: a run folder, an ``.onnx`` file or a loaded :class:`~captcha_ocr.infer.Reader`.

    >>> app = create_app("runs/latest")  # doctest: +SKIP
    >>> # then: uvicorn.run(app), or fastapi.testclient.TestClient(app)
    """
    settings = settings or ServeSettings()
    reader = model if isinstance(model, Reader) else Reader.load(model, settings.threads or 1)
    service = ReadService(reader, settings)
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
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

    page = resources.files(__package__).joinpath(TRY_PAGE).read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def try_page() -> HTMLResponse:
        """A page to try the model in a browser: drop, paste or pick images."""
        return HTMLResponse(page)

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
