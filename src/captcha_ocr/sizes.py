"""The one way an image size is written: :class:`ImageSize`, width first. No dependencies.

Pillow (``Image.size``, ``resize``) and people (``200x50``, ``--size 200x50``) put the width
first; NumPy arrays and Keras inputs put the height first, ``(H, W, C)``. Code passes sizes
around as :class:`ImageSize` and reads ``size.width`` / ``size.height`` by name; an array
shape is made from one only through :meth:`ImageSize.shape`. The number of channels (1 grey,
3 RGB) is not part of a size: it is the model's choice (the preset or ``--channels``), not
the image's.
"""

from __future__ import annotations

from typing import NamedTuple


class ImageSize(NamedTuple):
    """An image's size in pixels, width first as in Pillow; ``str()`` writes it ``WxH``.

    It is a tuple, so it equals ``(width, height)`` and unpacks like Pillow's ``Image.size``.

    >>> size = ImageSize(width=200, height=50)
    >>> str(size), size.shape(1), size == (200, 50)
    ('200x50', (50, 200, 1), True)
    """

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    def shape(self, channels: int) -> tuple[int, int, int]:
        """The ``(height, width, channels)`` shape of an array of this size."""
        return self.height, self.width, channels

    def covers(self, other: ImageSize) -> bool:
        """True when this size is at least ``other`` in both width and height.

        >>> ImageSize(200, 50).covers(ImageSize(16, 16)), ImageSize(200, 10).covers(ImageSize(16, 16))
        (True, False)
        """
        return self.width >= other.width and self.height >= other.height
