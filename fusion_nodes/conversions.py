"""The one place where ROS messages meet numpy: Image, CompressedImage, PointCloud2,
NavSatFix, OccupancyGrid and stamps.

Every decoder is duck-typed: it reads attributes only, so rclpy messages and rosbags'
deserialised dataclasses (whose data is a numpy uint8 array) go through the same code, and
the training pipeline decodes bags exactly as the live nodes decode topics. Decoders return
views on the message's buffer where the layout allows (modelled on sensor_msgs_py's
point_cloud2 and cv_bridge); copy before writing into them. Malformed input raises
ValueError saying what is wrong.
"""

import array

from builtin_interfaces.msg import Time
import cv2
from nav_msgs.msg import OccupancyGrid
import numpy as np
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from fusion_nodes.core import cloud_layout, image_layout
from fusion_nodes.core.config import BevGrid, NS_PER_S
from fusion_nodes.core.gnss_types import GpsFix

_MAX_STAMP_SEC = 2 ** 31 - 1
# Refuse to decode more than this (a 64 MP frame); a few bytes can claim gigapixels.
MAX_COMPRESSED_PIXELS = 64 * 1024 * 1024
# Most pixels one payload byte can stand for. An all-black frame compresses to about 64
# pixels per byte in JPEG and about 1000 in PNG (mono, zlib level 9); a payload far smaller
# than its header's size claims is a decompression bomb that would make the decoder fill a
# huge buffer for seconds, so it is refused before decoding.
MAX_PIXELS_PER_BYTE = {'jpeg': 2048, 'png': 4096}
_MAGIC = {'jpeg': b'\xff\xd8\xff', 'png': b'\x89PNG\r\n\x1a\n'}
_FORMAT_ALIASES = {'jpeg': 'jpeg', 'jpg': 'jpeg', 'png': 'png'}


def _get(msg, name: str):
    """msg.name, or ValueError naming the missing field (not an AttributeError)."""
    try:
        return getattr(msg, name)
    except AttributeError:
        raise ValueError(f'{type(msg).__name__} has no field {name!r}') from None


def _byte_array(data, what: str) -> np.ndarray:
    """data as a 1-D uint8 array without copying where a buffer allows it."""
    if isinstance(data, np.ndarray):
        if data.dtype.itemsize != 1 or data.dtype.kind not in 'uib' or data.ndim != 1:
            raise ValueError(f'{what} data must be a 1-D byte array, got {data.dtype} '
                             f'{data.shape}')
        return np.ascontiguousarray(data).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        try:
            return np.frombuffer(data, dtype=np.uint8)
        except (ValueError, BufferError):
            # A non-contiguous or odd-itemsize buffer: fall through to the copying path.
            data = memoryview(data).tolist()
    try:
        values = np.asarray(data)
    except (TypeError, ValueError):
        raise ValueError(f'{what} data must be a byte sequence, got {type(data).__name__}') \
            from None
    if values.ndim != 1 or (values.size and (values.dtype.kind not in 'ui' or values.min() < 0
                                             or values.max() > 255)):
        raise ValueError(f'{what} data must be a sequence of bytes 0..255')
    return values.astype(np.uint8)


def _ros_header(header) -> Header:
    """A std_msgs Header from None, a Header, or any object shaped like one (rosbags)."""
    if header is None:
        return Header()
    if isinstance(header, Header):
        return header
    return Header(stamp=ns_to_stamp(stamp_to_ns(_get(header, 'stamp'))),
                  frame_id=str(_get(header, 'frame_id')))


def _uint8_sequence(buffer: np.ndarray) -> array.array:
    # rclpy's setter checks a list element by element; array.array('B') is taken as is.
    out = array.array('B')
    out.frombytes(memoryview(np.ascontiguousarray(buffer)).cast('B'))
    return out


def _with_data(msg, buffer: np.ndarray):
    """msg with its uint8[] data set from buffer; returns msg.

    Set after construction: a constructor's data= is copied once more (array.array of the
    argument) before the setter runs, and each 1 MB copy costs page faults as well as bytes
    (Image(data=...) of a 640x480 rgb8 frame 2.3 ms, this 1.4 ms on Kilted; on Humble and
    Jazzy the setter keeps the array as is).
    """
    msg.data = _uint8_sequence(buffer)
    return msg


# --- time ----------------------------------------------------------------------------------

def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (or anything with sec and nanosec) to int nanoseconds."""
    sec, nanosec = _get(stamp, 'sec'), _get(stamp, 'nanosec')
    for name, value in (('sec', sec), ('nanosec', nanosec)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f'stamp {name} must be an integer, got {value!r}')
    if not 0 <= nanosec < NS_PER_S:
        raise ValueError(f'stamp nanosec {nanosec} is outside [0, 1e9)')
    return int(sec) * NS_PER_S + int(nanosec)


def ns_to_stamp(ns: int) -> Time:
    """int nanoseconds to builtin_interfaces/Time; negative or past-2038 values raise."""
    if isinstance(ns, bool) or not isinstance(ns, (int, np.integer)):
        raise ValueError(f'stamp must be integer nanoseconds, got {ns!r}')
    if ns < 0:
        raise ValueError(f'stamp {ns} ns is negative')
    sec, nanosec = divmod(int(ns), NS_PER_S)
    if sec > _MAX_STAMP_SEC:
        raise ValueError(f'stamp {ns} ns overflows the int32 seconds of builtin_interfaces/Time')
    return Time(sec=sec, nanosec=nanosec)


# --- images --------------------------------------------------------------------------------

def image_to_numpy(msg) -> np.ndarray:
    """(H, W) or (H, W, C) array in the encoding's dtype; a view unless byte order forbids."""
    encoding = _get(msg, 'encoding')
    return image_layout.image_view(
        _byte_array(_get(msg, 'data'), 'image'), _get(msg, 'height'), _get(msg, 'width'),
        encoding, _get(msg, 'step'), bool(_get(msg, 'is_bigendian')))


def image_to_rgb8(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any supported encoding: the camera pipeline's input."""
    return image_layout.to_rgb8(image_to_numpy(msg), _get(msg, 'encoding'))


def _compressed_kind(fmt) -> str:
    """'jpeg' or 'png' from a CompressedImage format such as 'rgb8; jpeg compressed bgr8'."""
    if not isinstance(fmt, str):
        raise ValueError(f'CompressedImage format must be a string, got {fmt!r}')
    words = fmt.split(';')[-1].split()
    kind = _FORMAT_ALIASES.get(words[0].lower()) if words else None
    if kind is None:
        raise ValueError(f'unsupported CompressedImage format {fmt!r} (expected jpeg or png)')
    return kind


def compressed_to_rgb8(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a jpeg or png CompressedImage (mono and alpha handled)."""
    kind = _compressed_kind(_get(msg, 'format'))
    payload = _byte_array(_get(msg, 'data'), 'CompressedImage')
    magic = _MAGIC[kind]
    if payload[:len(magic)].tobytes() != magic:
        raise ValueError(f'CompressedImage says {kind} but its {payload.size} bytes do not '
                         f'start with the {kind} signature')
    height, width = image_layout.compressed_size(payload, kind)
    if not 0 < height * width <= MAX_COMPRESSED_PIXELS:
        raise ValueError(f'CompressedImage {kind} claims {width}x{height} pixels (limit '
                         f'{MAX_COMPRESSED_PIXELS})')
    if height * width > MAX_PIXELS_PER_BYTE[kind] * payload.size:
        raise ValueError(f'CompressedImage {kind} of {payload.size} bytes claims {width}x{height}'
                         f' pixels, more than any real {kind} that small can hold')
    try:
        # Camera pixels must stay where the calibration expects them: ignore EXIF rotation.
        bgr = cv2.imdecode(payload, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as error:
        raise ValueError(f'CompressedImage {kind} payload does not decode: {error}') from None
    if bgr is None:
        raise ValueError(f'CompressedImage {kind} payload of {payload.size} bytes does not '
                         'decode')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def numpy_to_image(array: np.ndarray, encoding: str, header=None) -> Image:
    """sensor_msgs/Image of an array whose dtype and channels match encoding exactly."""
    pixels, is_bigendian = image_layout.array_layout(array, encoding)
    height, width = pixels.shape[:2]
    return _with_data(Image(header=_ros_header(header), height=height, width=width,
                            encoding=encoding, is_bigendian=int(is_bigendian),
                            step=pixels.nbytes // height), pixels)


def rgb8_to_compressed(array: np.ndarray, fmt: str = 'jpeg', quality: int = 90,
                       header=None) -> CompressedImage:
    """jpeg or png CompressedImage of an (H, W, 3) uint8 RGB array."""
    kind = _FORMAT_ALIASES.get(fmt.lower()) if isinstance(fmt, str) else None
    if kind is None:
        raise ValueError(f'unsupported compression {fmt!r} (expected jpeg or png)')
    image_layout.array_layout(array, 'rgb8')
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) \
            or not 1 <= quality <= 100:
        raise ValueError(f'jpeg quality must be an integer in 1..100, got {quality!r}')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if kind == 'jpeg' else []
    ok, encoded = cv2.imencode('.jpg' if kind == 'jpeg' else '.png',
                               cv2.cvtColor(array, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f'OpenCV could not encode a {array.shape} image as {kind}')
    return _with_data(CompressedImage(header=_ros_header(header),
                                      format=f'rgb8; {kind} compressed bgr8'),
                      encoded.reshape(-1))


# --- point clouds --------------------------------------------------------------------------

def _field_specs(cloud) -> list[cloud_layout.FieldSpec]:
    fields = _get(cloud, 'fields')
    try:
        items = list(fields)
    except TypeError:
        raise ValueError(f'PointCloud2 fields must be a list, got {fields!r}') from None
    return [(_get(f, 'name'), _get(f, 'offset'), _get(f, 'datatype'), _get(f, 'count'))
            for f in items]


def _cloud_view(cloud, native: bool) -> np.ndarray:
    return cloud_layout.cloud_view(
        _byte_array(_get(cloud, 'data'), 'PointCloud2'), _field_specs(cloud),
        _get(cloud, 'height'), _get(cloud, 'width'), _get(cloud, 'point_step'),
        _get(cloud, 'row_step'), bool(_get(cloud, 'is_bigendian')), native=native)


def read_points(cloud) -> np.ndarray:
    """(height, width) structured array of every field; a view, or a native copy when the
    cloud is big-endian. Fields with count > 1 are sub-arrays; padding is kept."""
    return _cloud_view(cloud, native=True)


def cloud_to_xyzi(cloud, skip_nans: bool = True) -> np.ndarray:
    """(N, 4) float32 [x, y, z, intensity] from any layout.

    Intensity is 'intensity' or 'reflectivity', else 0. skip_nans drops points whose x, y or
    z is not finite; N then counts only the returns that remain.
    """
    # The raw view is enough: the float32 cast swaps bytes on the way, saving a copy.
    return cloud_layout.xyzi_from_points(_cloud_view(cloud, native=False), skip_nans)


def create_cloud(header, points: np.ndarray, is_dense: bool | None = None) -> PointCloud2:
    """PointCloud2 of a structured array: 1-D gives height 1, 2-D an organised cloud.

    is_dense=None works it out: True when every x, y and z present is finite.
    """
    if not isinstance(points, np.ndarray) or points.ndim not in (1, 2):
        raise ValueError(f'points must be a 1-D or 2-D structured array, got '
                         f'{getattr(points, "shape", type(points).__name__)}')
    fields, point_step, is_bigendian, data = cloud_layout.pack_points(points)
    height, width = (1, points.shape[0]) if points.ndim == 1 else points.shape
    if is_dense is None:
        axes = [name for name in 'xyz' if name in points.dtype.names]
        is_dense = all(bool(np.isfinite(points[name]).all()) for name in axes
                       if points.dtype.fields[name][0].base.kind == 'f')
    return _with_data(PointCloud2(
        header=_ros_header(header), height=height, width=width,
        fields=[PointField(name=name, offset=offset, datatype=datatype, count=count)
                for name, offset, datatype, count in fields],
        is_bigendian=is_bigendian, point_step=point_step, row_step=point_step * width,
        is_dense=bool(is_dense)), data)


XYZI_DTYPE = np.dtype([('x', np.float32), ('y', np.float32), ('z', np.float32),
                       ('intensity', np.float32)])


def create_cloud_xyzi(header, xyzi: np.ndarray) -> PointCloud2:
    """PointCloud2 with x, y, z, intensity float32 fields from an (N, 4) float32 array."""
    if not isinstance(xyzi, np.ndarray) or xyzi.ndim != 2 or xyzi.shape[1] != 4 \
            or xyzi.dtype != np.float32:
        raise ValueError('xyzi must be an (N, 4) float32 array, got '
                         f'{getattr(xyzi, "dtype", type(xyzi).__name__)} '
                         f'{getattr(xyzi, "shape", "")}')
    points = np.ascontiguousarray(xyzi).view(XYZI_DTYPE).reshape(-1)
    return create_cloud(header, points)


# --- GNSS ----------------------------------------------------------------------------------

def navsatfix_to_fix(msg) -> GpsFix:
    """Checked GpsFix from a NavSatFix; see gnss_types for what is rejected."""
    header, status = _get(msg, 'header'), _get(msg, 'status')
    return GpsFix(
        stamp_ns=stamp_to_ns(_get(header, 'stamp')), frame_id=_get(header, 'frame_id'),
        latitude=_get(msg, 'latitude'), longitude=_get(msg, 'longitude'),
        altitude=_get(msg, 'altitude'), status=_get(status, 'status'),
        service=_get(status, 'service'), position_covariance=_get(msg, 'position_covariance'),
        covariance_type=_get(msg, 'position_covariance_type'))


# --- occupancy grid ------------------------------------------------------------------------

def occupancy_grid(classes: np.ndarray, grid: BevGrid, header=None) -> OccupancyGrid:
    """OccupancyGrid of per-cell values on a BevGrid (rows along x, columns along y).

    ROS grids are row-major with x along a row, so info.width counts cells along x and the
    data is classes.T flattened: data[r * width + c] is x index c, y index r.
    """
    if not isinstance(classes, np.ndarray) or classes.ndim != 2 \
            or classes.dtype.kind not in 'iub':
        raise ValueError('classes must be a 2-D integer array')
    if classes.shape != grid.shape:
        raise ValueError(f'classes has shape {classes.shape} but the grid is {grid.shape}')
    if classes.size and (classes.min() < -128 or classes.max() > 127):
        raise ValueError('classes must fit in int8 (-128..127)')
    msg = OccupancyGrid(header=_ros_header(header))
    msg.info.resolution = float(grid.resolution)
    msg.info.width, msg.info.height = grid.shape
    msg.info.origin.position.x = float(grid.x_min)
    msg.info.origin.position.y = float(grid.y_min)
    msg.info.origin.orientation.w = 1.0
    cells = array.array('b')
    cells.frombytes(np.ascontiguousarray(classes.T, dtype=np.int8).tobytes())
    msg.data = cells
    return msg


def planar_twist(msg) -> np.ndarray:
    """(vx, vy, yaw rate) of an Odometry's twist, float64 (3,)."""
    twist = _get(msg, 'twist').twist
    return np.array([twist.linear.x, twist.linear.y, twist.angular.z], dtype=np.float64)


def planar_twist_variance(msg) -> np.ndarray:
    """Variances of an Odometry's (vx, vy, yaw rate), the diagonal of its twist covariance,
    float64 (3,)."""
    covariance = np.asarray(_get(msg, 'twist').covariance, dtype=np.float64)
    if covariance.size != 36:
        raise ValueError(f'twist covariance must hold 36 values, got {covariance.size}')
    return covariance.reshape(6, 6)[[0, 1, 5], [0, 1, 5]].copy()


def occupancy_grid_to_numpy(msg) -> np.ndarray:
    """(cells along x, cells along y) int8 view of an OccupancyGrid: occupancy_grid's inverse."""
    info = _get(msg, 'info')
    width, height = _get(info, 'width'), _get(info, 'height')
    for name, value in (('width', width), ('height', height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f'OccupancyGrid {name} must be a positive integer, got {value!r}')
    data = _byte_array(_get(msg, 'data'), 'OccupancyGrid')
    if data.size != width * height:
        raise ValueError(f'OccupancyGrid data holds {data.size} cells but width {width} x '
                         f'height {height} needs {width * height}')
    return data.view(np.int8).reshape(int(height), int(width)).T
