"""The training data pipeline: no train/serve skew, true-capture-time pairing, ground truth."""

from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.serialization import deserialize_message
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import Image, PointCloud2

from fusion_nodes import conversions
from fusion_nodes.core.camera import CameraHealthTracker, preprocess_camera
from fusion_nodes.core.config import CameraPreprocessConfig, LidarModel, PillarConfig, SENSORS
from fusion_nodes.core.gps import GpsTracker
from fusion_nodes.core.lidar import lidar_points_to_base, LidarHealthTracker, pillarize
from fusion_nodes.model.bag_samples import extract_bag_samples, PairingConfig
from fusion_nodes.nodes.params import LIDAR_PARAMS
from fusion_nodes.sim.scenario import scenario_from_dict
from fusion_nodes.sim.world import World
from fusion_nodes.sim.writer import generate_bag

SEED = 11003
SCENARIO = scenario_from_dict({
    'name': 'skew_check', 'duration_s': 1.6,
    'failures': [{'sensor': 'lidar', 'kind': 'dropout', 'start_s': 0.8, 'end_s': 1.6}],
})


@pytest.fixture(scope='module')
def bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('bags') / 'skew_check'
    generate_bag(SCENARIO, SEED, path, duration_s=SCENARIO.duration_s, storage='mcap',
                 compressed_camera=False, progress=False)
    return path


@pytest.fixture(scope='module')
def samples(bag) -> dict[str, np.ndarray]:
    return extract_bag_samples(bag, PairingConfig(camera_stride=1))


def _raw_messages(bag: Path, topic: str) -> list[tuple[bytes, object]]:
    """(CDR bytes, rosbags message) of a topic, in log order."""
    out = []
    with AnyReader([bag]) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        for connection, _, raw in reader.messages(connections=connections):
            out.append((bytes(raw), reader.deserialize(raw, connection.msgtype)))
    return out


def _capture_times(bag: Path) -> dict[tuple[str, int], int]:
    return {(msg.source, conversions.stamp_to_ns(msg.header.stamp)):
            conversions.stamp_to_ns(msg.time_ref)
            for _, msg in _raw_messages(bag, '/gt/capture_time')}


def test_camera_features_and_health_equal_the_core_functions(bag, samples):
    frames = _raw_messages(bag, '/camera/image_raw')
    assert len(frames) == samples['camera'].shape[0] > 30
    tracker = CameraHealthTracker()
    for k, (_, msg) in enumerate(frames):
        rgb = conversions.image_to_rgb8(msg)
        health = tracker.update(rgb)
        if k in (0, 7, len(frames) - 1):
            expected = preprocess_camera(rgb, CameraPreprocessConfig())
            np.testing.assert_array_equal(samples['camera'][k], expected)
            np.testing.assert_array_equal(samples['health'][k, 0], health)


def test_lidar_and_gps_samples_are_the_nearest_in_true_capture_time(bag, samples):
    captures = _capture_times(bag)
    scans = _raw_messages(bag, '/lidar/points')
    tracker = LidarHealthTracker()
    scan_capture, scan_bev, scan_health = [], [], []
    for _, msg in scans:
        xyzi = conversions.cloud_to_xyzi(msg, skip_nans=True)
        scan_health.append(tracker.update(xyzi, int(msg.width) * int(msg.height)))
        base = lidar_points_to_base(xyzi, LidarModel().translation)
        scan_bev.append(pillarize(base, PillarConfig()))
        scan_capture.append(captures[('/lidar/points', conversions.stamp_to_ns(msg.header.stamp))])
    gps_tracker = GpsTracker()
    fixes = []
    for _, msg in _raw_messages(bag, '/gps/fix'):
        sample = gps_tracker.update(conversions.navsatfix_to_fix(msg))
        fixes.append((captures[('/gps/fix', sample.stamp_ns)], sample))
    scan_capture = np.array(scan_capture)
    for k in range(0, samples['camera'].shape[0], 5):
        t = samples['capture_ns'][k]
        j = int(np.argmin(np.abs(scan_capture - t)))
        np.testing.assert_array_equal(samples['lidar'][k], scan_bev[j])
        np.testing.assert_array_equal(samples['health'][k, 1], scan_health[j])
        g = int(np.argmin([abs(c - t) for c, _ in fixes]))
        np.testing.assert_array_equal(samples['gps'][k], fixes[g][1].features)
        np.testing.assert_array_equal(samples['health'][k, 2], fixes[g][1].health)
        # 10 Hz lidar and GPS, no drops: the nearest capture is within half a period.
        assert samples['pair_gap_ns'][k, 1] <= 50_000_000 and samples['available'][k, 1] == 1
    # The lidar flag describes the scan that was paired, not the camera frame's instant, and
    # it is exact at the scan's capture (/gt/failures is also published at window edges).
    world = World(SCENARIO, SEED)
    cameras = samples['capture_ns']
    straddling = 0
    for k in range(cameras.size):
        t = cameras[k]
        scan_t = int(scan_capture[int(np.argmin(np.abs(scan_capture - t)))])
        in_window = world.failure_flags(scan_t)['lidar'] is not None
        assert samples['failed'][k, 1] == int(in_window)
        straddling += in_window != (world.failure_flags(int(t))['lidar'] is not None)
    assert straddling >= 1  # the test would not tell the two rules apart otherwise


def test_ground_truth_matches_the_world_at_the_capture_time(samples):
    world = World(SCENARIO, SEED)
    for k in (0, 10, 40):
        t = int(samples['capture_ns'][k])
        np.testing.assert_array_equal(samples['bev'][k], world.bev_ground_truth(t))
        ego = world.ego_state(t)
        np.testing.assert_allclose(samples['ego'][k], [ego.vx, ego.vy, ego.yaw_rate],
                                   rtol=1e-5, atol=1e-6)
    t_rel = (samples['capture_ns'] - SCENARIO.start_ns) / 1e9
    lidar_failed = samples['failed'][:, SENSORS.index('lidar')]
    # The flag follows the window, give or take the one frame that straddles its start.
    assert (lidar_failed[t_rel < 0.75] == 0).all() and (lidar_failed[t_rel > 0.85] == 1).all()
    assert (samples['failed'][:, [0, 2]] == 0).all()


@pytest.mark.ros
def test_sensor_nodes_publish_exactly_what_training_sees(bag, samples):
    """The deployed nodes, fed the same bag bytes, publish the training features bit for bit."""
    # Imported here: the nodes pull in the aligner, which the pipeline tests above don't need.
    from fusion_nodes.nodes.camera_node import CameraNode
    from fusion_nodes.nodes.lidar_node import LidarNode
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        camera, lidar = CameraNode(context=context), LidarNode(context=context)
        published = {'camera': [], 'lidar': []}
        camera.features_pub.publish = published['camera'].append
        lidar.bev_pub.publish = published['lidar'].append
        frames = _raw_messages(bag, '/camera/image_raw')
        for raw, _ in frames:
            camera._process(deserialize_message(raw, Image))
        scans = _raw_messages(bag, '/lidar/points')
        for raw, _ in scans:
            lidar._process(deserialize_message(raw, PointCloud2))
        for k in (0, 5, len(frames) - 1):
            node_features = conversions.image_to_numpy(published['camera'][k]).transpose(2, 0, 1)
            np.testing.assert_array_equal(node_features, samples['camera'][k])
        np.testing.assert_array_equal(camera.last_health, samples['health'][-1, 0])
        by_stamp = {conversions.stamp_to_ns(m.header.stamp):
                    conversions.image_to_numpy(m).transpose(2, 0, 1) for m in published['lidar']}
        captures = _capture_times(bag)
        for k in range(0, samples['camera'].shape[0], 7):
            t = samples['capture_ns'][k]
            stamp = min(by_stamp, key=lambda s: abs(captures[('/lidar/points', s)] - t))
            np.testing.assert_array_equal(by_stamp[stamp], samples['lidar'][k])
        camera.destroy_node()
        lidar.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_feature_cache_key_follows_sensor_params_and_pairing_only(monkeypatch):
    from fusion_nodes.model import dataset
    spec = dataset.DataSpec()
    key = spec.features_key()
    monkeypatch.setitem(dataset.LIDAR_PARAMS, 'z_max', 9.0)
    assert spec.features_key() != key
    monkeypatch.undo()
    assert dataset.DataSpec(pairing=PairingConfig(stale_ns=1)).features_key() != key
    # fusion_node's runtime settings shape no feature: changing them keeps the cache.
    from fusion_nodes.nodes.params import FUSION_PARAMS
    monkeypatch.setitem(FUSION_PARAMS, 'max_wait_ms', 0.0)
    monkeypatch.setitem(FUSION_PARAMS, 'poll_period_ms', 1.0)
    # Nor does a sensor-node setting that only sets a level (the lidar mount check).
    monkeypatch.setitem(dataset.LIDAR_PARAMS, 'mount_check', False)
    monkeypatch.setitem(dataset.GPS_PARAMS, 'velocity_lag_s', 0.0)
    assert spec.features_key() == key


def test_held_out_scenarios_give_test_recordings_only(tmp_path):
    from fusion_nodes.model import dataset
    spec = dataset.DataSpec(data_dir=tmp_path)
    train = {r.scenario for r in dataset.recordings('train', spec)}
    test = {r.scenario for r in dataset.recordings('test', spec)}
    assert 'lidar_crosstalk' in test and 'lidar_crosstalk' not in train
    assert test - train == {'lidar_crosstalk', 'camera_channel_swap', 'lidar_yaw_misaligned',
                            'camera_upside_down', 'camera_yaw_misaligned'}
    with pytest.raises(ValueError, match='held out of training'):
        dataset.recordings('train', spec, ['lidar_crosstalk'])


def test_node_params_reach_the_extractors_as_on_the_robot(bag, samples):
    # Half the expected sweep size doubles the point ratio, and nothing else changes.
    expected = int(LIDAR_PARAMS['expected_points']) // 2
    lighter = extract_bag_samples(bag, PairingConfig(camera_stride=1),
                                  node_params={'lidar_node': {'expected_points': expected}})
    ratio = samples['health'][:, 1, 0]
    assert (ratio > 0).any()
    np.testing.assert_allclose(lighter['health'][:, 1, 0], np.minimum(ratio * 2, 1.5),
                               rtol=1e-5)
    np.testing.assert_array_equal(lighter['health'][:, 1, 1:], samples['health'][:, 1, 1:])
    np.testing.assert_array_equal(lighter['lidar'], samples['lidar'])
