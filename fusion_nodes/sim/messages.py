"""Builds the ROS 2 messages of a simulated run as rosbags typestore objects (no rclpy).

Kilted is the typestore when rosbags knows it (it is the distro the nodes run), else the newest
ROS 2 store it has.
"""

import math

import cv2
import numpy as np
from rosbags.typesys import get_typestore, Stores

from fusion_nodes.core.config import BevGrid, CameraModel, LidarModel, NS_PER_S
from fusion_nodes.sim.gps_sim import GpsFix
from fusion_nodes.sim.lidar_cast import POINT_DTYPE
from fusion_nodes.sim.objects import SimObject
from fusion_nodes.sim.trajectory import EgoState

FRAME_BASE = 'base_link'
FRAME_ODOM = 'odom'
FRAME_CAMERA = 'camera_optical'
FRAME_LIDAR = 'lidar'
FRAME_GPS = 'gps'
_POINTFIELD_FLOAT32 = 7
_POINTFIELD_UINT16 = 4
_DIAG_OK = 0
_DIAG_ERROR = 2


def default_typestore():
    """The rosbags typestore for Kilted, or the newest ROS 2 store this rosbags has."""
    store = getattr(Stores, 'ROS2_KILTED', None)
    if store is None:
        store = [s for s in Stores if s.name.startswith('ROS2_')][-1]
    return get_typestore(store)


def quaternion_from_matrix(rot: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a proper rotation matrix (Shepperd's method, stable for all angles)."""
    m = np.asarray(rot, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = (s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s)
    return tuple(float(v) for v in q)


class MessageFactory:
    """Message constructors bound to one typestore."""

    def __init__(self, typestore=None) -> None:
        self.store = typestore if typestore is not None else default_typestore()
        self.t = self.store.types

    def serialize(self, msg) -> bytes:
        return self.store.serialize_cdr(msg, msg.__msgtype__)

    def time(self, t_ns: int):
        sec, nanosec = divmod(int(t_ns), NS_PER_S)
        return self.t['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec)

    def header(self, t_ns: int, frame: str):
        return self.t['std_msgs/msg/Header'](stamp=self.time(t_ns), frame_id=frame)

    def _pose(self, x: float, y: float, z: float, yaw: float):
        geo = 'geometry_msgs/msg/'
        return self.t[geo + 'Pose'](
            position=self.t[geo + 'Point'](x=x, y=y, z=z),
            orientation=self.t[geo + 'Quaternion'](x=0.0, y=0.0, z=math.sin(0.5 * yaw),
                                                   w=math.cos(0.5 * yaw)))

    def image(self, img: np.ndarray, stamp_ns: int):
        h, w = img.shape[:2]
        return self.t['sensor_msgs/msg/Image'](
            header=self.header(stamp_ns, FRAME_CAMERA), height=h, width=w, encoding='rgb8',
            is_bigendian=0, step=3 * w, data=np.ascontiguousarray(img).reshape(-1))

    def compressed_image(self, img: np.ndarray, stamp_ns: int, quality: int):
        ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(img[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise ValueError('JPEG encoding of a camera frame failed')
        return self.t['sensor_msgs/msg/CompressedImage'](
            header=self.header(stamp_ns, FRAME_CAMERA), format='rgb8; jpeg compressed bgr8',
            data=buf.reshape(-1))

    def camera_info(self, camera: CameraModel, stamp_ns: int):
        k = camera.k.reshape(-1).astype(np.float64)
        p = np.array([camera.fx, 0.0, camera.cx, 0.0, 0.0, camera.fy, camera.cy, 0.0,
                      0.0, 0.0, 1.0, 0.0])
        return self.t['sensor_msgs/msg/CameraInfo'](
            header=self.header(stamp_ns, FRAME_CAMERA), height=camera.height,
            width=camera.width, distortion_model='plumb_bob', d=np.zeros(5), k=k,
            r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0,
            roi=self.t['sensor_msgs/msg/RegionOfInterest'](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def point_cloud(self, points: np.ndarray, stamp_ns: int):
        if points.dtype != POINT_DTYPE:
            raise ValueError(f'expected lidar points of dtype {POINT_DTYPE}, got {points.dtype}')
        field_cls = self.t['sensor_msgs/msg/PointField']
        fields = []
        for name in POINT_DTYPE.names:
            dtype, offset = POINT_DTYPE.fields[name]
            datatype = _POINTFIELD_UINT16 if dtype == np.dtype('<u2') else _POINTFIELD_FLOAT32
            fields.append(field_cls(name=name, offset=offset, datatype=datatype, count=1))
        # Field by field into zeros: numpy leaves the padding bytes of an indexed structured
        # array uninitialised, and a bag must come out byte-identical for the same seed.
        packed = np.zeros(points.size, dtype=POINT_DTYPE)
        for name in POINT_DTYPE.names:
            packed[name] = points[name]
        return self.t['sensor_msgs/msg/PointCloud2'](
            header=self.header(stamp_ns, FRAME_LIDAR), height=1, width=int(points.size),
            fields=fields, is_bigendian=False, point_step=POINT_DTYPE.itemsize,
            row_step=POINT_DTYPE.itemsize * int(points.size),
            data=packed.view(np.uint8).reshape(-1), is_dense=True)

    def nav_sat_fix(self, fix: GpsFix, stamp_ns: int):
        status = self.t['sensor_msgs/msg/NavSatStatus'](status=fix.status, service=1)
        return self.t['sensor_msgs/msg/NavSatFix'](
            header=self.header(stamp_ns, FRAME_GPS), status=status, latitude=fix.latitude,
            longitude=fix.longitude, altitude=fix.altitude,
            position_covariance=np.array(fix.covariance, dtype=np.float64),
            position_covariance_type=fix.covariance_type)

    def tf_static(self, camera: CameraModel, lidar: LidarModel, stamp_ns: int):
        geo = 'geometry_msgs/msg/'
        rot, _ = camera.base_to_optical()
        # TF rotation maps child-frame vectors into the parent: the inverse of base->optical.
        frames = ((FRAME_CAMERA, camera.translation, rot.T),
                  (FRAME_LIDAR, lidar.translation, np.eye(3)),
                  (FRAME_GPS, (0.0, 0.0, 0.0), np.eye(3)))
        transforms = []
        for child, trans, rmat in frames:
            qx, qy, qz, qw = quaternion_from_matrix(rmat)
            transforms.append(self.t[geo + 'TransformStamped'](
                header=self.header(stamp_ns, FRAME_BASE), child_frame_id=child,
                transform=self.t[geo + 'Transform'](
                    translation=self.t[geo + 'Vector3'](x=float(trans[0]), y=float(trans[1]),
                                                        z=float(trans[2])),
                    rotation=self.t[geo + 'Quaternion'](x=qx, y=qy, z=qz, w=qw))))
        return self.t['tf2_msgs/msg/TFMessage'](transforms=transforms)

    def bev_grid(self, classes: np.ndarray, grid: BevGrid, stamp_ns: int):
        """OccupancyGrid of class ids: width runs along x, height along y (classes.T)."""
        rows, cols = grid.shape
        if classes.shape != (rows, cols):
            raise ValueError(f'BEV classes must be {grid.shape}, got {classes.shape}')
        info = self.t['nav_msgs/msg/MapMetaData'](
            map_load_time=self.time(stamp_ns), resolution=grid.resolution, width=rows,
            height=cols, origin=self._pose(grid.x_min, grid.y_min, 0.0, 0.0))
        return self.t['nav_msgs/msg/OccupancyGrid'](
            header=self.header(stamp_ns, FRAME_BASE), info=info,
            data=np.ascontiguousarray(classes.T).reshape(-1).astype(np.int8))

    def markers(self, objects: list[SimObject], stamp_ns: int):
        """One CUBE marker per object in odom: class in ns, true colour in color."""
        t = self.t
        markers = []
        for obj in objects:
            markers.append(t['visualization_msgs/msg/Marker'](
                header=self.header(stamp_ns, FRAME_ODOM), ns=obj.class_name,
                id=obj.object_id, type=1, action=0,
                pose=self._pose(obj.x, obj.y, 0.5 * obj.size[2], obj.yaw),
                scale=t['geometry_msgs/msg/Vector3'](x=obj.size[0], y=obj.size[1],
                                                     z=obj.size[2]),
                color=t['std_msgs/msg/ColorRGBA'](r=obj.colour[0] / 255.0,
                                                  g=obj.colour[1] / 255.0,
                                                  b=obj.colour[2] / 255.0, a=1.0),
                lifetime=t['builtin_interfaces/msg/Duration'](sec=0, nanosec=200_000_000),
                frame_locked=False, points=[], colors=[], texture_resource='',
                texture=t['sensor_msgs/msg/CompressedImage'](
                    header=self.header(0, ''), format='', data=np.zeros(0, np.uint8)),
                uv_coordinates=[], text=obj.material, mesh_resource='',
                mesh_file=t['visualization_msgs/msg/MeshFile'](filename='',
                                                               data=np.zeros(0, np.uint8)),
                mesh_use_embedded_materials=False))
        return t['visualization_msgs/msg/MarkerArray'](markers=markers)

    def odometry(self, ego: EgoState, stamp_ns: int):
        t = self.t
        geo = 'geometry_msgs/msg/'
        twist = t[geo + 'Twist'](linear=t[geo + 'Vector3'](x=ego.vx, y=ego.vy, z=0.0),
                                 angular=t[geo + 'Vector3'](x=0.0, y=0.0, z=ego.yaw_rate))
        return t['nav_msgs/msg/Odometry'](
            header=self.header(stamp_ns, FRAME_ODOM), child_frame_id=FRAME_BASE,
            pose=t[geo + 'PoseWithCovariance'](pose=self._pose(ego.x, ego.y, 0.0, ego.yaw),
                                               covariance=np.zeros(36)),
            twist=t[geo + 'TwistWithCovariance'](twist=twist, covariance=np.zeros(36)))

    def time_reference(self, stamp_ns: int, capture_ns: int, source: str):
        return self.t['sensor_msgs/msg/TimeReference'](
            header=self.header(stamp_ns, ''), time_ref=self.time(capture_ns), source=source)

    def failures(self, flags: dict[str, str | None], topics: dict[str, str], stamp_ns: int):
        """One status per sensor: ERROR with the failure kind as message, or OK."""
        t = self.t
        statuses = []
        for sensor, kind in flags.items():
            statuses.append(t['diagnostic_msgs/msg/DiagnosticStatus'](
                level=_DIAG_ERROR if kind else _DIAG_OK, name=sensor,
                message=kind if kind else 'OK', hardware_id=topics[sensor],
                values=[t['diagnostic_msgs/msg/KeyValue'](key='failure', value=kind or '')]))
        return t['diagnostic_msgs/msg/DiagnosticArray'](
            header=self.header(stamp_ns, FRAME_BASE), status=statuses)
