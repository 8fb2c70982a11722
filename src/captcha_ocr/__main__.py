"""``python -m captcha_ocr`` is the ``captcha-ocr`` command."""

import sys

from captcha_ocr.cli import main

sys.exit(main())
