"""Reading image files with the checks OpenCV leaves out.

OpenCV decodes a truncated JPEG without an error (the missing part is grey) and reads a
file of any declared size, so the checks here run before any pixel or mask is used.
"""
import os

import cv2
import numpy as np
from PIL import Image

from ppdet.core.errors import DataError

__all__ = ['read_image_bytes', 'decode_image', 'image_size', 'check_image_file']

_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = b'\xff\xd8', b'\xff\xd9', b'\xff\xda'
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def read_image_bytes(path):
    """The file's bytes; a missing or empty file is a :class:`DataError`."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f'{path}: image file not found') from None
    except OSError as e:
        raise DataError(f'{path}: cannot read the image ({e.strerror})') from None
    if not data:
        raise DataError(f'{path}: image file is empty (0 bytes)')
    _check_complete(data[:8], data[-(1 << 16):], path)
    return data


def _check_complete(head, tail, path):
    """Refuse JPEG/PNG files cut short (OpenCV would grey-fill them silently).

    ``head``: the first bytes of the file, ``tail``: its last bytes (64 KiB are plenty).
    """
    if head.startswith(_JPEG_SOI):
        # Entropy-coded data never holds an unstuffed 0xFFD9, so a complete file has an
        # end-of-image marker after its last start-of-scan marker (trailing junk is allowed).
        end = tail.rfind(_JPEG_EOI)
        if end < 0 or end < tail.rfind(_JPEG_SOS):
            raise DataError(f'{path}: truncated JPEG (no end-of-image marker after the last scan)')
    elif head.startswith(_PNG_SIGNATURE) and b'IEND' not in tail[-64:]:
        raise DataError(f'{path}: truncated PNG (no IEND chunk at the end)')


def decode_image(data, path):
    """Bytes -> RGB uint8 ``[h, w, 3]``: EXIF orientation applied, grey/CMYK/RGBA/16-bit
    converted to the 3-channel view the annotations describe."""
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # e.g. a header that declares an impossible size
        image = None
    if image is None:
        raise DataError(f'{path}: not a decodable image (corrupt or unsupported format)')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size(path):
    """(height, width) as decoding will give it, read from the header only."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1) if im.format in ('JPEG', 'PNG') else 1
    except FileNotFoundError:
        raise DataError(f'{path}: image file not found') from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f'{path}: not a readable image ({e})') from None
    if orientation in (5, 6, 7, 8):       # rotated by 90 degrees
        width, height = height, width
    return height, width


def check_image_file(path, declared_hw=None):
    """Cheap checks of one image file without decoding its pixels (for ``validate``)."""
    if not os.path.isfile(path):
        raise DataError(f'{path}: image file not found')
    if os.path.getsize(path) == 0:
        raise DataError(f'{path}: image file is empty (0 bytes)')
    with open(path, 'rb') as f:
        head = f.read(8)
        f.seek(max(0, os.path.getsize(path) - (1 << 16)))
        tail = f.read()
    _check_complete(head, tail, path)
    size = image_size(path)
    if declared_hw is not None and tuple(size) != tuple(declared_hw):
        raise DataError(f'{path}: image is {size[0]}x{size[1]} but the annotation file declares '
                        f'{int(declared_hw[0])}x{int(declared_hw[1])} (height x width)')
    return size

