"""Moved to :mod:`dagan.io.images` (the one media module); these names stay importable from here."""
from ..io.images import (  # noqa: F401
    ImageLike, as_image, image_to_tensor, load_image, read_image, resize_image, tensor_to_images, to_uint8_rgb)
