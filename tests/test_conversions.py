"""Conversions against messages written byte by byte (struct.pack), not through numpy views."""

import math
import struct
from types import SimpleNamespace

import cv2
from nav_msgs.msg import OccupancyGrid, Odometry
import numpy as np
import pytest
from rclpy.serialization import serialize_message
from rosbags.typesys import get_typestore, Stores
from sensor_msgs.msg import CompressedImage, Image, NavSatFix, PointCloud2, PointField
from std_msgs.msg import Header

from fusion_nodes import conversions
from fusion_nodes.core.config import BevGrid

# encoding -> (struct code, channels, python value generator)
ENCODINGS = {
    'rgb8': ('B', 3), 'bgr8': ('B', 3), 'rgba8': ('B', 4), 'bgra8': ('B', 4),
    'mono8': ('B', 1), 'mono16': ('H', 1), '16UC1': ('H', 1), '32FC1': ('f', 1),
    '8UC3': ('B', 3), '32FC3': ('f', 3), '32FC4': ('f', 4),
}
PAD = 0xA5


def _pixel_values(code: str, count: int, rng: np.random.Generator) -> list:
    if code == 'B':
        return [int(v) for v in rng.integers(0, 256, count)]
    if code == 'H':
        return [int(v) for v in rng.integers(0, 65536, count)]
    # float32-exact values spanning below 0, [0, 1] and above 1, plus the odd NaN.
    values = [struct.unpack('f', struct.pack('f', v))[0] for v in rng.uniform(-0.5, 1.5, count)]
    values[0] = float('nan')
    return values


def _image_bytes(values: list, code: str, height: int, width: int, channels: int,
                 pad: int, big: bool) -> tuple[bytes, int]:
    """Row by row, element by element, with pad junk bytes after each row."""
    size = struct.calcsize(code)
    step = width * channels * size + pad
    out = bytearray()
    per_row = width * channels
    for r in range(height):
        for v in values[r * per_row:(r + 1) * per_row]:
            out += struct.pack(('>' if big else '<') + code, v)
        out += bytes([PAD]) * pad
    return bytes(out), step


def _expected_array(values: list, code: str, height: int, width: int, channels: int):
    dtype = {'B': np.uint8, 'H': np.uint16, 'f': np.float32}[code]
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.array(values, dtype=dtype).reshape(shape)


def _expected_rgb8(values: list, encoding: str, height: int, width: int) -> np.ndarray:
    """Per pixel in plain Python: the documented rendering rules."""
    code, channels = ENCODINGS[encoding]
    out = np.zeros((height, width, 3), np.uint8)
    for r in range(height):
        for c in range(width):
            px = values[(r * width + c) * channels:(r * width + c + 1) * channels]
            if code == 'H':
                px = [v >> 8 for v in px]
            elif code == 'f':
                px = [0 if math.isnan(v) else int(round(min(max(v, 0.0), 1.0) * 255.0))
                      for v in px]
            if channels == 1:
                px = px * 3
            px = px[:3]
            if encoding.startswith('bgr'):
                px = px[::-1]
            out[r, c] = px
    return out


def _image(encoding: str, big: bool = False, pad: int = 0, height: int = 5, width: int = 7,
           seed: int = 0):
    code, channels = ENCODINGS[encoding]
    values = _pixel_values(code, height * width * channels, np.random.default_rng(seed))
    data, step = _image_bytes(values, code, height, width, channels, pad, big)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(big),
                step=step, data=data)
    return msg, values


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
@pytest.mark.parametrize('big', [False, True])
@pytest.mark.parametrize('pad', [0, 3])
def test_image_to_numpy_matches_hand_written_bytes(encoding, big, pad):
    msg, values = _image(encoding, big, pad)
    code, channels = ENCODINGS[encoding]
    got = conversions.image_to_numpy(msg)
    expected = _expected_array(values, code, msg.height, msg.width, channels)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
@pytest.mark.parametrize('big', [False, True])
def test_image_to_rgb8_follows_the_rendering_rules(encoding, big):
    msg, values = _image(encoding, big, pad=2, seed=1)
    got = conversions.image_to_rgb8(msg)
    assert got.shape == (msg.height, msg.width, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, _expected_rgb8(values, encoding, msg.height, msg.width))


def test_image_view_shares_the_message_buffer_and_big_endian_is_a_copy():
    msg, _ = _image('mono16', pad=4)
    buffer = np.frombuffer(msg.data, np.uint8)
    assert np.shares_memory(conversions.image_to_numpy(msg), buffer)
    rgb, _ = _image('rgb8', pad=5)
    assert np.shares_memory(conversions.image_to_rgb8(rgb), np.frombuffer(rgb.data, np.uint8))
    swapped, _ = _image('mono16', big=True)
    assert not np.shares_memory(conversions.image_to_numpy(swapped),
                                np.frombuffer(swapped.data, np.uint8))


@pytest.mark.parametrize('encoding, dtype, shape', [
    ('rgb8', np.uint8, (3, 4, 3)), ('mono16', np.uint16, (3, 4)),
    ('32FC4', np.float32, (3, 4, 4)), ('mono8', np.uint8, (3, 4, 1))])
def test_numpy_to_image_writes_packed_rows(encoding, dtype, shape):
    array = np.arange(np.prod(shape)).astype(dtype).reshape(shape)
    header = Header(frame_id='cam')
    header.stamp.sec = 7
    msg = conversions.numpy_to_image(array, encoding, header)
    assert (msg.height, msg.width, msg.encoding) == (3, 4, encoding)
    assert msg.step == 4 * array.itemsize * (shape[2] if len(shape) == 3 else 1)
    assert msg.header.frame_id == 'cam' and msg.header.stamp.sec == 7
    assert bytes(msg.data) == b''.join(struct.pack('<' + array.dtype.char, v)
                                       for v in array.ravel().tolist())
    np.testing.assert_array_equal(conversions.image_to_numpy(msg).reshape(shape), array)


def test_numpy_to_image_keeps_a_big_endian_array_as_is():
    array = np.array([[1, 258], [515, 65535]], dtype='>u2')
    msg = conversions.numpy_to_image(array, '16UC1')
    assert msg.is_bigendian == 1 and bytes(msg.data) == struct.pack('>4H', 1, 258, 515, 65535)
    np.testing.assert_array_equal(conversions.image_to_numpy(msg), array)


@pytest.mark.parametrize('array, encoding', [
    (np.zeros((4, 4, 3), np.float32), 'rgb8'), (np.zeros((4, 4), np.uint8), 'rgb8'),
    (np.zeros((4, 4, 3), np.uint8), 'yuv422'), (np.zeros((0, 4, 3), np.uint8), 'rgb8'),
    (np.zeros((4, 4, 4), np.float64), '32FC4'), ([[1, 2]], 'mono8')])
def test_numpy_to_image_rejects_mismatches(array, encoding):
    with pytest.raises(ValueError):
        conversions.numpy_to_image(array, encoding)


def _bad_image(**changes):
    good = dict(height=4, width=4, encoding='rgb8', is_bigendian=0, step=12, data=bytes(48))
    good.update(changes)
    return SimpleNamespace(**good)


@pytest.mark.parametrize('changes, message', [
    ({'encoding': 'yuv422_weird'}, 'unsupported image encoding'),
    ({'step': 8}, 'step 8 is less than'),
    ({'data': bytes(20)}, 'holds 20 bytes'),
    ({'data': bytes(49)}, 'holds 49 bytes'),
    ({'encoding': 'mono16', 'step': 4, 'data': bytes(16)}, 'step 4 is less than'),
    ({'encoding': '32FC1', 'step': 16, 'data': bytes(63)}, 'holds 63 bytes'),
    ({'width': 0}, 'width must be positive'),
    ({'width': 2 ** 40}, 'fit uint32'),
    ({'height': 0, 'data': b''}, 'height must be positive'),
    ({'height': -4}, 'height must be positive'),
    ({'step': None}, 'step must be an integer'),
    ({'encoding': None}, 'encoding must be a string'),
    ({'data': 'not bytes'}, 'data'),
    ({'data': [1, 2, 300]}, 'bytes 0..255'),
    ({'encoding': '16SC1', 'step': 8, 'data': bytes(32)}, 'no RGB rendering'),
])
def test_malformed_images_raise_value_error_saying_why(changes, message):
    with pytest.raises(ValueError, match=message):
        conversions.image_to_rgb8(_bad_image(**changes))


def test_image_without_data_field_is_a_value_error():
    msg = _bad_image()
    del msg.data
    with pytest.raises(ValueError, match="no field 'data'"):
        conversions.image_to_numpy(msg)


# --- compressed ----------------------------------------------------------------------------

def _smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)


@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_compressed_round_trip(fmt):
    rgb = _smooth_rgb()
    msg = conversions.rgb8_to_compressed(rgb, fmt=fmt, quality=95, header=Header(frame_id='c'))
    assert msg.format == f'rgb8; {fmt} compressed bgr8' and msg.header.frame_id == 'c'
    got = conversions.compressed_to_rgb8(msg)
    assert got.shape == rgb.shape and got.dtype == np.uint8
    if fmt == 'png':
        np.testing.assert_array_equal(got, rgb)
    else:
        # Lossy, but channels must not be swapped: each channel tracks its own gradient.
        error = np.abs(got.astype(int) - rgb.astype(int)).mean(axis=(0, 1))
        assert error.max() < 3.0


@pytest.mark.parametrize('fmt', ['jpeg', 'JPG', 'png', 'rgb8; jpeg compressed bgr8',
                                 'mono8; png compressed mono8', 'bgr8; png compressed bgr8'])
def test_compressed_format_strings_are_understood(fmt):
    rgb = _smooth_rgb(16, 16)
    kind = 'png' if 'png' in fmt else '.jpg'
    ok, payload = cv2.imencode('.png' if kind == 'png' else '.jpg', rgb[:, :, ::-1])
    assert ok
    msg = CompressedImage(format=fmt, data=payload.tobytes())
    assert conversions.compressed_to_rgb8(msg).shape == (16, 16, 3)


def test_compressed_grey_and_alpha_png_become_rgb():
    grey = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    msg = CompressedImage(format='mono8; png compressed mono8',
                          data=cv2.imencode('.png', grey)[1].tobytes())
    np.testing.assert_array_equal(conversions.compressed_to_rgb8(msg), np.dstack([grey] * 3))
    rgba = np.dstack([_smooth_rgb(), np.full((48, 64), 7, np.uint8)])
    bgra = rgba[:, :, [2, 1, 0, 3]]
    msg = CompressedImage(format='png', data=cv2.imencode('.png', bgra)[1].tobytes())
    np.testing.assert_array_equal(conversions.compressed_to_rgb8(msg), rgba[:, :, :3])


def test_malformed_compressed_images_raise_value_error():
    jpeg = conversions.rgb8_to_compressed(_smooth_rgb())
    png = conversions.rgb8_to_compressed(_smooth_rgb(), fmt='png')
    cases = [CompressedImage(format='jpeg', data=b'not a jpeg at all'),
             CompressedImage(format='h264', data=bytes(100)),
             CompressedImage(format='', data=jpeg.data),
             CompressedImage(format='png', data=jpeg.data),
             CompressedImage(format='jpeg', data=bytes(jpeg.data)[:len(jpeg.data) // 2]),
             CompressedImage(format='png', data=bytes(png.data)[:len(png.data) // 2]),
             CompressedImage(format='jpeg', data=b''),
             SimpleNamespace(format=None, data=jpeg.data)]
    for msg in cases:
        with pytest.raises(ValueError):
            conversions.compressed_to_rgb8(msg)
    with pytest.raises(ValueError, match='quality'):
        conversions.rgb8_to_compressed(_smooth_rgb(), quality=0)
    with pytest.raises(ValueError, match='unsupported compression'):
        conversions.rgb8_to_compressed(_smooth_rgb(), fmt='webp')


# --- point clouds --------------------------------------------------------------------------

# name, offset, datatype, count, struct code: deliberately out of offset order, float64 xyz,
# a 3-element field, a 2-byte hole at 30 and 6 bytes of tail padding (point_step 48).
MIXED_FIELDS = [
    ('intensity', 24, PointField.FLOAT32, 1, 'f'),
    ('x', 0, PointField.FLOAT64, 1, 'd'),
    ('y', 8, PointField.FLOAT64, 1, 'd'),
    ('z', 16, PointField.FLOAT64, 1, 'd'),
    ('ring', 28, PointField.UINT16, 1, 'H'),
    ('t', 32, PointField.UINT32, 1, 'I'),
    ('rgb', 36, PointField.UINT8, 3, '3B'),
    ('label', 39, PointField.INT8, 1, 'b'),
    ('time', 40, PointField.FLOAT32, 1, 'f'),
]
MIXED_STEP = 48


def _mixed_points(count: int, rng: np.random.Generator, nan_every: int = 0) -> list[dict]:
    points = []
    for k in range(count):
        nan = nan_every and k % nan_every == 0
        points.append({
            'x': float('nan') if nan else float(rng.uniform(-50, 50)),
            'y': float(rng.uniform(-50, 50)), 'z': float(rng.uniform(-3, 3)),
            'intensity': struct.unpack('f', struct.pack('f', rng.uniform(0, 255)))[0],
            'ring': int(rng.integers(0, 65536)), 't': int(rng.integers(0, 2 ** 32)),
            'rgb': [int(v) for v in rng.integers(0, 256, 3)],
            'label': int(rng.integers(-128, 128)),
            'time': struct.unpack('f', struct.pack('f', rng.uniform(0, 0.1)))[0]})
    return points


def _pack_point(point: dict, fields: list, step: int, big: bool) -> bytes:
    out = bytearray([0xEE]) * step  # junk in the holes: must never be read
    order = '>' if big else '<'
    for name, offset, _, count, code in fields:
        values = point[name] if count > 1 else [point[name]]
        struct.pack_into(order + code, out, offset, *values)
    return bytes(out)


def _mixed_cloud(points: list[dict], height: int, width: int, big: bool = False,
                 row_pad: int = 0, is_dense: bool = True) -> PointCloud2:
    data = bytearray()
    for r in range(height):
        for c in range(width):
            data += _pack_point(points[r * width + c], MIXED_FIELDS, MIXED_STEP, big)
        data += bytes([0xEE]) * row_pad
    return PointCloud2(
        height=height, width=width, is_bigendian=big, point_step=MIXED_STEP,
        row_step=width * MIXED_STEP + row_pad, is_dense=is_dense, data=bytes(data),
        fields=[PointField(name=n, offset=o, datatype=d, count=c)
                for n, o, d, c, _ in MIXED_FIELDS])


def _check_structured(got: np.ndarray, points: list[dict], height: int, width: int):
    assert got.shape == (height, width) and got.dtype.itemsize == MIXED_STEP
    assert got.dtype.names == tuple(f[0] for f in MIXED_FIELDS)
    for r in range(height):
        for c in range(width):
            point = points[r * width + c]
            for name, *_ in MIXED_FIELDS:
                value = got[r, c][name]
                expected = point[name]
                if name == 'rgb':
                    assert value.tolist() == expected
                elif isinstance(expected, float) and math.isnan(expected):
                    assert math.isnan(value)
                else:
                    assert value == expected, (name, r, c)


@pytest.mark.parametrize('big', [False, True])
@pytest.mark.parametrize('height, width, row_pad', [(1, 13, 0), (3, 4, 0), (3, 4, 20)])
def test_read_points_matches_hand_packed_points(big, height, width, row_pad):
    points = _mixed_points(height * width, np.random.default_rng(height + row_pad))
    cloud = _mixed_cloud(points, height, width, big, row_pad)
    got = conversions.read_points(cloud)
    _check_structured(got, points, height, width)
    assert all(got.dtype.fields[n][0].base.isnative for n in got.dtype.names)
    assert np.shares_memory(got, np.frombuffer(cloud.data, np.uint8)) == (not big)


@pytest.mark.parametrize('big', [False, True])
def test_cloud_to_xyzi_any_layout_and_nan_points(big):
    points = _mixed_points(24, np.random.default_rng(3), nan_every=5)
    cloud = _mixed_cloud(points, 4, 6, big, row_pad=8, is_dense=False)
    kept = [p for p in points if not math.isnan(p['x'])]
    expected = np.array([[p['x'], p['y'], p['z'], p['intensity']] for p in kept], np.float32)
    got = conversions.cloud_to_xyzi(cloud)
    assert got.dtype == np.float32 and got.shape == (len(kept), 4) == (19, 4)
    np.testing.assert_array_equal(got, expected)
    everything = conversions.cloud_to_xyzi(cloud, skip_nans=False)
    assert everything.shape == (24, 4)
    assert np.isnan(everything[::5, 0]).all() and not np.isnan(everything[1::5, 0]).any()


def _float_cloud(names: list[str], rows: list[tuple], step: int | None = None,
                 big: bool = False) -> PointCloud2:
    step = step or 4 * len(names)
    order = '>' if big else '<'
    data = b''.join(struct.pack(order + 'f' * len(row), *row) + bytes(step - 4 * len(row))
                    for row in rows)
    return PointCloud2(height=1, width=len(rows), point_step=step, row_step=step * len(rows),
                       is_bigendian=big, is_dense=True, data=data,
                       fields=[PointField(name=n, offset=4 * k, datatype=PointField.FLOAT32,
                                          count=1) for k, n in enumerate(names)])


@pytest.mark.parametrize('big', [False, True])
def test_cloud_to_xyzi_fast_layout_and_intensity_sources(big):
    rows = [(1.0, 2.0, 3.0, 4.0, 5.0), (-1.5, 0.25, 8.0, 9.0, 1.0)]
    with_intensity = _float_cloud(['x', 'y', 'z', 'intensity', 'time'], rows, 32, big)
    np.testing.assert_array_equal(conversions.cloud_to_xyzi(with_intensity),
                                  np.array([r[:4] for r in rows], np.float32))
    reflectivity = _float_cloud(['x', 'y', 'z', 'ring_f', 'reflectivity'], rows, big=big)
    np.testing.assert_array_equal(conversions.cloud_to_xyzi(reflectivity),
                                  np.array([r[:3] + r[4:] for r in rows], np.float32))
    bare = _float_cloud(['z', 'y', 'x'], [r[:3] for r in rows], big=big)
    np.testing.assert_array_equal(conversions.cloud_to_xyzi(bare),
                                  np.array([r[2::-1] + (0.0,) for r in rows], np.float32))
    infinite = _float_cloud(['x', 'y', 'z'], [(1.0, math.inf, 0.0), (1.0, 2.0, 3.0)], big=big)
    np.testing.assert_array_equal(conversions.cloud_to_xyzi(infinite), [[1, 2, 3, 0]])


@pytest.mark.parametrize('big', [False, True])
def test_cloud_to_xyzi_fast_layout_organised_with_row_padding_and_nans(big):
    rng = np.random.default_rng(8)
    rows = [tuple(float(np.float32(v)) for v in rng.uniform(-9, 9, 5)) for _ in range(12)]
    rows[4] = (math.nan,) + rows[4][1:]
    rows[9] = rows[9][:2] + (-math.inf,) + rows[9][3:]
    order = '>' if big else '<'
    data = b''
    for r in range(3):
        data += b''.join(struct.pack(order + '5f', *row) + b'\xee' * 4
                         for row in rows[4 * r:4 * r + 4]) + b'\xee' * 8
    cloud = PointCloud2(height=3, width=4, point_step=24, row_step=104, is_bigendian=big,
                        is_dense=False, data=data,
                        fields=[PointField(name=n, offset=4 * k, datatype=7, count=1)
                                for k, n in enumerate(['x', 'y', 'z', 'intensity', 'time'])])
    expected = np.array([row[:4] for row in rows], np.float32)
    np.testing.assert_array_equal(conversions.cloud_to_xyzi(cloud, skip_nans=False), expected)
    np.testing.assert_array_equal(conversions.cloud_to_xyzi(cloud),
                                  np.delete(expected, [4, 9], axis=0))


def test_every_point_field_datatype_decodes():
    codes = {PointField.INT8: 'b', PointField.UINT8: 'B', PointField.INT16: 'h',
             PointField.UINT16: 'H', PointField.INT32: 'i', PointField.UINT32: 'I',
             PointField.FLOAT32: 'f', PointField.FLOAT64: 'd'}
    extremes = {'b': (-128, 127), 'B': (0, 255), 'h': (-32768, 32767), 'H': (0, 65535),
                'i': (-2 ** 31, 2 ** 31 - 1), 'I': (0, 2 ** 32 - 1), 'f': (-1.5, 3.25),
                'd': (-1e300, 1e-300)}
    fields, offset = [], 0
    for datatype, code in codes.items():
        fields.append((f'f{datatype}', offset, datatype, 1, code))
        offset += struct.calcsize(code)
    for big in (False, True):
        points = [{f[0]: extremes[f[4]][k] for f in fields} for k in range(2)]
        data = b''.join(_pack_point(p, fields, offset, big) for p in points)
        cloud = PointCloud2(height=1, width=2, point_step=offset, row_step=2 * offset,
                            is_bigendian=big, data=data,
                            fields=[PointField(name=n, offset=o, datatype=d, count=c)
                                    for n, o, d, c, _ in fields])
        got = conversions.read_points(cloud)
        for name, _, datatype, _, code in fields:
            assert got[name].dtype == np.dtype(code)
            assert got[name][0].tolist() == [extremes[code][0], extremes[code][1]]


def test_empty_cloud_gives_no_points():
    cloud = _float_cloud(['x', 'y', 'z'], [])
    assert conversions.cloud_to_xyzi(cloud).shape == (0, 4)
    assert conversions.read_points(cloud).shape == (1, 0)


def _bad_cloud(**changes):
    fields = [SimpleNamespace(name=n, offset=4 * k, datatype=7, count=1)
              for k, n in enumerate('xyz')]
    good = dict(height=1, width=10, fields=fields, is_bigendian=False, point_step=12,
                row_step=120, data=bytes(120), is_dense=True)
    good.update(changes)
    return SimpleNamespace(**good)


def _field(name, offset, datatype=7, count=1):
    return SimpleNamespace(name=name, offset=offset, datatype=datatype, count=count)


@pytest.mark.parametrize('changes, message', [
    ({'fields': [_field('x', 0), _field('y', 4)]}, 'no z field'),
    ({'fields': []}, 'no x, y, z'),
    ({'data': bytes(100)}, 'holds 100 bytes'),
    ({'data': bytes(121)}, 'holds 121 bytes'),
    ({'point_step': 8, 'row_step': 80, 'data': bytes(80)}, 'past point_step'),
    ({'fields': [_field('x', 0), _field('y', 4), _field('z', 8, 99)]}, 'unknown PointField'),
    ({'fields': [_field('x', 0), _field('y', 4), _field('z', 8, 0)]}, 'unknown PointField'),
    ({'row_step': 7}, 'row_step 7 is less than'),
    ({'fields': [_field('x', 0), _field('y', 4), _field('x', 8)]}, 'duplicate'),
    ({'fields': [_field('x', 0), _field('y', 4), _field('z', 8, count=0)]}, 'count 0'),
    ({'fields': [_field('x', 0), _field('y', 2), _field('z', 8)]}, 'overlap'),
    ({'fields': [_field('x', 0), _field('y', 4), _field('z', -4)]}, 'must not be negative'),
    ({'fields': [_field('x', 0), _field('y', 4), _field('', 8)]}, 'non-empty'),
    ({'fields': [_field('x', 0), _field('y', 4), _field('z', 8, count=2)]}, 'past point_step'),
    ({'point_step': 0, 'fields': []}, 'point_step is 0'),
    ({'width': -1}, 'must not be negative'),
    ({'height': 2 ** 63}, 'uint32'),
    ({'point_step': 2 ** 31, 'row_step': 2 ** 32}, 'beyond any real'),
    ({'height': 'one'}, 'must be an integer'),
    ({'fields': None}, 'fields must be a list'),
    ({'data': None}, 'data'),
])
def test_malformed_clouds_raise_value_error_saying_why(changes, message):
    with pytest.raises(ValueError, match=message):
        conversions.cloud_to_xyzi(_bad_cloud(**changes))


def test_multi_element_xyz_is_refused():
    cloud = _bad_cloud(fields=[_field('x', 0, count=2), _field('y', 8), _field('z', 12)],
                       point_step=16, row_step=160, data=bytes(160))
    assert conversions.read_points(cloud)['x'].shape == (1, 10, 2)
    with pytest.raises(ValueError, match='count 1'):
        conversions.cloud_to_xyzi(cloud)


def test_create_cloud_flat_organised_and_dense_flag():
    dtype = np.dtype({'names': ['x', 'y', 'z', 'ring'], 'formats': ['<f4', '<f4', '<f4', '<u2'],
                      'offsets': [0, 4, 8, 12], 'itemsize': 16})
    flat = np.zeros(5, dtype)
    flat['x'] = np.arange(5)
    flat['ring'] = [3, 1, 4, 1, 5]
    header = Header(frame_id='lidar')
    msg = conversions.create_cloud(header, flat)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 5, 16, 80)
    assert msg.is_dense and not msg.is_bigendian and msg.header.frame_id == 'lidar'
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1), ('ring', 12, 4, 1)]
    assert bytes(msg.data) == b''.join(struct.pack('<3fH2x', k, 0, 0, r)
                                       for k, r in zip(range(5), [3, 1, 4, 1, 5]))
    organised = flat.copy().reshape(1, 5).repeat(2, axis=0)
    organised['z'][1, 2] = np.nan
    msg = conversions.create_cloud(None, organised)
    assert (msg.height, msg.width, msg.row_step) == (2, 5, 80) and not msg.is_dense
    got = conversions.read_points(msg)
    np.testing.assert_array_equal(got['ring'], organised['ring'])
    assert conversions.create_cloud(None, organised, is_dense=True).is_dense


def test_create_cloud_keeps_big_endian_and_rejects_unsupported_dtypes():
    points = np.array([(1.0, 2.0, 3.0, 7)], dtype=[('x', '>f4'), ('y', '>f4'), ('z', '>f4'),
                                                   ('t', '>u4')])
    msg = conversions.create_cloud(None, points)
    assert msg.is_bigendian and bytes(msg.data) == struct.pack('>3fI', 1, 2, 3, 7)
    mixed = np.array([(1.0, 7)], dtype=[('x', '>f4'), ('t', '<u4')])
    msg = conversions.create_cloud(None, mixed)
    assert conversions.read_points(msg)['t'][0, 0] == 7
    for bad in (np.zeros(3, [('x', 'f4'), ('n', 'i8')]), np.zeros(3, np.float32),
                np.zeros((2, 2, 2), [('x', 'f4')]), np.zeros(3, [('x', 'f2')])):
        with pytest.raises(ValueError):
            conversions.create_cloud(None, bad)


def test_create_cloud_xyzi_layout():
    xyzi = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32)
    msg = conversions.create_cloud_xyzi(None, xyzi)
    assert [f.name for f in msg.fields] == ['x', 'y', 'z', 'intensity']
    assert bytes(msg.data) == struct.pack('<8f', *range(1, 9))
    np.testing.assert_array_equal(conversions.cloud_to_xyzi(msg), xyzi)
    with pytest.raises(ValueError, match='float32'):
        conversions.create_cloud_xyzi(None, xyzi.astype(np.float64))


# --- NavSatFix -----------------------------------------------------------------------------

@pytest.mark.parametrize('status', [-1, 0, 1, 2])
@pytest.mark.parametrize('covariance_type', [0, 1, 2, 3])
def test_navsatfix_every_status_and_covariance_type(status, covariance_type):
    covariance = [4.0, 0.1, 0.2, 0.1, 5.0, 0.3, 0.2, 0.3, 9.0]
    msg = NavSatFix(latitude=48.1, longitude=-11.5, altitude=520.25,
                    position_covariance=covariance, position_covariance_type=covariance_type)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    msg.header.frame_id = 'gps'
    msg.status.status, msg.status.service = status, 1 | 8
    fix = conversions.navsatfix_to_fix(msg)
    assert (fix.stamp_ns, fix.frame_id, fix.status, fix.service) == (
        12_000_000_345, 'gps', status, 9)
    assert (fix.latitude, fix.longitude, fix.altitude) == (48.1, -11.5, 520.25)
    assert fix.covariance_type == covariance_type
    assert fix.position_covariance.shape == (3, 3)
    assert fix.position_covariance[1, 1] == 5.0 and fix.position_covariance[2, 0] == 0.2


def test_no_fix_may_carry_nan_position():
    msg = NavSatFix(latitude=math.nan, longitude=math.nan, altitude=math.nan)
    msg.status.status = -1
    fix = conversions.navsatfix_to_fix(msg)
    assert fix.status == -1 and math.isnan(fix.latitude) and not fix.has_position


@pytest.mark.parametrize('changes, message', [
    ({'latitude': 123.0}, 'latitude 123.0'), ({'longitude': -180.5}, 'longitude'),
    ({'latitude': math.nan}, 'latitude nan'), ({'altitude': math.inf}, 'altitude inf'),
    ({'status': 5}, 'unknown fix status'), ({'status': -2}, 'STATUS_UNKNOWN'),
    ({'position_covariance_type': 9}, 'unknown position_covariance_type'),
    ({'position_covariance_type': 2, 'cov0': math.nan}, 'not finite'),
    ({'position_covariance_type': 1, 'cov0': -1.0}, 'negative variance'),
])
def test_bad_fixes_raise_value_error(changes, message):
    msg = NavSatFix(latitude=10.0, longitude=5.0, altitude=1.0,
                    position_covariance=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0])
    msg.status.status = changes.pop('status', 0)
    if 'cov0' in changes:
        msg.position_covariance[0] = changes.pop('cov0')
    for key, value in changes.items():
        setattr(msg, key, value)
    with pytest.raises(ValueError, match=message):
        conversions.navsatfix_to_fix(msg)


def test_fix_covariance_must_have_nine_entries():
    msg = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0),
                                                 frame_id='gps'),
                          status=SimpleNamespace(status=0, service=1), latitude=1.0,
                          longitude=2.0, altitude=3.0, position_covariance=[1.0] * 8,
                          position_covariance_type=0)
    with pytest.raises(ValueError, match='9 numbers'):
        conversions.navsatfix_to_fix(msg)


# --- occupancy grid and stamps -------------------------------------------------------------

def test_occupancy_grid_layout_and_inverse():
    grid = BevGrid(x_min=0.0, x_max=4.0, y_min=-1.0, y_max=2.0, resolution=0.5)
    rows, cols = grid.shape  # 8 along x, 6 along y
    classes = np.random.default_rng(4).integers(0, 6, (rows, cols))
    msg = conversions.occupancy_grid(classes, grid, Header(frame_id='base_link'))
    assert (msg.info.width, msg.info.height, msg.info.resolution) == (8, 6, 0.5)
    origin = msg.info.origin
    assert (origin.position.x, origin.position.y, origin.position.z) == (0.0, -1.0, 0.0)
    assert (origin.orientation.x, origin.orientation.y, origin.orientation.z,
            origin.orientation.w) == (0.0, 0.0, 0.0, 1.0)
    for r in range(cols):
        for c in range(rows):
            assert msg.data[r * msg.info.width + c] == classes[c, r]
    back = conversions.occupancy_grid_to_numpy(msg)
    assert back.dtype == np.int8 and back.shape == (rows, cols)
    np.testing.assert_array_equal(back, classes)
    with pytest.raises(ValueError, match='shape'):
        conversions.occupancy_grid(classes.T, grid, None)
    with pytest.raises(ValueError, match='int8'):
        conversions.occupancy_grid(classes + 200, grid, None)
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match='holds 47 cells'):
        conversions.occupancy_grid_to_numpy(msg)
    msg.info.width = 0
    with pytest.raises(ValueError, match='width'):
        conversions.occupancy_grid_to_numpy(msg)


def test_stamps():
    stamp = conversions.ns_to_stamp(1_700_000_000_123_456_789)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert conversions.stamp_to_ns(stamp) == 1_700_000_000_123_456_789
    assert conversions.stamp_to_ns(SimpleNamespace(sec=2, nanosec=999_999_999)) == 2_999_999_999
    for bad in (-1, 1.5, 2 ** 31 * 10 ** 9, True):
        with pytest.raises(ValueError):
            conversions.ns_to_stamp(bad)
    for bad in (SimpleNamespace(sec=1, nanosec=10 ** 9), SimpleNamespace(sec=1, nanosec=-1),
                SimpleNamespace(sec='1', nanosec=0), SimpleNamespace(sec=1)):
        with pytest.raises(ValueError):
            conversions.stamp_to_ns(bad)


# --- rosbags: the training pipeline's messages ---------------------------------------------

@pytest.fixture(scope='module')
def typestore():
    return get_typestore(Stores.ROS2_KILTED)


def _via_rosbags(msg, typestore, msgtype: str):
    decoded = typestore.deserialize_cdr(serialize_message(msg), msgtype)
    assert type(decoded).__module__ != type(msg).__module__
    return decoded


def test_rosbags_messages_decode_the_same(typestore):
    image, _ = _image('bgra8', pad=3)
    image.header.stamp.sec = 9
    bag_image = _via_rosbags(image, typestore, 'sensor_msgs/msg/Image')
    assert isinstance(bag_image.data, np.ndarray)
    np.testing.assert_array_equal(conversions.image_to_rgb8(bag_image),
                                  conversions.image_to_rgb8(image))
    assert conversions.stamp_to_ns(bag_image.header.stamp) == 9 * 10 ** 9

    for big in (False, True):
        points = _mixed_points(12, np.random.default_rng(5), nan_every=4)
        cloud = _mixed_cloud(points, 3, 4, big=big, row_pad=12, is_dense=False)
        bag_cloud = _via_rosbags(cloud, typestore, 'sensor_msgs/msg/PointCloud2')
        assert isinstance(bag_cloud.data, np.ndarray)
        np.testing.assert_array_equal(conversions.cloud_to_xyzi(bag_cloud),
                                      conversions.cloud_to_xyzi(cloud))
        _check_structured(conversions.read_points(bag_cloud), points, 3, 4)

    compressed = conversions.rgb8_to_compressed(_smooth_rgb(), fmt='png')
    np.testing.assert_array_equal(
        conversions.compressed_to_rgb8(
            _via_rosbags(compressed, typestore, 'sensor_msgs/msg/CompressedImage')),
        _smooth_rgb())

    fix = NavSatFix(latitude=47.5, longitude=8.25, altitude=400.0,
                    position_covariance=[1.0, 0, 0, 0, 2.0, 0, 0, 0, 3.0],
                    position_covariance_type=2)
    fix.status.status, fix.header.frame_id = 1, 'gps'
    bag_fix = conversions.navsatfix_to_fix(_via_rosbags(fix, typestore,
                                                        'sensor_msgs/msg/NavSatFix'))
    live_fix = conversions.navsatfix_to_fix(fix)
    assert (bag_fix.latitude, bag_fix.status, bag_fix.frame_id, bag_fix.covariance_type) == (
        live_fix.latitude, live_fix.status, live_fix.frame_id, live_fix.covariance_type)
    np.testing.assert_array_equal(bag_fix.position_covariance, live_fix.position_covariance)

    grid = BevGrid()
    classes = np.random.default_rng(6).integers(0, 6, grid.shape)
    occupancy = conversions.occupancy_grid(classes, grid, None)
    bag_grid = _via_rosbags(occupancy, typestore, 'nav_msgs/msg/OccupancyGrid')
    np.testing.assert_array_equal(conversions.occupancy_grid_to_numpy(bag_grid), classes)


def test_rosbags_header_can_stamp_an_outgoing_message(typestore):
    header = Header(frame_id='cam')
    header.stamp.sec, header.stamp.nanosec = 3, 4
    bag_header = _via_rosbags(header, typestore, 'std_msgs/msg/Header')
    msg = conversions.numpy_to_image(np.zeros((2, 2), np.uint8), 'mono8', bag_header)
    assert isinstance(msg.header, Header)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (3, 4, 'cam')
    assert isinstance(conversions.occupancy_grid(np.zeros(BevGrid().shape, int), BevGrid(),
                                                 bag_header), OccupancyGrid)


@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_compressed_decompression_bomb_is_refused_before_decoding(fmt):
    payload = bytearray(conversions.rgb8_to_compressed(_smooth_rgb(), fmt=fmt).data)
    if fmt == 'png':
        position = 16  # IHDR width, then height
    else:
        position = next(k for k in range(2, len(payload) - 1)
                        if payload[k] == 0xFF and payload[k + 1] == 0xC0) + 5
        assert payload[position:position + 4] == struct.pack('>2H', 48, 64)
    if fmt == 'jpeg':
        payload[position:position + 4] = struct.pack('>HH', 0xFFFF, 0xFFFF)
    else:
        payload[position:position + 8] = struct.pack('>II', 200_000, 200_000)
    msg = CompressedImage(format=fmt, data=bytes(payload))
    with pytest.raises(ValueError, match='claims'):
        conversions.compressed_to_rgb8(msg)


def test_planar_twist_and_its_variance_from_odometry():
    msg = Odometry()
    msg.twist.twist.linear.x, msg.twist.twist.linear.y, msg.twist.twist.angular.z = 3.0, -1.0, 0.2
    covariance = np.eye(6) * 1e6
    covariance[0, 0], covariance[1, 1], covariance[5, 5] = 0.25, 0.5, 0.01
    msg.twist.covariance = covariance.ravel().tolist()
    np.testing.assert_array_equal(conversions.planar_twist(msg), [3.0, -1.0, 0.2])
    np.testing.assert_array_equal(conversions.planar_twist_variance(msg), [0.25, 0.5, 0.01])
    with pytest.raises(ValueError, match='36'):
        conversions.planar_twist_variance(SimpleNamespace(twist=SimpleNamespace(
            covariance=[0.0] * 35)))
