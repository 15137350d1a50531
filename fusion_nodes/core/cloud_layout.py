"""Point cloud buffer layout: structured dtypes from PointField tuples, zero-copy views, xyzi.

Pure numpy. Fields arrive as (name, offset, datatype, count) tuples with the PointField
datatype codes, and the point data as a 1-D uint8 array. read_points-style views share
memory with that array; only a byte order other than the host's forces a copy.
"""

import sys

import numpy as np

# sensor_msgs/PointField datatype codes.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
DATATYPES = {INT8: np.dtype('i1'), UINT8: np.dtype('u1'), INT16: np.dtype('i2'),
             UINT16: np.dtype('u2'), INT32: np.dtype('i4'), UINT32: np.dtype('u4'),
             FLOAT32: np.dtype('f4'), FLOAT64: np.dtype('f8')}
_DATATYPE_OF = {dtype: code for code, dtype in DATATYPES.items()}
INTENSITY_FIELDS = ('intensity', 'reflectivity')

FieldSpec = tuple[str, int, int, int]
_UINT32_MAX = 2 ** 32 - 1
# numpy keeps a dtype's itemsize in a C int.
_MAX_POINT_STEP = 2 ** 31 - 1


def _nonnegative_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f'{what} must be an integer, got {value!r}')
    if value < 0:
        raise ValueError(f'{what} must not be negative, got {value}')
    if value > _UINT32_MAX:
        raise ValueError(f'{what} {value} does not fit the message uint32')
    return int(value)


def cloud_dtype(fields: list[FieldSpec], point_step: int, is_bigendian: bool) -> np.dtype:
    """Structured dtype of one point: offsets as given, count > 1 as sub-arrays.

    itemsize is point_step, so padding inside a point is kept. Raises ValueError for an
    unknown datatype, a duplicate or empty name, a count below 1, overlapping fields, or a
    field running past point_step.
    """
    point_step = _nonnegative_int(point_step, 'point_step')
    if point_step > _MAX_POINT_STEP:
        raise ValueError(f'point_step {point_step} is beyond any real point layout')
    order = '>' if is_bigendian else '<'
    names, formats, offsets, extents = [], [], [], []
    for name, offset, datatype, count in fields:
        if not isinstance(name, str) or not name:
            raise ValueError(f'PointField name must be a non-empty string, got {name!r}')
        if name in names:
            raise ValueError(f'duplicate PointField name {name!r}')
        if isinstance(datatype, bool) or not isinstance(datatype, (int, np.integer)) \
                or int(datatype) not in DATATYPES:
            raise ValueError(f'field {name!r} has unknown PointField datatype {datatype!r} '
                             '(expected 1..8)')
        offset = _nonnegative_int(offset, f'field {name!r} offset')
        count = _nonnegative_int(count, f'field {name!r} count')
        if count < 1:
            raise ValueError(f'field {name!r} has count 0')
        base = DATATYPES[int(datatype)].newbyteorder(order)
        end = offset + base.itemsize * count
        if end > point_step:
            raise ValueError(f'field {name!r} ends at byte {end}, past point_step {point_step}')
        names.append(name)
        formats.append(base if count == 1 else np.dtype((base, (count,))))
        offsets.append(offset)
        extents.append((offset, end, name))
    extents.sort()
    for (_, end, first), (start, _, second) in zip(extents, extents[1:]):
        if start < end:
            raise ValueError(f'fields {first!r} and {second!r} overlap')
    return np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                     'itemsize': point_step})


def cloud_view(data: np.ndarray, fields: list[FieldSpec], height: int, width: int,
               point_step: int, row_step: int, is_bigendian: bool,
               native: bool = True) -> np.ndarray:
    """(height, width) structured array over data, a view honouring row_step padding.

    With native=True a cloud in the other byte order is returned as a native-order copy;
    native=False keeps the raw view (numpy still reads its values correctly).
    data must hold exactly row_step * height bytes, as sensor_msgs/PointCloud2 defines.
    """
    dtype = cloud_dtype(fields, point_step, is_bigendian)
    height = _nonnegative_int(height, 'height')
    width = _nonnegative_int(width, 'width')
    row_step = _nonnegative_int(row_step, 'row_step')
    if width > 0 and dtype.itemsize == 0:
        raise ValueError(f'point_step is 0 for a cloud of width {width}')
    if height > 0 and row_step < width * dtype.itemsize:
        raise ValueError(f'row_step {row_step} is less than width {width} x point_step '
                         f'{dtype.itemsize} = {width * dtype.itemsize}')
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 1:
        raise ValueError('cloud data must be a 1-D uint8 array')
    if data.size != row_step * height:
        raise ValueError(f'cloud data holds {data.size} bytes but row_step {row_step} x '
                         f'height {height} needs {row_step * height}')
    if data.size == 0:
        return np.zeros((height, width), dtype=_native(dtype))
    view = np.ndarray(shape=(height, width), dtype=dtype, buffer=data,
                      strides=(row_step, dtype.itemsize))
    if native and not _is_native(dtype):
        return view.astype(_native(dtype))
    return view


def _is_native(dtype: np.dtype) -> bool:
    return all(dtype.fields[name][0].base.isnative for name in dtype.names)


def _native(dtype: np.dtype) -> np.dtype:
    formats = []
    for name in dtype.names:
        field = dtype.fields[name][0]
        base = field.base.newbyteorder('=')
        formats.append(base if field.shape == () else np.dtype((base, field.shape)))
    return np.dtype({'names': list(dtype.names), 'formats': formats,
                     'offsets': [dtype.fields[name][1] for name in dtype.names],
                     'itemsize': dtype.itemsize})


def xyzi_from_points(points: np.ndarray, skip_nonfinite: bool = True) -> np.ndarray:
    """(N, 4) float32 [x, y, z, intensity] from a structured point array of any shape.

    Intensity is taken from 'intensity', else 'reflectivity', else 0. With skip_nonfinite,
    points whose x, y or z is NaN or infinite are dropped (is_dense=false clouds mark
    missing returns with NaN). Any other fields (ring, time, ...) are ignored.
    """
    names = points.dtype.names or ()
    missing = [axis for axis in 'xyz' if axis not in names]
    if missing:
        raise ValueError(f'cloud has no {", ".join(missing)} field(s); fields are {list(names)}')
    intensity = next((name for name in INTENSITY_FIELDS if name in names), None)
    columns = ['x', 'y', 'z'] + ([intensity] if intensity else [])
    for name in columns:
        if points.dtype.fields[name][0].shape != ():
            raise ValueError(f'field {name!r} must have count 1')
    out = np.empty(points.shape + (4,), dtype=np.float32)
    if len(columns) == 4 and _consecutive_float32(points.dtype, columns):
        # x, y, z, intensity side by side: move 16 raw bytes per point in one strided copy
        # (about 7x faster than four float copies), then fix the byte order in place.
        offset = points.dtype.fields['x'][1]
        raw = points.view(np.dtype({'names': ['xyzi'], 'formats': ['V16'],
                                    'offsets': [offset], 'itemsize': points.itemsize}))
        out.view('V16').reshape(points.shape)[...] = raw['xyzi']
        if not points.dtype.fields['x'][0].isnative:
            out.byteswap(inplace=True)
    else:
        for k, name in enumerate(columns):
            out[..., k] = points[name]
        if intensity is None:
            out[..., 3] = 0.0
    out = out.reshape(-1, 4)
    if skip_nonfinite:
        keep = np.isfinite(out[:, 0]) & np.isfinite(out[:, 1]) & np.isfinite(out[:, 2])
        if not keep.all():
            # Select whole 16-byte rows: far faster than boolean indexing of a 2-D array.
            out = out.view('V16').reshape(-1)[keep].view(np.float32).reshape(-1, 4)
    return out


def _consecutive_float32(dtype: np.dtype, columns: list[str]) -> bool:
    first = dtype.fields['x'][1]
    for k, name in enumerate(columns):
        field, offset = dtype.fields[name][:2]
        if field.newbyteorder('=') != np.float32 or offset != first + 4 * k:
            return False
    return len({dtype.fields[name][0].isnative for name in columns}) == 1


def point_fields(dtype: np.dtype) -> list[FieldSpec]:
    """PointField tuples for a structured point dtype (sub-arrays become count)."""
    if dtype.names is None:
        raise ValueError(f'points must be a structured array, got dtype {dtype}')
    fields = []
    for name in dtype.names:
        field, offset = dtype.fields[name][:2]
        base = field.base
        if base.names is not None or base.newbyteorder('=') not in _DATATYPE_OF:
            raise ValueError(f'field {name!r} has dtype {field}, which PointField cannot '
                             'carry (int8..uint32, float32, float64 only)')
        count = int(np.prod(field.shape)) if field.shape else 1
        if count < 1:
            raise ValueError(f'field {name!r} has no elements')
        fields.append((name, int(offset), _DATATYPE_OF[base.newbyteorder('=')], count))
    return fields


def pack_points(points: np.ndarray) -> tuple[list[FieldSpec], int, bool, np.ndarray]:
    """(fields, point_step, is_bigendian, bytes as 1-D uint8) to publish points.

    Points in one foreign byte order keep it (is_bigendian says so); mixed orders are
    brought to native order. Only a non-contiguous array is copied into a packed buffer.
    """
    if not isinstance(points, np.ndarray):
        raise ValueError(f'points must be a structured numpy array, got {type(points).__name__}')
    fields = point_fields(points.dtype)
    orders = {_byteorder(points.dtype.fields[name][0].base) for name in points.dtype.names
              if points.dtype.fields[name][0].base.itemsize > 1}
    if len(orders) > 1:
        points = points.astype(_native(points.dtype))
        orders = {sys.byteorder}
    is_bigendian = (orders.pop() if orders else sys.byteorder) == 'big'
    data = np.ascontiguousarray(points).reshape(-1).view(np.uint8)
    return fields, points.dtype.itemsize, is_bigendian, data


def _byteorder(dtype: np.dtype) -> str:
    if dtype.byteorder in ('=', '|'):
        return sys.byteorder
    return 'big' if dtype.byteorder == '>' else 'little'
