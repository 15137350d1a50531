"""Each injected fault changes exactly what it claims to in the rewritten bag."""

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores

from fusion_nodes.tools.bag_faults import Fault, FAULTS, inject_fault

TS = get_typestore(Stores.ROS2_KILTED)
NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def _header(ns: int, frame: str):
    sec, nanosec = divmod(ns, NS)
    return TS.types['std_msgs/msg/Header'](
        stamp=TS.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame)


def _cloud(ns: int, seed: int):
    field = TS.types['sensor_msgs/msg/PointField']
    points = np.random.default_rng(seed).uniform(-5, 5, (50, 3)).astype('<f4')
    return TS.types['sensor_msgs/msg/PointCloud2'](
        header=_header(ns, 'lidar'), height=1, width=50,
        fields=[field(name=n, offset=4 * k, datatype=7, count=1) for k, n in enumerate('xyz')],
        is_bigendian=False, point_step=12, row_step=600,
        data=np.frombuffer(points.tobytes(), np.uint8), is_dense=True)


def _fix(ns: int, k: int):
    return TS.types['sensor_msgs/msg/NavSatFix'](
        header=_header(ns, 'gps'),
        status=TS.types['sensor_msgs/msg/NavSatStatus'](status=0, service=1),
        latitude=48.0 + k * 1e-6, longitude=11.0, altitude=500.0,
        position_covariance=np.eye(3).ravel(), position_covariance_type=2)


@pytest.fixture(scope='module')
def source_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp('faults') / 'source'
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        lidar = writer.add_connection('/lidar/points', 'sensor_msgs/msg/PointCloud2',
                                      typestore=TS)
        gps = writer.add_connection('/gps/fix', 'sensor_msgs/msg/NavSatFix', typestore=TS)
        for k in range(100):  # 10 s at 10 Hz, stamps 20 ms before arrival
            ns = T0 + k * 100_000_000
            writer.write(lidar, ns + 20_000_000, TS.serialize_cdr(
                _cloud(ns, k), 'sensor_msgs/msg/PointCloud2'))
            writer.write(gps, ns + 25_000_000, TS.serialize_cdr(
                _fix(ns, k), 'sensor_msgs/msg/NavSatFix'))
    return path


def _read(path):
    with Reader(path) as reader:
        start = reader.start_time
        return [(c.topic, log - start, TS.deserialize_cdr(raw, c.msgtype))
                for c, log, raw in reader.messages()]


def _stamps(records, topic):
    return [m.header.stamp.sec * NS + m.header.stamp.nanosec for t, _, m in records if t == topic]


def test_sensor_dies_removes_only_that_topic_after_start(source_bag, tmp_path):
    out = _read(inject_fault(source_bag, tmp_path / 'o', Fault('sensor_dies', '/lidar/points', 4)))
    lidar_times = [log for t, log, _ in out if t == '/lidar/points']
    assert len(lidar_times) == 40 and max(lidar_times) < 4 * NS
    assert sum(t == '/gps/fix' for t, _, _ in out) == 100


def test_sensor_freezes_repeats_data_with_advancing_stamps(source_bag, tmp_path):
    out = _read(inject_fault(source_bag, tmp_path / 'o',
                             Fault('sensor_freezes', '/lidar/points', 3, 6)))
    clouds = [(log, m) for t, log, m in out if t == '/lidar/points']
    frozen = [m for log, m in clouds if 3 * NS <= log < 6 * NS]
    before = [m for log, m in clouds if log < 3 * NS][-1]
    assert len(frozen) == 30
    assert all(np.array_equal(m.data, before.data) for m in frozen)
    stamps = _stamps(out, '/lidar/points')
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


def test_clock_jump_back_steps_stamps_back(source_bag, tmp_path):
    out = _read(inject_fault(source_bag, tmp_path / 'o',
                             Fault('clock_jump_back', start_s=5, amount=2.0)))
    stamps = np.array(_stamps(out, '/gps/fix'))
    steps = np.diff(stamps)
    assert (steps < 0).sum() == 1 and steps.min() == 100_000_000 - 2 * NS


def test_out_of_order_swaps_pairs(source_bag, tmp_path):
    out = _read(inject_fault(source_bag, tmp_path / 'o',
                             Fault('out_of_order', '/gps/fix', 2, 4)))
    steps = np.diff(_stamps(out, '/gps/fix'))
    assert (steps < 0).sum() == 10 and len(steps) == 99


def test_nan_fields_poison_cloud_points_and_fixes(source_bag, tmp_path):
    out = _read(inject_fault(source_bag, tmp_path / 'o',
                             Fault('nan_fields', '/lidar/points', 5, 6, amount=0.2)))
    poisoned = [m for t, log, m in out if t == '/lidar/points' and 5 * NS <= log < 6 * NS]
    xyz = np.frombuffer(poisoned[0].data.tobytes(), '<f4').reshape(-1, 3)
    assert np.isnan(xyz[:, 0]).sum() == 10 and np.isposinf(xyz[:, 1]).sum() == 10
    assert not poisoned[0].is_dense
    fixes = _read(inject_fault(source_bag, tmp_path / 'g', Fault('nan_fields', '/gps/fix', 5, 6)))
    bad = [m for t, log, m in fixes if t == '/gps/fix' and 5 * NS <= log < 6 * NS]
    assert len(bad) == 10 and all(np.isnan(m.latitude) for m in bad)


def test_burst_doubles_rate_in_window(source_bag, tmp_path):
    out = _read(inject_fault(source_bag, tmp_path / 'o', Fault('burst_2x', start_s=2, end_s=4)))
    gps = [log for t, log, _ in out if t == '/gps/fix']
    assert len(gps) == 120
    stamps = _stamps(out, '/gps/fix')
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


def test_unknown_fault_is_a_clear_error(source_bag, tmp_path):
    with pytest.raises(ValueError, match='unknown fault'):
        inject_fault(source_bag, tmp_path / 'o', Fault('gremlins'))
    assert set(FAULTS) == {'sensor_dies', 'sensor_freezes', 'clock_jump_back', 'out_of_order',
                           'nan_fields', 'burst_2x'}
