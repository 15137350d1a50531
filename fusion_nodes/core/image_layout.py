"""Image buffer layout: encodings, zero-copy views over row-padded data, RGB8 rendering.

Pure numpy: the caller hands over plain values from a sensor_msgs/Image (height, width,
encoding, step, is_bigendian) and its data as a 1-D uint8 array. Views share memory with
that array, so they are only as writable as it is; copy before changing pixels.
"""

from dataclasses import dataclass
import re
import sys

import cv2
import numpy as np

# OpenCV-style depth codes (as in sensor_msgs/image_encodings.hpp) and their element types.
_DEPTHS = {'8U': 'u1', '8S': 'i1', '16U': 'u2', '16S': 'i2', '32S': 'i4', '32F': 'f4',
           '64F': 'f8'}
_GENERIC = re.compile(r'^(8U|8S|16U|16S|32S|32F|64F)C([1-4])$')
_NAMED = {'rgb8': ('u1', 3), 'bgr8': ('u1', 3), 'rgba8': ('u1', 4), 'bgra8': ('u1', 4),
          'mono8': ('u1', 1), 'mono16': ('u2', 1),
          'rgb16': ('u2', 3), 'bgr16': ('u2', 3), 'rgba16': ('u2', 4), 'bgra16': ('u2', 4)}
# Encodings whose colour channels are stored blue first.
_BGR_ORDER = ('bgr8', 'bgra8', 'bgr16', 'bgra16')
_UINT32_MAX = 2 ** 32 - 1


@dataclass(frozen=True)
class ImageLayout:
    """Element type (native order) and channel count of one encoding."""

    encoding: str
    dtype: np.dtype
    channels: int

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


def image_layout(encoding: str) -> ImageLayout:
    """Layout of a sensor_msgs/Image encoding; unknown ones raise ValueError."""
    if not isinstance(encoding, str):
        raise ValueError(f'image encoding must be a string, got {type(encoding).__name__}')
    if encoding in _NAMED:
        code, channels = _NAMED[encoding]
    else:
        match = _GENERIC.match(encoding)
        if match is None:
            known = ', '.join(sorted(_NAMED)) + ' and {8U,8S,16U,16S,32S,32F,64F}C{1-4}'
            raise ValueError(f'unsupported image encoding {encoding!r} (supported: {known})')
        code, channels = _DEPTHS[match.group(1)], int(match.group(2))
    return ImageLayout(encoding, np.dtype(code), channels)


def _check_dimension(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f'image {name} must be an integer, got {value!r}')
    if not 0 < value <= _UINT32_MAX:
        raise ValueError(f'image {name} must be positive and fit uint32, got {value}')
    return int(value)


def image_view(data: np.ndarray, height: int, width: int, encoding: str, step: int,
               is_bigendian: bool) -> np.ndarray:
    """(H, W) or (H, W, C) array over data; a view unless the byte order needs a swap.

    Row padding (step > width * bytes per pixel) is skipped through the row stride.
    data must hold exactly step * height bytes, as sensor_msgs/Image defines.
    """
    layout = image_layout(encoding)
    height = _check_dimension(height, 'height')
    width = _check_dimension(width, 'width')
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise ValueError(f'image step must be an integer, got {step!r}')
    step = int(step)
    if step > _UINT32_MAX:
        raise ValueError(f'image step {step} does not fit uint32')
    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise ValueError(
            f'image step {step} is less than width {width} x {layout.bytes_per_pixel} bytes '
            f'per pixel ({encoding}) = {row_bytes}')
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 1:
        raise ValueError('image data must be a 1-D uint8 array')
    if data.size != step * height:
        raise ValueError(f'image data holds {data.size} bytes but step {step} x height '
                         f'{height} needs {step * height}')
    order = '>' if is_bigendian else '<'
    dtype = layout.dtype.newbyteorder(order) if layout.dtype.itemsize > 1 else layout.dtype
    shape = (height, width) if layout.channels == 1 else (height, width, layout.channels)
    strides = (step, layout.bytes_per_pixel, layout.dtype.itemsize)[:len(shape)]
    view = np.ndarray(shape=shape, dtype=dtype, buffer=data, strides=strides)
    if not dtype.isnative:
        return view.astype(dtype.newbyteorder('='))
    return view


def array_layout(array: np.ndarray, encoding: str) -> tuple[np.ndarray, bool]:
    """Check an array against an encoding; returns it C-contiguous and its is_bigendian.

    The dtype must match the encoding exactly (no silent casts). A byte-swapped array is
    passed through with is_bigendian set rather than swapped back.
    """
    layout = image_layout(encoding)
    if not isinstance(array, np.ndarray):
        raise ValueError(f'expected a numpy array, got {type(array).__name__}')
    channels = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else None)
    if channels != layout.channels:
        raise ValueError(f'{encoding} needs {layout.channels} channel(s), got an array of '
                         f'shape {array.shape}')
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f'image must have a positive size, got shape {array.shape}')
    if array.dtype.newbyteorder('=') != layout.dtype:
        raise ValueError(f'{encoding} needs dtype {layout.dtype}, got {array.dtype}')
    byteorder = array.dtype.byteorder
    is_bigendian = byteorder == '>' or (byteorder == '=' and sys.byteorder == 'big')
    return np.ascontiguousarray(array), bool(is_bigendian and array.dtype.itemsize > 1)


def to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from pixels in encoding (as image_view returns them).

    mono is replicated, 16-bit is shifted >> 8, float is clipped to [0, 1] and scaled by
    255 (rounded; NaN reads 0), alpha is dropped, bgr is reordered. Generic 3- and
    4-channel encodings (8UC3, 32FC3) are taken as RGB, the order our own nodes publish.
    An rgb8 (or 8UC3) input comes back as the very view it was given.
    """
    layout = image_layout(encoding)
    if layout.channels == 2:
        raise ValueError(f'{encoding} has 2 channels: no RGB rendering is defined')
    kind, size = layout.dtype.kind, layout.dtype.itemsize
    if kind == 'i' or (kind == 'u' and size > 2):
        raise ValueError(f'{encoding}: no RGB rendering is defined for signed or 32-bit '
                         'integer pixels')
    shape = pixels.shape[:2] + ((layout.channels,) if layout.channels > 1 else ())
    if pixels.ndim < 2 or pixels.shape != shape or 0 in shape:
        raise ValueError(f'{encoding} pixels must be (H, W) or (H, W, {layout.channels}), '
                         f'got {pixels.shape}')
    if kind == 'f':
        clean = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
        pixels = np.rint(np.clip(clean, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif size == 2:
        pixels = (pixels >> 8).astype(np.uint8)
    # OpenCV reads row-strided views directly and is far faster than numpy fancy slicing.
    bgr = encoding in _BGR_ORDER
    if layout.channels == 1:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    if layout.channels == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if bgr else pixels


# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def compressed_size(payload: np.ndarray, kind: str) -> tuple[int, int]:
    """(height, width) from a jpeg or png header, read before anything is decoded.

    Lets a caller refuse a decompression bomb (a few bytes that claim a huge image).
    """
    raw = payload.tobytes() if isinstance(payload, np.ndarray) else bytes(payload)
    if kind == 'png':
        if len(raw) < 24 or raw[12:16] != b'IHDR':
            raise ValueError('png has no IHDR header')
        width, height = int.from_bytes(raw[16:20], 'big'), int.from_bytes(raw[20:24], 'big')
        return height, width
    if kind != 'jpeg':
        raise ValueError(f'unknown compression {kind!r}')
    pos = 2
    while pos + 4 <= len(raw):
        if raw[pos] != 0xFF:
            raise ValueError(f'jpeg marker expected at byte {pos}')
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = int.from_bytes(raw[pos + 2:pos + 4], 'big')
        if marker in _JPEG_SOF:
            if pos + 9 > len(raw):
                break
            height = int.from_bytes(raw[pos + 5:pos + 7], 'big')
            width = int.from_bytes(raw[pos + 7:pos + 9], 'big')
            return height, width
        if marker == 0xDA or length < 2:
            break
        pos += 2 + length
    raise ValueError('jpeg has no frame header before its image data')
