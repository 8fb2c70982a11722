"""The labeling web app: the page at ``/`` and the JSON API it (and scripts) use.

Every error is ``{"error": kind, "detail": ...}`` like ``serve``'s: 404 unknown image, 409
a round cannot start now, 422 a label the store refuses (a character outside
``--charset``, an empty label) or a bad parameter.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import socket
from importlib import resources
from typing import Annotated, Literal

from fastapi import FastAPI, Query
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.label.queue import ORDERS
from captcha_ocr.label.rounds import RoundBusy
from captcha_ocr.label.session import LabelSession
from captcha_ocr.label.store import LabelError, UnknownImage
from captcha_ocr.serve.errors import ApiError, install_error_handlers
from captcha_ocr.version import __version__

log = logging.getLogger(__name__)

STATIC = resources.files("captcha_ocr.label") / "static"
MAX_QUEUE = 1000  # items one queue call returns at most
Order = Literal["mix", "least", "most", "random"]
assert set(Order.__args__) == set(ORDERS)  # one list of orders: queue.ORDERS


class QueueItem(BaseModel):
    id: str = Field(description="The image's id (stable: from its path in the folder).")
    path: str = Field(description="The image's path, relative to the images folder.")
    suggestion: str | None = Field(description="What the latest model reads; null: no model.")
    confidence: float | None = Field(description="The model's probability of the suggestion.")


class Queue(BaseModel):
    items: list[QueueItem]


class LabelBody(BaseModel):
    label: str = Field(description="The captcha's text (every character in --charset, if set).")


class LabelOut(BaseModel):
    id: str
    label: str | None = Field(description="The label; null when the image is unlabeled.")


class RoundStarted(BaseModel):
    round: int = Field(description="The number the round will have when it finishes.")


class RoundStatus(BaseModel):
    number: int = Field(description="Finished rounds.")
    state: Literal["idle", "training", "failed"]
    error: str = Field(description="Why the last round failed ('' unless state is failed).")
    warning: str = Field(description="Why the latest model is marked not usable ('' if usable).")
    model: str | None = Field(description="The run folder of the latest finished round.")
    accuracy: float | None = Field(
        description="Its exact accuracy on labeled images held back from its training."
    )
    labels_used: int = Field(description="Labels the latest finished round used.")
    val_images: int = Field(description="Held-back images the accuracy is measured on.")
    seconds: float | None = Field(description="How long the latest finished round took.")
    started: float | None = Field(description="When the round training now started (epoch s).")


class SuggestionStatus(BaseModel):
    model: str | None = Field(description="The model the suggestions come from.")
    count: int
    refreshing: bool = Field(description="True while a new model reads the unlabeled images.")


class Status(BaseModel):
    total: int = Field(description="Images in the folder that can be labeled.")
    labeled: int
    skipped: int = Field(description="Images that cannot be read (see /v1/skipped).")
    labels_per_minute: float
    round_size: int
    next_round_at: int = Field(description="A round starts when labeled reaches this.")
    round: RoundStatus
    suggestions: SuggestionStatus
    charset: str | None
    labels_file: str


class SkippedItem(BaseModel):
    path: str
    reason: str


class Skipped(BaseModel):
    items: list[SkippedItem]


ERRORS = {
    404: {"description": "No image with this id"},
    422: {"description": "The label is refused (its detail says why)"},
}


def create_app(session: LabelSession) -> FastAPI:
    """The app over one session; the session's background work runs while the app does.

    >>> app = create_app(LabelSession(settings))   # doctest: +SKIP
    >>> # then: uvicorn.run(app), or fastapi.testclient.TestClient(app)
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        session.start()
        yield
        session.close()

    app = FastAPI(
        title="captcha-ocr label",
        version=__version__,
        description=f"Label the captchas of {session.settings.images}; the page is at /.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    def image_call(func, *args):
        try:
            return func(*args)
        except UnknownImage as error:
            raise ApiError(404, "unknown_image", str(error)) from None
        except LabelError as error:
            raise ApiError(422, "invalid_label", str(error)) from None

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/v1/queue", summary="The next unlabeled images, in queue order", response_model=Queue)
    def queue(
        limit: Annotated[int, Query(ge=1, le=MAX_QUEUE)] = 20,
        order: Annotated[Order | None, Query(description="Override the order policy.")] = None,
    ) -> dict:
        return {"items": session.queue(limit, order)}

    @app.get("/v1/images/{image_id}", summary="An image's bytes", responses={404: ERRORS[404]})
    def image(image_id: str) -> FileResponse:
        found = image_call(session.store.image, image_id)
        kind = mimetypes.guess_type(found.path)[0] or "application/octet-stream"
        return FileResponse(found.path, media_type=kind, headers={"Cache-Control": "no-cache"})

    @app.get("/v1/labels/{image_id}", summary="An image's label", response_model=LabelOut)
    def get_label(image_id: str) -> dict:
        return {"id": image_id, "label": image_call(session.store.label, image_id)}

    @app.put(
        "/v1/labels/{image_id}",
        summary="Label an image (durable when this answers)",
        response_model=LabelOut,
        responses=ERRORS,
    )
    def put_label(image_id: str, body: LabelBody) -> dict:
        return {"id": image_id, "label": image_call(session.save, image_id, body.label)}

    @app.delete(
        "/v1/labels/{image_id}",
        summary="Un-label an image",
        response_model=LabelOut,
        responses={404: ERRORS[404]},
    )
    def delete_label(image_id: str) -> dict:
        image_call(session.remove, image_id)
        return {"id": image_id, "label": None}

    @app.post(
        "/v1/rounds",
        summary="Start a training round now",
        status_code=202,
        response_model=RoundStarted,
        responses={409: {"description": "A round is training, or there are too few labels"}},
    )
    def start_round() -> dict:
        try:
            return {"round": session.rounds.start()}
        except RoundBusy as error:
            raise ApiError(409, "round_busy", str(error)) from None
        except CaptchaOCRError as error:  # the round's folder could not be written
            raise ApiError(500, "round_not_started", str(error)) from None

    @app.get("/v1/status", summary="Progress, the rounds and the model", response_model=Status)
    def status() -> dict:
        return session.status()

    @app.get("/v1/skipped", summary="Images that cannot be read", response_model=Skipped)
    def skipped() -> dict:
        return {"items": session.skipped()}

    return app


def check_port(host: str, port: int) -> None:
    """Fail with a clear message when ``host:port`` cannot be listened on."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise CaptchaOCRError(
                f"cannot listen on {host}:{port}: {error.strerror or error} (is another app "
                "using the port? choose another with --port)"
            ) from None


def run_app(session: LabelSession, host: str, port: int) -> None:
    """Serve the labeling app until interrupted."""
    import uvicorn

    check_port(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"labeling {len(session.store.images)} images of {session.settings.images} "
        f"({session.store.labeled_count()} labeled) at http://{shown}:{port}/\n"
        f"labels: {session.store.csv_path}   rounds: {session.settings.work_dir}",
        flush=True,
    )
    uvicorn.run(create_app(session), host=host, port=port, log_level="warning")
