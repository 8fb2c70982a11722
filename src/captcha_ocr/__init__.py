"""captcha-ocr: learn to read captchas from labeled images; read them fast with ONNX Runtime.

Reading needs only NumPy, Pillow and ONNX Runtime:

>>> from captcha_ocr import Reader          # doctest: +SKIP
>>> reader = Reader.load("runs/20261126-101500")  # doctest: +SKIP
>>> reader.read("2b827.png").text            # doctest: +SKIP
'2b827'

Training lives in :mod:`captcha_ocr.train` (needs the ``[train]`` extra).
"""

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.infer import Prediction, Reader
from captcha_ocr.version import __version__

__all__ = ["CaptchaOCRError", "Prediction", "Reader", "__version__"]
