"""Image files into upright 8-bit RGB, without torch: the one decoder training and the runtime share.

``headstart.data`` (training) and ``headstart.runtime`` (a bundle, which must not need torch) decode
with these same steps, so an exported model sees exactly the pixels its run was trained on. The
size is checked from the header before any pixel is decoded, so a decompression bomb costs a
clear error, not the memory; every way a file can fail becomes a :class:`DataError` naming it.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from headstart.contract import DEFAULT_MAX_PIXELS
from headstart.errors import DataError

__all__ = ["DEFAULT_MAX_PIXELS", "OverCap", "check_size", "decode_image", "reduced_rgb", "to_model_rgb"]

# Formats read; PIL's others (EPS runs Ghostscript, ICO/ICNS change size on load) are refused.
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")  # JPEG includes MPO (camera JPEGs)
_REDUCIBLE = frozenset({"RGB", "L", "CMYK"})  # modes Image.reduce averages exactly (no alpha, no palette)
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")

OverCap = Callable[[str, int, int, int], str]
"""The message for an image over the cap, from (path, width, height, cap): each caller names its own remedy."""


# --- modes ---------------------------------------------------------------------------------

def _to_uint8(array: np.ndarray, full_scale: float) -> Image.Image:
    """Scale a one-channel array whose maximum possible value is ``full_scale`` to 8 bits."""
    scaled = np.clip(array.astype(np.float64) * (255.0 / full_scale), 0, 255)
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L").convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Convert 16-bit, 32-bit integer and float images by scaling, not clipping."""
    array = np.asarray(image)
    if image.mode == "F":
        low, high = float(array.min()), float(array.max())
        if low >= 0.0 and high <= 1.0:
            return _to_uint8(array, 1.0)
        return _to_uint8(array - low, max(high - low, 1e-12))
    if image.mode.startswith("I;16"):
        return _to_uint8(array, 65535.0)
    low, high = int(array.min()), int(array.max())  # mode "I": guess the bit depth
    if low >= 0 and high <= 255:
        return _to_uint8(array, 255.0)
    if low >= 0 and high <= 65535:
        return _to_uint8(array, 65535.0)
    return _to_uint8(array - low, max(high - low, 1))


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def to_model_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: transparency composited onto white, high bit depths scaled, the rest converted."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _ALPHA or (mode == "P" and "transparency" in image.info):
        return _composite_on_white(image)
    if mode in ("F", "I") or mode.startswith("I;16"):
        return _high_depth_to_rgb(image)
    return image.convert("RGB")


# --- size ----------------------------------------------------------------------------------

def check_size(path: str, size: tuple[int, int], cap: int | None, over_cap: OverCap) -> None:
    """Refuse an empty image, and one over ``cap`` pixels (None: no cap) with ``over_cap``'s message."""
    width, height = size
    if width < 1 or height < 1:
        raise DataError(f"{path}: empty image ({width}x{height} pixels)")
    if cap is not None and width * height > cap:
        raise DataError(over_cap(path, width, height, cap))


def _factor(size: tuple[int, int], size_hint: int, factors: Iterable[int], exact: bool = True) -> int:
    """The first factor that keeps the shorter side >= ``size_hint`` and, if ``exact``, divides both sides.

    Dividing exactly keeps every reduced pixel the same area: a partial last one would shift
    the picture by up to half a reduced pixel, which the final resize makes visible.
    """
    width, height = size
    return next((f for f in factors if min(width, height) // f >= size_hint
                 and (not exact or (width % f == 0 and height % f == 0))), 1)


def _reduced(image: Image.Image, size_hint: int | None) -> Image.Image:
    """Shrink by a whole factor (>= 2) while the shorter side stays >= ``size_hint``: resizing costs less."""
    if not size_hint or image.mode not in _REDUCIBLE:
        return image
    factor = _factor(image.size, size_hint, range(min(image.size) // size_hint, 1, -1))
    return image.reduce(factor) if factor > 1 else image


def reduced_rgb(image: Image.Image, size_hint: int | None) -> Image.Image:
    """A decoded image as RGB, reduced before the conversion (cheaper) and after (modes reduce skips)."""
    return _reduced(to_model_rgb(_reduced(image, size_hint)), size_hint)


# --- PIL's bomb limit ----------------------------------------------------------------------

@contextmanager
def _pil_limit_lifted() -> Iterator[None]:
    """Switch off PIL's own bomb check for the duration: headstart's cap replaces it.

    PIL checks ``Image.MAX_IMAGE_PIXELS`` inside ``Image.open``, before the caller sees the size:
    it prints a raw DecompressionBombWarning above the limit and refuses twice it, so a raised
    ``max_pixels`` could not win and a refusal could not name the size. The global is lifted only
    while a header is parsed (or a file over PIL's limit that the cap allows is decoded), under a
    lock so concurrent loads always restore the caller's value.
    """
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _new_lock() -> None:
    """A forked DataLoader worker must not inherit the lock held by another thread of its parent."""
    global _PIL_LIMIT_LOCK
    _PIL_LIMIT_LOCK = threading.Lock()


_PIL_LIMIT_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_new_lock)


def _decode(image: Image.Image) -> None:
    """Decode the pixels; PIL's load-time check (TIFF) is lifted only when the cap allowed more."""
    with _PIL_LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
    if limit is None or image.width * image.height <= limit:
        image.load()
        return
    with _pil_limit_lifted():
        image.load()


# --- files ---------------------------------------------------------------------------------

def _read(path: str, cap: int | None, size_hint: int | None, exact: bool, over_cap: OverCap) -> Image.Image:
    """Header first (size checked before any pixel is decoded), then a decode as small as allowed."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
        raise DataError(f"{path}: not a regular file")
    with open(path, "rb") as fp:
        with _pil_limit_lifted():
            image = Image.open(fp, formats=_FORMATS)
            image.seek(0)
        check_size(path, image.size, cap, over_cap)
        scale = _factor(image.size, size_hint, (8, 4, 2), exact) if size_hint else 1
        if scale > 1:  # JPEG only (a no-op for others): libjpeg decodes at 1/2, 1/4 or 1/8 scale
            image.draft("RGB", (image.width // scale, image.height // scale))
        _decode(image)
        ImageOps.exif_transpose(image, in_place=True)
    return reduced_rgb(image, size_hint)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def decode_image(path: str, *, cap: int | None, over_cap: OverCap, size_hint: int | None = None,
                 exact: bool = True) -> Image.Image:
    """``path`` as upright 8-bit RGB, every way a file can fail turned into a DataError naming it.

    An animated image gives its first frame. With ``size_hint`` the image may come back smaller by
    a whole factor, its shorter side never below the hint; ``exact=False`` (validation: only errors
    matter) lets a JPEG decode at 1/8 whatever its size.
    """
    try:
        return _read(path, cap, size_hint, exact, over_cap)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (cannot identify image)") from None
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise DataError(f"{path}: truncated image") from None
        raise DataError(f"{path}: unreadable image ({_describe(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - on hostile bytes PIL raises struct.error, TypeError, ...
        raise DataError(f"{path}: unreadable image ({_describe(exc)})") from None
