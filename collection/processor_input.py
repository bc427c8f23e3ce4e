"""Images bounded before the model's image processor sees them.

CLIP-style processors scale an image's short side to the model's size, then crop the centre. For a
thin strip that scale-up is enormous: a 5,000 x 1 image becomes 1.1 M x 224 pixels of float32 (2.7 GB,
9 s with the 224-pixel processor) before the crop throws almost all of it away (issue 19, finding 2).
Cropping the long side first, around the same centre, to at most ``KEPT_RATIO`` times the short side
keeps everything the processor's centre crop uses, so it changes nothing the model sees, and bounds
what the processor allocates to ``KEPT_RATIO`` times the model's input.
"""

from __future__ import annotations

import math

from PIL import Image as PILImage

# Photos up to 2:1 (16:9, 3:2, 2:1 panoramas) reach the processor untouched, so their vectors are the
# same as before this bound; beyond, the processor's square crop lies well inside the kept centre.
KEPT_RATIO = 2.0


def bounded_for_processor(image: PILImage.Image, processor) -> PILImage.Image:
    """``image`` in RGB, its long side centre-cropped to what the processor's crop can use."""
    image = image.convert("RGB")
    size = getattr(processor, "size", None) or {}
    if "shortest_edge" not in size:
        return image  # resized straight to a fixed height x width: bounded by the model's input already
    crop = getattr(processor, "crop_size", None) or {}
    ratio = max(KEPT_RATIO, max(crop.get("height", 0), crop.get("width", 0)) / size["shortest_edge"])
    width, height = image.size
    short = min(width, height)
    keep = max(1, math.ceil(short * ratio))
    if width > keep:
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    if height > keep:
        top = (height - keep) // 2
        return image.crop((0, top, width, top + keep))
    return image
