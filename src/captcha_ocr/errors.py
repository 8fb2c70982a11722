"""The one exception users see: a message that says what is wrong and what to do."""


class CaptchaOCRError(Exception):
    """A problem with the user's input, data, model or files.

    The CLI prints its message on one line (no traceback) and exits with status 2.
    """
