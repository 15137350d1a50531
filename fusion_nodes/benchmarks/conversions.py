"""Decode cost of the conversions the sensor nodes run on every message.

PointCloud2: cloud_to_xyzi on 100k points (x, y, z, intensity float32, ring uint16, time
float32, padded to 32 bytes) against a per-point struct.unpack_from loop over the same
message, timed in the same run. Images: image_to_rgb8 on a row-padded 640x480 bgr8 frame
and compressed_to_rgb8 on a 640x480 jpeg, each against a plain copy of the buffer.
"""

import array
import struct
import time
from typing import Callable

import numpy as np
from sensor_msgs.msg import Image

from fusion_nodes import conversions

POINTS = 100_000
CLOUD_DTYPE = np.dtype({'names': ['x', 'y', 'z', 'intensity', 'ring', 'time'],
                        'formats': ['<f4', '<f4', '<f4', '<f4', '<u2', '<f4'],
                        'offsets': [0, 4, 8, 12, 16, 20], 'itemsize': 32})


def _median_ms(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def _cloud():
    rng = np.random.default_rng(0)
    points = np.zeros(POINTS, CLOUD_DTYPE)
    for axis in 'xyz':
        points[axis] = rng.uniform(-40.0, 40.0, POINTS)
    points['x'][::50] = np.nan  # missing returns, as an is_dense=false driver sends them
    points['intensity'] = rng.uniform(0.0, 255.0, POINTS)
    points['ring'] = np.arange(POINTS) % 32
    points['time'] = np.linspace(0.0, 0.1, POINTS)
    return conversions.create_cloud(None, points)


def _struct_loop(cloud) -> np.ndarray:
    """The baseline: what a per-point reader (sensor_msgs_py's read_points) does."""
    data = cloud.data.tobytes()
    offsets = {f.name: f.offset for f in cloud.fields}
    unpack = struct.Struct('<f').unpack_from
    out = []
    step = cloud.point_step
    for k in range(cloud.width * cloud.height):
        base = k * step
        x = unpack(data, base + offsets['x'])[0]
        y = unpack(data, base + offsets['y'])[0]
        z = unpack(data, base + offsets['z'])[0]
        if x != x or y != y or z != z:
            continue
        out.append((x, y, z, unpack(data, base + offsets['intensity'])[0]))
    return np.array(out, dtype=np.float32)


def _padded_bgr8() -> Image:
    rng = np.random.default_rng(1)
    height, width, pad = 480, 640, 64
    step = width * 3 + pad
    msg = Image(height=height, width=width, encoding='bgr8', step=step, is_bigendian=0)
    msg.data = array.array('B', rng.integers(0, 256, height * step, dtype=np.uint8).tobytes())
    return msg


def run() -> None:
    """Print median decode times and the speed-up over the per-point loop."""
    cloud = _cloud()
    fast = conversions.cloud_to_xyzi(cloud)
    slow = _struct_loop(cloud)
    if not np.array_equal(fast, slow):
        raise RuntimeError('cloud_to_xyzi disagrees with the struct loop')
    fast_ms = _median_ms(lambda: conversions.cloud_to_xyzi(cloud), 50)
    slow_ms = _median_ms(lambda: _struct_loop(cloud), 3)
    print(f'PointCloud2 decode, {POINTS} points ({cloud.point_step} B/point, '
          f'{len(fast)} finite):')
    print(f'  cloud_to_xyzi       median {fast_ms:8.3f} ms')
    print(f'  struct.unpack loop  median {slow_ms:8.3f} ms')
    print(f'  ratio {slow_ms / fast_ms:.0f}x (target >= 50x)')

    image = _padded_bgr8()
    rgb_ms = _median_ms(lambda: conversions.image_to_rgb8(image), 100)
    copy_ms = _median_ms(lambda: bytes(image.data), 100)
    print(f'image_to_rgb8 640x480 bgr8, step {image.step}: median {rgb_ms:.3f} ms '
          f'({rgb_ms / copy_ms:.2f}x a bytes() copy of the buffer, {copy_ms:.3f} ms)')

    jpeg = conversions.rgb8_to_compressed(conversions.image_to_rgb8(image), quality=90)
    jpeg_ms = _median_ms(lambda: conversions.compressed_to_rgb8(jpeg), 30)
    jpeg_copy_ms = _median_ms(lambda: bytes(jpeg.data), 30)
    print(f'compressed_to_rgb8 640x480 jpeg ({len(jpeg.data)} B): median {jpeg_ms:.3f} ms '
          f'({jpeg_ms / jpeg_copy_ms:.0f}x a bytes() copy of the payload)')
