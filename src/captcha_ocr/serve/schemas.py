"""The shapes of requests, answers and errors: pydantic models that also make the OpenAPI page
at ``/docs``, and the OpenAPI text of ``POST /v1/read`` (which takes JSON or multipart, so
FastAPI cannot derive it from a signature)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Beam search is pure Python and its cost grows with the width: cap it so that one request
# cannot hold a worker for seconds. Widths past ~10 rarely change a captcha's reading.
MAX_BEAM_WIDTH = 32


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
    min_confidence: Annotated[float, Field(ge=0.0, le=1.0)] | Literal["recommended"] | None = Field(
        None,
        description="A reading below this confidence has text null and rejected true; "
        "'recommended': the model's own threshold, chosen at export for 99 % precision on "
        "its validation images, or the highest they allow (see GET /v1/model).",
    )
    positions: bool | None = Field(
        None,
        description="True: each result also says where each character was read "
        "(positions, time_steps). Off by default.",
    )


class ReadJSON(ReadOptions):
    """The JSON form of a read request."""

    images: list[str] = Field(
        description="Base64-encoded image files (PNG, JPEG, ...), read in this order."
    )


class CharPosition(BaseModel):
    """Where one character of the text was read."""

    char: str = Field(description="The character.")
    steps: list[int] = Field(
        description="The CTC time steps that emitted it, ascending (0 to time_steps - 1)."
    )
    span: tuple[float, float] = Field(
        description="[left, right): the part of the image's width those steps cover, as "
        "fractions of the width (0: left edge, 1: right edge)."
    )


class ReadResult(BaseModel):
    text: str | None = Field(description="What was read; null when rejected.")
    confidence: float = Field(description="The model's probability of the text (0 to 1).")
    rejected: bool = Field(description="True when confidence < min_confidence.")
    positions: list[CharPosition] | None = Field(
        None,
        description="Only with positions=true: one entry per character of text, in order; "
        "null when rejected. Greedy decoding: the steps of the best path; beam search: of "
        "the text's most probable path.",
    )
    time_steps: int | None = Field(
        None, description="Only with positions=true: how many CTC time steps the model reads."
    )


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
    not_usable: str = Field(
        "",
        description="Why training judged this model not usable (it did not learn); '' if usable.",
    )
    recommended_min_confidence: float | None = Field(
        None,
        description="The reject threshold chosen at export (99 % precision on the validation "
        "images, or the highest they allow); what min_confidence=recommended uses. null: the export chose none.",
    )
    limits: Limits


def option_schemas() -> dict[str, dict[str, Any]]:
    """The fields of :class:`ReadOptions` as OpenAPI schemas, for query and form fields."""
    schemas = {}
    for name, prop in ReadOptions.model_json_schema()["properties"].items():
        schema = next(s for s in prop["anyOf"] if s.get("type") != "null")
        schemas[name] = {**schema, "description": prop["description"]}
    return schemas


READ_OPENAPI = {
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in option_schemas().items()
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
                        **option_schemas(),
                    },
                }
            },
        },
    },
}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed JSON, multipart body or base64."},
    413: {"model": ErrorBody, "description": "Body, image bytes, pixels or image count too large."},
    415: {"model": ErrorBody, "description": "A file that is not an image, or a wrong body type."},
    422: {"model": ErrorBody, "description": "A bad parameter, or no images."},
}
