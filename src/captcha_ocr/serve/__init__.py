"""The HTTP service: a thin FastAPI layer over one :class:`~captcha_ocr.infer.Reader` per worker.

A request to ``POST /v1/read`` flows through these modules:

1. :mod:`.errors`: the body limit refuses a body from its ``Content-Length``, and counts its
   bytes again as they arrive;
2. :mod:`.service`: parse JSON ``{"images": [base64, ...]}`` or multipart files in the field
   ``image``, and the options (:mod:`.schemas` says what they look like); decode the images in
   a thread pool (:func:`captcha_ocr.images.open_image` refuses an image with too many pixels
   from its header, before decoding it);
3. :mod:`.batching`: the images of concurrent requests share one model call, in a thread;
4. :mod:`.service` again: CTC decoding per request (its own ``allowed_chars`` and
   ``beam_width``) -> JSON.

:mod:`.app` puts the routes together and runs uvicorn; every limit and its default is in
:class:`~captcha_ocr.config.ServeSettings`. Every error is
``{"error": "<kind>", "detail": "<what is wrong>"}`` with a real status code: 400 malformed body
or base64, 413 over a limit, 415 not an image, 422 bad parameter.
"""

from captcha_ocr.config import ServeSettings
from captcha_ocr.serve.app import (
    MODEL_ENV,
    SETTINGS_ENV,
    app_from_environment,
    create_app,
    run_server,
)
from captcha_ocr.serve.batching import MicroBatcher
from captcha_ocr.serve.errors import ApiError

__all__ = [
    "MODEL_ENV",
    "SETTINGS_ENV",
    "ApiError",
    "MicroBatcher",
    "ServeSettings",
    "app_from_environment",
    "create_app",
    "run_server",
]
