"""The character set, the CTC blank and label encoding (CTC decoding is in :mod:`.decode`).

One convention everywhere: class 0 is the CTC blank, ``charset[i]`` is class ``i + 1``.
Plain Python, so that reading captchas never needs TensorFlow.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from captcha_ocr.errors import CaptchaOCRError

BLANK = 0

# The 19 characters of the reference data set (captcha_images_v2): what `captcha-ocr synth`
# draws unless told otherwise.
DEFAULT_CHARSET = "2345678bcdefgmnpwxy"


@dataclass(frozen=True)
class Charset:
    """An ordered set of characters and their CTC classes.

    >>> cs = Charset.from_labels(["b2a", "ab"])
    >>> cs.chars, cs.encode("ab2"), cs.decode([1, 2, 3])
    ('2ab', [2, 3, 1], '2ab')
    """

    chars: str

    def __post_init__(self) -> None:
        if not self.chars:
            raise CaptchaOCRError("the charset is empty: no labeled images were found")
        if len(set(self.chars)) != len(self.chars):
            raise CaptchaOCRError(f"the charset {self.chars!r} repeats a character")

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> Charset:
        """The sorted set of characters in ``labels`` (sorted, so indices never change)."""
        return cls("".join(sorted(set("".join(labels)))))

    @property
    def num_classes(self) -> int:
        """Characters plus the blank."""
        return len(self.chars) + 1

    def unknown(self, label: str) -> str:
        """Characters of ``label`` the charset cannot express, in order of appearance."""
        index = self._index
        return "".join(dict.fromkeys(c for c in label if c not in index))

    def check_known(self, text: str, what: str) -> None:
        """Raise, naming ``what``, if ``text`` has characters the charset cannot express."""
        missing = self.unknown(text)
        if missing:
            raise CaptchaOCRError(
                f"{what} has characters the model cannot output: {missing!r} "
                f"(charset {self.chars!r})"
            )

    def encode(self, label: str) -> list[int]:
        """Classes of the characters of ``label``; unknown characters are an error."""
        self.check_known(label, f"label {label!r}")
        index = self._index
        return [index[c] for c in label]

    def decode(self, classes: Iterable[int]) -> str:
        """Text of a class sequence that is already collapsed (blanks are dropped)."""
        return "".join(self.chars[c - 1] for c in classes if c != BLANK)

    @property
    def _index(self) -> dict[str, int]:
        return {c: i + 1 for i, c in enumerate(self.chars)}


def ctc_steps_needed(label: str) -> int:
    """Minimum CTC time steps for ``label``: one per character, plus a blank between repeats.

    >>> ctc_steps_needed("abc"), ctc_steps_needed("aab")
    (3, 4)
    """
    repeats = sum(1 for a, b in itertools.pairwise(label) if a == b)
    return len(label) + repeats
