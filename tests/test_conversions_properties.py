"""Hypothesis properties of the decoders: random valid layouts decode like an independent
struct-based reader and round-trip exactly; random malformed input raises ValueError only.

FUSION_FUZZ_EXAMPLES sets the cases per test (default 100; `make fuzz` runs 10k).
"""

import os
import struct
from types import SimpleNamespace

from hypothesis import assume, given, HealthCheck, settings, strategies as st
import numpy as np
import pytest

from fusion_nodes import conversions
from fusion_nodes.core.config import BevGrid

pytestmark = pytest.mark.fuzz

FUZZ = settings(max_examples=int(os.environ.get('FUSION_FUZZ_EXAMPLES', '100')),
                deadline=2000, suppress_health_check=[HealthCheck.too_slow])

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


def _only_value_error(function, msg) -> None:
    try:
        function(msg)
    except ValueError:
        pass


@FUZZ
@given(st.fixed_dictionaries({
    'height': SCALARS, 'width': SCALARS, 'point_step': SCALARS, 'row_step': SCALARS,
    'is_bigendian': st.booleans(), 'data': BUFFERS,
    'fields': st.one_of(SCALARS, st.lists(st.builds(
        SimpleNamespace, name=st.one_of(st.sampled_from(FIELD_NAMES), SCALARS),
        offset=SCALARS, datatype=st.one_of(st.integers(0, 9), SCALARS), count=SCALARS),
        max_size=5))}))
def test_garbage_clouds_only_raise_value_error(values):
    cloud = SimpleNamespace(**values)
    _only_value_error(conversions.read_points, cloud)
    _only_value_error(conversions.cloud_to_xyzi, cloud)


@FUZZ
@given(st.fixed_dictionaries({
    'height': SCALARS, 'width': SCALARS, 'step': SCALARS, 'is_bigendian': st.booleans(),
    'encoding': st.one_of(st.sampled_from(sorted(IMAGE_ENCODINGS)), SCALARS),
    'data': BUFFERS}))
def test_garbage_images_only_raise_value_error(values):
    msg = SimpleNamespace(**values)
    _only_value_error(conversions.image_to_numpy, msg)
    _only_value_error(conversions.image_to_rgb8, msg)


@FUZZ
@given(st.sampled_from(['jpeg', 'png', 'rgb8; jpeg compressed bgr8', 'h264', '', None]),
       st.sampled_from([b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'']),
       st.binary(max_size=300))
def test_garbage_compressed_only_raise_value_error(fmt, magic, payload):
    _only_value_error(conversions.compressed_to_rgb8,
                      SimpleNamespace(format=fmt, data=magic + payload))


@FUZZ
@given(st.fixed_dictionaries({
    'latitude': st.one_of(st.floats(), SCALARS), 'longitude': st.floats(),
    'altitude': st.floats(), 'status': st.one_of(st.integers(-3, 3), SCALARS),
    'service': SCALARS, 'covariance': st.one_of(st.lists(st.floats(), max_size=10), SCALARS),
    'covariance_type': st.one_of(st.integers(-1, 4), SCALARS),
    'sec': SCALARS, 'nanosec': SCALARS}))
def test_garbage_fixes_only_raise_value_error(v):
    msg = SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=v['sec'], nanosec=v['nanosec']),
                               frame_id='gps'),
        status=SimpleNamespace(status=v['status'], service=v['service']),
        latitude=v['latitude'], longitude=v['longitude'], altitude=v['altitude'],
        position_covariance=v['covariance'], position_covariance_type=v['covariance_type'])
    try:
        fix = conversions.navsatfix_to_fix(msg)
    except ValueError:
        return
    # Whatever got through satisfies the documented contract.
    assert fix.status in (-1, 0, 1, 2) and fix.covariance_type in (0, 1, 2, 3)
    assert fix.position_covariance.shape == (3, 3)
    if fix.status >= 0:
        assert -90 <= fix.latitude <= 90 and -180 <= fix.longitude <= 180
        assert np.isfinite(fix.altitude)
    if fix.covariance_type:
        assert np.isfinite(fix.position_covariance).all()


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
