"""``python -m captcha_ocr.cli`` is the ``captcha-ocr`` command, as before the split."""

import sys

from captcha_ocr.cli import main

sys.exit(main())
