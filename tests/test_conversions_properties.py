"""Hypothesis properties of the decoders: random valid layouts decode like an independent
struct-based reader and round-trip exactly; random malformed input raises ValueError only.

FUSION_FUZZ_EXAMPLES sets the cases per test (default 100; `make fuzz` runs 10k).
"""

import contextlib
import faulthandler
import functools
import os
import signal
import struct
from types import SimpleNamespace

from hypothesis import assume, given, HealthCheck, settings, strategies as st
import numpy as np
import pytest

from fusion_nodes import conversions
from fusion_nodes.core import gnss_types
from fusion_nodes.core.config import BevGrid

pytestmark = pytest.mark.fuzz

# The deadline fails a slow case after it returns; no_hang() below stops one that never does.
FUZZ = settings(max_examples=int(os.environ.get('FUSION_FUZZ_EXAMPLES', '100')),
                deadline=2000, suppress_health_check=[HealthCheck.too_slow])
HANG_S = 10.0


class Hang(Exception):
    """One fuzz case ran past HANG_S."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise Hang in a Python-level loop after `seconds`; a hang inside C code (no bytecode runs,
    so no signal handler) dumps every thread's stack and kills the run a little later."""
    def _raise(signum, frame):
        raise Hang(f'fuzz case still running after {seconds} s')

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(6 * seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def no_hang(test):
    """Run every hypothesis example of `test` under time_limit(HANG_S)."""
    @functools.wraps(test)
    def guarded(*args, **kwargs):
        with time_limit(HANG_S):
            return test(*args, **kwargs)
    return guarded


def test_time_limit_stops_a_python_loop():
    with pytest.raises(Hang):
        with time_limit(0.05):
            while True:
                pass


STRUCT_CODES = {1: 'b', 2: 'B', 3: 'h', 4: 'H', 5: 'i', 6: 'I', 7: 'f', 8: 'd'}
FIELD_NAMES = ('x', 'y', 'z', 'intensity', 'reflectivity', 'ring', 't', 'time', 'rgb', 'n')


@st.composite
def cloud_layouts(draw):
    """Fields in random order with random gaps, tail padding, row padding and byte order."""
    fields, offset = [], 0
    if draw(st.booleans()):
        # The common lidar prefix: x, y, z, intensity as packed float32 (decoder fast path).
        fields = [(name, 4 * k, 7, 1) for k, name in enumerate(('x', 'y', 'z', 'intensity'))]
        offset = 16
    taken = {f[0] for f in fields}
    names = draw(st.lists(st.sampled_from([n for n in FIELD_NAMES if n not in taken]),
                          min_size=0 if fields else 1, max_size=6, unique=True))
    for name in names:
        datatype = draw(st.integers(1, 8))
        count = draw(st.integers(1, 3))
        offset += draw(st.integers(0, 3))  # a hole before the field
        fields.append((name, offset, datatype, count))
        offset += struct.calcsize(STRUCT_CODES[datatype]) * count
    order = draw(st.permutations(fields))
    point_step = offset + draw(st.integers(0, 5))
    height = draw(st.integers(1, 3))
    width = draw(st.integers(0, 5))
    row_step = width * point_step + draw(st.integers(0, 7))
    big = draw(st.booleans())
    data = draw(st.binary(min_size=row_step * height, max_size=row_step * height))
    return SimpleNamespace(
        height=height, width=width, point_step=point_step, row_step=row_step,
        is_bigendian=big, is_dense=False, data=data,
        fields=[SimpleNamespace(name=n, offset=o, datatype=d, count=c) for n, o, d, c in order])


def _raw(cloud, r: int, c: int, name: str) -> bytes:
    """A field's bytes in the message, reversed per element to little endian if needed."""
    field = next(f for f in cloud.fields if f.name == name)
    size = struct.calcsize(STRUCT_CODES[field.datatype])
    start = r * cloud.row_step + c * cloud.point_step + field.offset
    elements = [cloud.data[start + k * size:start + (k + 1) * size] for k in range(field.count)]
    return b''.join(e[::-1] if cloud.is_bigendian else e for e in elements)


def _little_bytes(value: np.ndarray) -> bytes:
    value = np.asarray(value)
    return value.astype(value.dtype.newbyteorder('<')).tobytes()


@FUZZ
@given(cloud_layouts())
def test_random_clouds_decode_like_struct_and_round_trip(cloud):
    got = conversions.read_points(cloud)
    assert got.shape == (cloud.height, cloud.width)
    assert got.dtype.itemsize == cloud.point_step
    for r in range(cloud.height):
        for c in range(cloud.width):
            for f in cloud.fields:
                assert _little_bytes(got[r, c][f.name]) == _raw(cloud, r, c, f.name)
    again = conversions.read_points(conversions.create_cloud(None, got))
    assert again.dtype == got.dtype
    for f in cloud.fields:
        assert _little_bytes(again[f.name]) == _little_bytes(got[f.name])


@FUZZ
@given(cloud_layouts())
def test_random_clouds_give_xyzi_like_struct(cloud):
    fields = {f.name: f for f in cloud.fields}
    usable = all(n in fields and fields[n].count == 1 for n in 'xyz')
    source = next((n for n in ('intensity', 'reflectivity') if n in fields), None)
    if not usable or (source and fields[source].count != 1):
        with pytest.raises(ValueError):
            conversions.cloud_to_xyzi(cloud)
        return
    rows = []
    for r in range(cloud.height):
        for c in range(cloud.width):
            row = []
            for name in ('x', 'y', 'z') + ((source,) if source else ()):
                code = '<' + STRUCT_CODES[fields[name].datatype]
                row.append(struct.unpack(code, _raw(cloud, r, c, name))[0])
            rows.append(row + [0.0] * (4 - len(row)))
    with np.errstate(over='ignore', invalid='ignore'):
        expected = np.array(rows, dtype=np.float64).reshape(-1, 4).astype(np.float32)
        got = conversions.cloud_to_xyzi(cloud, skip_nans=False)
    np.testing.assert_array_equal(got, expected)
    finite = conversions.cloud_to_xyzi(cloud)
    np.testing.assert_array_equal(finite, expected[np.isfinite(expected[:, :3]).all(axis=1)])


IMAGE_ENCODINGS = {'rgb8': ('B', 3), 'bgr8': ('B', 3), 'rgba8': ('B', 4), 'bgra8': ('B', 4),
                   'mono8': ('B', 1), 'mono16': ('H', 1), '16UC1': ('H', 1), '32FC1': ('f', 1),
                   '8UC3': ('B', 3), '32FC3': ('f', 3), '32FC4': ('f', 4), '16SC2': ('h', 2),
                   '64FC1': ('d', 1), '32SC3': ('i', 3)}


@st.composite
def images(draw):
    encoding = draw(st.sampled_from(sorted(IMAGE_ENCODINGS)))
    code, channels = IMAGE_ENCODINGS[encoding]
    height, width = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    step = width * channels * struct.calcsize(code) + draw(st.integers(0, 9))
    data = draw(st.binary(min_size=step * height, max_size=step * height))
    return SimpleNamespace(height=height, width=width, encoding=encoding, step=step,
                           is_bigendian=draw(st.booleans()), data=data)


@FUZZ
@given(images())
def test_random_images_decode_like_struct_and_round_trip(msg):
    code, channels = IMAGE_ENCODINGS[msg.encoding]
    size = struct.calcsize(code)
    got = conversions.image_to_numpy(msg)
    assert got.shape == ((msg.height, msg.width) if channels == 1
                         else (msg.height, msg.width, channels))
    for r in range(msg.height):
        row = msg.data[r * msg.step:r * msg.step + msg.width * channels * size]
        elements = [row[k:k + size] for k in range(0, len(row), size)]
        expected = b''.join(e[::-1] if msg.is_bigendian else e for e in elements)
        assert _little_bytes(got[r]) == expected
    again = conversions.image_to_numpy(conversions.numpy_to_image(got, msg.encoding))
    assert _little_bytes(again) == _little_bytes(got)
    if code in 'BHfd' and channels != 2:
        assert conversions.image_to_rgb8(msg).shape == (msg.height, msg.width, 3)


# --- malformed input: ValueError and nothing else ------------------------------------------

@FUZZ
@given(cloud_layouts(), st.data())
@no_hang
def test_broken_clouds_raise_value_error(cloud, data):
    extent = max(f.offset + struct.calcsize(STRUCT_CODES[f.datatype]) * f.count
                 for f in cloud.fields)
    breakers = {
        'truncated': lambda: setattr(cloud, 'data', cloud.data[:-data.draw(
            st.integers(1, len(cloud.data)))]) if cloud.data else setattr(cloud, 'data', b'\0'),
        'longer': lambda: setattr(cloud, 'data', cloud.data + b'\0'),
        'bad_datatype': lambda: setattr(data.draw(st.sampled_from(cloud.fields)), 'datatype',
                                        data.draw(st.integers(-5, 300).filter(
                                            lambda d: not 1 <= d <= 8))),
        'duplicate': lambda: cloud.fields.append(SimpleNamespace(**vars(cloud.fields[0]))),
        'past_step': lambda: setattr(cloud, 'point_step', extent - 1),
        'row_step': lambda: setattr(cloud, 'row_step', cloud.width * cloud.point_step - 1),
    }
    kind = data.draw(st.sampled_from(sorted(breakers)))
    if kind == 'row_step':
        assume(cloud.width > 0)
    breakers[kind]()
    with pytest.raises(ValueError):
        conversions.read_points(cloud)
    with pytest.raises(ValueError):
        conversions.cloud_to_xyzi(cloud)


@FUZZ
@given(images(), st.data())
@no_hang
def test_broken_images_raise_value_error(msg, data):
    code, channels = IMAGE_ENCODINGS[msg.encoding]
    breakers = {
        'truncated': lambda: setattr(msg, 'data', msg.data[:-data.draw(
            st.integers(1, len(msg.data)))]),
        'longer': lambda: setattr(msg, 'data', msg.data + b'\0'),
        'narrow_step': lambda: setattr(msg, 'step', data.draw(
            st.integers(0, msg.width * channels * struct.calcsize(code) - 1))),
        'encoding': lambda: setattr(msg, 'encoding', data.draw(st.text(max_size=8).filter(
            lambda e: e not in IMAGE_ENCODINGS and e not in ('rgb16', 'bgr16', 'rgba16',
                                                             'bgra16')
            and not (e[-2:-1] == 'C' and e[-1:] in '1234' and e[:-2] in (
                '8U', '8S', '16U', '16S', '32S', '32F', '64F'))))),
        'zero_width': lambda: setattr(msg, 'width', 0),
        'zero_height': lambda: setattr(msg, 'height', 0),
    }
    breakers[data.draw(st.sampled_from(sorted(breakers)))]()
    with pytest.raises(ValueError):
        conversions.image_to_numpy(msg)


SCALARS = st.one_of(st.integers(), st.integers(0, 64), st.none(),
                    st.text(max_size=4), st.floats(), st.booleans(),
                    st.lists(st.integers(0, 3), max_size=3))
BUFFERS = st.one_of(st.binary(max_size=200), st.none(), st.integers(),
                    st.lists(st.integers(-300, 300), max_size=20), st.text(max_size=5))


def _only_value_error(function, msg):
    """function(msg), or None when it raised ValueError; any other exception fails the test."""
    try:
        return function(msg)
    except ValueError:
        return None


def _check_image(array, msg) -> None:
    """A decoded Image is (height, width[, channels]), whatever else the message held."""
    assert isinstance(array, np.ndarray)
    assert array.ndim in (2, 3) and array.shape[:2] == (msg.height, msg.width)


def _check_rgb(array) -> None:
    assert isinstance(array, np.ndarray) and array.dtype == np.uint8
    assert array.ndim == 3 and array.shape[2] == 3 and array.size > 0


@FUZZ
@given(st.fixed_dictionaries({
    'height': SCALARS, 'width': SCALARS, 'point_step': SCALARS, 'row_step': SCALARS,
    'is_bigendian': st.booleans(), 'data': BUFFERS,
    'fields': st.one_of(SCALARS, st.lists(st.builds(
        SimpleNamespace, name=st.one_of(st.sampled_from(FIELD_NAMES), SCALARS),
        offset=SCALARS, datatype=st.one_of(st.integers(0, 9), SCALARS), count=SCALARS),
        max_size=5))}))
@no_hang
def test_garbage_clouds_only_raise_value_error(values):
    cloud = SimpleNamespace(**values)
    points = _only_value_error(conversions.read_points, cloud)
    if points is not None:
        assert points.shape == (cloud.height, cloud.width)
        assert points.dtype.itemsize == cloud.point_step
    xyzi = _only_value_error(conversions.cloud_to_xyzi, cloud)
    if xyzi is not None:
        assert points is not None, 'cloud_to_xyzi accepted a cloud read_points rejects'
        assert xyzi.dtype == np.float32 and xyzi.ndim == 2 and xyzi.shape[1] == 4
        assert xyzi.shape[0] <= cloud.height * cloud.width


@FUZZ
@given(st.fixed_dictionaries({
    'height': SCALARS, 'width': SCALARS, 'step': SCALARS, 'is_bigendian': st.booleans(),
    'encoding': st.one_of(st.sampled_from(sorted(IMAGE_ENCODINGS)), SCALARS),
    'data': BUFFERS}))
@no_hang
def test_garbage_images_only_raise_value_error(values):
    msg = SimpleNamespace(**values)
    array = _only_value_error(conversions.image_to_numpy, msg)
    if array is not None:
        _check_image(array, msg)
    rgb = _only_value_error(conversions.image_to_rgb8, msg)
    if rgb is not None:
        assert array is not None, 'image_to_rgb8 accepted an image image_to_numpy rejects'
        _check_rgb(rgb)
        assert rgb.shape[:2] == (msg.height, msg.width)


COMPRESSED_FORMATS = st.one_of(
    st.sampled_from(['jpeg', 'png', 'jpg', 'PNG', 'rgb8; jpeg compressed bgr8',
                     'bgr8; png compressed bgr8', 'mono8; png', 'h264', 'tiff', '', ';', None,
                     b'jpeg', 7]),
    st.text(max_size=12))


def _check_compressed(rgb) -> None:
    _check_rgb(rgb)
    assert rgb.shape[0] * rgb.shape[1] <= conversions.MAX_COMPRESSED_PIXELS


@FUZZ
@given(COMPRESSED_FORMATS, st.sampled_from([b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'']),
       st.one_of(st.binary(max_size=300), st.just(b'')))
@no_hang
def test_garbage_compressed_only_raise_value_error(fmt, magic, payload):
    rgb = _only_value_error(conversions.compressed_to_rgb8,
                            SimpleNamespace(format=fmt, data=magic + payload))
    if rgb is not None:
        _check_compressed(rgb)


@FUZZ
@given(st.one_of(SCALARS, BUFFERS, st.just(np.zeros(4, np.float32)),
                 st.just(np.zeros((2, 2), np.uint8))))
@no_hang
def test_garbage_compressed_data_only_raises_value_error(data):
    for fmt in ('jpeg', 'png'):
        rgb = _only_value_error(conversions.compressed_to_rgb8,
                                SimpleNamespace(format=fmt, data=data))
        if rgb is not None:
            _check_compressed(rgb)


@st.composite
def real_compressed(draw):
    """(kind, encoded bytes, height, width) of a small random image OpenCV really encoded."""
    kind = draw(st.sampled_from(['jpeg', 'png']))
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if draw(st.booleans()):
        pixels[...] = pixels[:, :, :1]  # grey: jpeg and png store one channel
    encoded = bytes(conversions.rgb8_to_compressed(pixels, kind).data)
    return kind, encoded, height, width


def _header_size_offsets(kind: str, data: bytes) -> tuple[int, int, int] | None:
    """(height offset, width offset, field bytes) of the size fields, found independently."""
    if kind == 'png':
        return (20, 16, 4) if data[12:16] == b'IHDR' else None
    for marker in (b'\xff\xc0', b'\xff\xc1', b'\xff\xc2'):
        at = data.find(marker, 2)
        if at > 0:
            return at + 5, at + 7, 2
    return None


SIZE_LIES = st.one_of(st.sampled_from([0, 1, 2, 8191, 8192, 8193, 65535, 2 ** 31 - 1,
                                       2 ** 31, 2 ** 32 - 1]),
                      st.integers(0, 4096), st.integers(0, 2 ** 32 - 1))


@FUZZ
@given(real_compressed(), st.data())
@no_hang
def test_damaged_real_compressed_images_only_raise_value_error(image, data):
    kind, encoded, height, width = image
    fmt = f'rgb8; {kind} compressed bgr8'
    clean = conversions.compressed_to_rgb8(SimpleNamespace(format=fmt, data=encoded))
    assert clean.shape == (height, width, 3)  # the undamaged image decodes
    damage = data.draw(st.sampled_from(
        ['truncate', 'overwrite', 'insert', 'delete', 'append', 'lie_size', 'other_format']))
    buf = bytearray(encoded)
    claimed = None
    if damage == 'truncate':
        del buf[data.draw(st.integers(0, len(buf) - 1)):]
    elif damage == 'overwrite':
        for _ in range(data.draw(st.integers(1, 8))):
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    elif damage == 'insert':
        at = data.draw(st.integers(0, len(buf)))
        buf[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    elif damage == 'delete':
        at = data.draw(st.integers(0, len(buf) - 1))
        del buf[at:at + data.draw(st.integers(1, 64))]
    elif damage == 'append':
        buf += data.draw(st.binary(min_size=1, max_size=64))
    elif damage == 'lie_size':
        where = _header_size_offsets(kind, encoded)
        assert where is not None, 'encoder output without a size field'
        at_h, at_w, size = where
        limit = 2 ** (8 * size) - 1
        claimed_h = min(data.draw(SIZE_LIES), limit)
        claimed_w = min(data.draw(SIZE_LIES), limit)
        buf[at_h:at_h + size] = claimed_h.to_bytes(size, 'big')
        buf[at_w:at_w + size] = claimed_w.to_bytes(size, 'big')
        claimed = claimed_h * claimed_w
    else:
        fmt = 'png' if kind == 'jpeg' else 'jpeg'
    rgb = _only_value_error(conversions.compressed_to_rgb8,
                            SimpleNamespace(format=fmt, data=bytes(buf)))
    bomb = claimed is not None and (
        claimed > conversions.MAX_COMPRESSED_PIXELS
        or claimed > conversions.MAX_PIXELS_PER_BYTE[kind] * len(buf))
    if damage == 'other_format' or claimed == 0 or bomb:
        # Wrong signature, an empty image and a decompression bomb are refused before decoding.
        assert rgb is None
    if rgb is not None:
        _check_compressed(rgb)


def test_tiny_jpeg_claiming_64_megapixels_is_refused():
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buf = bytearray(conversions.rgb8_to_compressed(pixels, 'jpeg').data)
    at_h, at_w, size = _header_size_offsets('jpeg', bytes(buf))
    buf[at_h:at_h + size] = buf[at_w:at_w + size] = (8192).to_bytes(2, 'big')
    with pytest.raises(ValueError):
        conversions.compressed_to_rgb8(SimpleNamespace(format='jpeg', data=bytes(buf)))


FIX_NASTY = st.one_of(
    st.floats(), st.sampled_from([float('nan'), float('inf'), -float('inf'), 1e308, -0.0]),
    st.integers(), st.sampled_from([2 ** 63, -2 ** 63 - 1, 2 ** 64]), st.none(), st.booleans(),
    st.text(max_size=4), st.binary(max_size=4), st.just(np.float32('nan')),
    st.just(np.int64(-2)), st.just(np.uint16(3)), st.just(np.float64(91.0)),
    st.lists(st.floats(), max_size=10), st.just(np.full(9, np.inf)),
    st.just(np.eye(3)), st.just([[1.0, 0.0], [0.0, 1.0]]), st.just(-np.eye(3).ravel()))


@st.composite
def valid_fixes(draw):
    """A NavSatFix-shaped message navsatfix_to_fix accepts."""
    finite = {'allow_nan': False, 'allow_infinity': False}
    variances = draw(st.lists(st.floats(0.0, 1e6), min_size=3, max_size=3))
    return {'sec': draw(st.integers(0, 2 ** 31 - 1)), 'nanosec': draw(st.integers(0, 10 ** 9 - 1)),
            'frame_id': draw(st.text(max_size=6)),
            'status': draw(st.sampled_from(gnss_types.STATUSES)),
            'service': draw(st.integers(0, 0xFFFF)),
            'latitude': draw(st.floats(-90.0, 90.0)), 'longitude': draw(st.floats(-180.0, 180.0)),
            'altitude': draw(st.floats(-1e4, 1e5, **finite)),
            'position_covariance': list(np.diag(variances).ravel()),
            'position_covariance_type': draw(st.sampled_from(gnss_types.COVARIANCE_TYPES))}


def _navsatfix(v: dict) -> SimpleNamespace:
    return SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=v['sec'], nanosec=v['nanosec']),
                               frame_id=v['frame_id']),
        status=SimpleNamespace(status=v['status'], service=v['service']),
        latitude=v['latitude'], longitude=v['longitude'], altitude=v['altitude'],
        position_covariance=v['position_covariance'],
        position_covariance_type=v['position_covariance_type'])


def _check_fix(fix) -> None:
    """Whatever got through satisfies the documented contract."""
    assert fix.status in gnss_types.STATUSES and fix.covariance_type in (0, 1, 2, 3)
    assert 0 <= fix.service <= 0xFFFF and isinstance(fix.stamp_ns, int)
    assert fix.position_covariance.shape == (3, 3)
    assert fix.position_covariance.dtype == np.float64
    for name in ('latitude', 'longitude', 'altitude'):
        assert isinstance(getattr(fix, name), float)
    if fix.status >= 0:
        assert -90 <= fix.latitude <= 90 and -180 <= fix.longitude <= 180
        assert np.isfinite(fix.altitude)
    if fix.covariance_type:
        assert np.isfinite(fix.position_covariance).all()
        assert (np.diag(fix.position_covariance) >= 0).all()


@FUZZ
@given(st.fixed_dictionaries({
    'latitude': st.one_of(st.floats(), SCALARS), 'longitude': st.floats(),
    'altitude': st.floats(), 'status': st.one_of(st.integers(-3, 3), SCALARS),
    'service': SCALARS,
    'position_covariance': st.one_of(st.lists(st.floats(), max_size=10), SCALARS),
    'position_covariance_type': st.one_of(st.integers(-1, 4), SCALARS),
    'sec': SCALARS, 'nanosec': SCALARS, 'frame_id': st.one_of(st.just('gps'), SCALARS)}))
@no_hang
def test_garbage_fixes_only_raise_value_error(v):
    fix = _only_value_error(conversions.navsatfix_to_fix, _navsatfix(v))
    if fix is not None:
        _check_fix(fix)


@FUZZ
@given(valid_fixes(), st.data())
@no_hang
def test_one_bad_fix_field_only_raises_value_error(v, data):
    fix = conversions.navsatfix_to_fix(_navsatfix(v))
    _check_fix(fix)  # the undamaged fix is accepted
    names = sorted(v)
    for name in data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        v[name] = data.draw(FIX_NASTY)
    fix = _only_value_error(conversions.navsatfix_to_fix, _navsatfix(v))
    if fix is not None:
        _check_fix(fix)


@pytest.mark.parametrize('name, value', [
    ('latitude', 10 ** 400), ('altitude', -10 ** 400), ('position_covariance', [10 ** 400] * 9)],
    ids=['latitude', 'altitude', 'covariance'])
def test_fix_with_a_huge_integer_raises_value_error(name, value):
    v = {'sec': 1, 'nanosec': 0, 'frame_id': 'gps', 'status': -1, 'service': 1,
         'latitude': 0.0, 'longitude': 0.0, 'altitude': 0.0,
         'position_covariance': [0.0] * 9, 'position_covariance_type': 0, name: value}
    with pytest.raises(ValueError):
        conversions.navsatfix_to_fix(_navsatfix(v))


@FUZZ
@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_occupancy_grids_round_trip(rows, cols, data):
    grid = BevGrid(x_min=0.0, x_max=rows * 0.5, y_min=-cols * 0.25, y_max=cols * 0.25)
    classes = np.array(data.draw(st.lists(st.integers(-128, 127), min_size=rows * cols,
                                          max_size=rows * cols))).reshape(rows, cols)
    msg = conversions.occupancy_grid(classes, grid, None)
    for index in data.draw(st.lists(st.integers(0, rows * cols - 1), max_size=5)):
        r, c = divmod(index, msg.info.width)
        assert msg.data[index] == classes[c, r]
    np.testing.assert_array_equal(conversions.occupancy_grid_to_numpy(msg), classes)
