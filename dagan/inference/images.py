"""Moved to :mod:`dagan.io.images` (the one media module); these names stay importable from here."""
from ..io.images import (  # noqa: F401
    ImageLike, to_uint8_rgb, load_image, as_image, resize_image, image_to_tensor, tensor_to_images)
