"""The image tower's input, made the way CLIPImageProcessor makes it, in a fraction of its time.

CLIPImageProcessor (the slow, PIL-based one: torchvision is not installed) scales the short side to
``shortest_edge`` with PIL's bicubic filter, crops the centre, rescales by 1/255 and normalises per
channel. Around those steps it converts the whole image to NumPy and back to PIL for the resize, infers
channel layouts, and rescales and normalises every pixel in float64 then float32: 5.7 ms of CPU an image
against 2.5 ms here (Caltech 101 photos, ~295x244 px, cProfile on these machines), the largest cost of
ingestion after the tower itself. Here the same PIL resize runs on the image as it is, the crop is taken
before anything becomes an array, and rescaling and normalising are a look-up in a table of the
processor's own arithmetic for each of the 256 levels, so the output equals the processor's bit for bit
(tests/unit/collection/test_image_input.py compares them on real photos).

Only processors this module can reproduce get it (:func:`image_input_for`); any other (SigLIP's fixed
resize, ALIGN's, a processor with different steps) keeps its own ``__call__``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from collection.processor_input import bounded_for_processor

# PIL's resampling filters by the integers processors store in their configs.
_RESAMPLE = {int(f): f for f in PILImage.Resampling}


@dataclass(frozen=True)
class ClipImageInput:
    """Shortest-edge resize, centre crop, rescale, normalise: CLIPImageProcessor's steps, as one function."""

    processor: object  # kept for bounded_for_processor (its size and crop size)
    shortest_edge: int
    crop_height: int
    crop_width: int
    resample: PILImage.Resampling
    table: np.ndarray  # (3, 256) float32: each channel's normalised value of every 8-bit level

    def __call__(self, image: PILImage.Image) -> np.ndarray:
        """One image as the model's input: (3, crop_height, crop_width) float32."""
        image = bounded_for_processor(image, self.processor)  # RGB, thin strips bounded (issue 19)
        width, height = image.size
        # transformers.image_transforms.get_resize_output_image_size: the short side to the size, the long
        # side scaled and truncated with int().
        if width <= height:
            size = (self.shortest_edge, int(self.shortest_edge * height / width))
        else:
            size = (int(self.shortest_edge * width / height), self.shortest_edge)
        if size != image.size:
            image = image.resize(size, resample=self.resample)
        array = np.asarray(self._centre(image))  # (height, width, 3) uint8
        return np.stack([self.table[channel][array[..., channel]] for channel in range(3)])

    def _centre(self, image: PILImage.Image) -> PILImage.Image:
        """transformers.image_transforms.center_crop: top and left by floor division (never padding here:
        the resized short side is at least the crop, see image_input_for)."""
        width, height = image.size
        top = (height - self.crop_height) // 2
        left = (width - self.crop_width) // 2
        return image.crop((left, top, left + self.crop_width, top + self.crop_height))


def image_input_for(processor) -> ClipImageInput | None:
    """The fast equivalent of ``processor`` when it is a CLIP-style one with the steps above, else None."""
    if type(processor).__name__ != "CLIPImageProcessor":
        return None
    size, crop = getattr(processor, "size", None) or {}, getattr(processor, "crop_size", None) or {}
    steps = ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb")
    if not all(getattr(processor, step, False) for step in steps) or "shortest_edge" not in size:
        return None
    if "height" not in crop or "width" not in crop or int(processor.resample) not in _RESAMPLE:
        return None
    if max(int(crop["height"]), int(crop["width"])) > int(size["shortest_edge"]):
        return None  # the processor would pad with zeros: not reproduced here
    mean, std = (np.asarray(v, dtype=np.float32) for v in (processor.image_mean, processor.image_std))
    if mean.shape != (3,) or std.shape != (3,):
        return None
    # An 8-bit channel has 256 levels: the processor's arithmetic (rescale in float64, cast to float32,
    # then (x - mean) / std in float32) done once per level, so an image's input is a table look-up,
    # equal to the processor's bit for bit and ~10x cheaper than the arithmetic on each pixel.
    levels = (np.arange(256, dtype=np.float64) * float(processor.rescale_factor)).astype(np.float32)
    table = np.ascontiguousarray(((levels[None, :] - mean[:, None]) / std[:, None]).astype(np.float32))
    return ClipImageInput(
        processor,
        int(size["shortest_edge"]),
        int(crop["height"]),
        int(crop["width"]),
        _RESAMPLE[int(processor.resample)],
        table,
    )
