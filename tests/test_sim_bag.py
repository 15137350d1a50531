"""Bags from the generator: readable by rosbags and mcap, byte-deterministic, honest timing."""

from collections import Counter, defaultdict
from dataclasses import replace
import math
from pathlib import Path

import cv2
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
import yaml

from fusion_nodes.core.config import BevGrid
from fusion_nodes.core.geodesy import EnuFrame
from fusion_nodes.sim import cli
from fusion_nodes.sim.lidar_cast import POINT_DTYPE
from fusion_nodes.sim.messages import MessageFactory
from fusion_nodes.sim.scenario import load_scenario
from fusion_nodes.sim.world import World
from fusion_nodes.sim.writer import generate_bag

SEED = 11001
DURATION_S = 2.0
SENSOR_TOPICS = {'camera': '/camera/image_raw', 'lidar': '/lidar/points', 'gps': '/gps/fix'}


@pytest.fixture(scope='module')
def scenario():
    base = load_scenario('nominal')
    timing = dict(base.timing)
    timing['camera'] = replace(timing['camera'], jitter_ms=2.0, drop_prob=0.1)
    timing['lidar'] = replace(timing['lidar'], offset_ms=80.0, jitter_ms=3.0, drift_ppm=500.0)
    timing['gps'] = replace(timing['gps'], offset_ms=120.0, jitter_ms=5.0)
    return replace(base, name='timing_faults', timing=timing)


def _ns(t) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


@pytest.fixture(scope='module')
def bag(tmp_path_factory, scenario):
    path = tmp_path_factory.mktemp('sim') / 'bag'
    generate_bag(scenario, SEED, path, duration_s=DURATION_S, progress=False)
    return path


@pytest.fixture(scope='module')
def messages(bag):
    """topic -> list of (log_ns, message), read through rosbags."""
    out = defaultdict(list)
    with AnyReader([bag]) as reader:
        for conn, log_ns, raw in reader.messages():
            out[conn.topic].append((log_ns, reader.deserialize(raw, conn.msgtype)))
    return out


def test_topics_and_rates(messages, scenario):
    n_frames = len(messages['/gt/bev'])
    assert n_frames == math.ceil(DURATION_S * 1e9 / scenario.timing['camera'].period_ns)
    for topic in ('/gt/objects', '/gt/ego', '/gt/failures'):
        assert len(messages[topic]) == n_frames
    assert 0.7 * n_frames < len(messages['/camera/image_raw']) < n_frames
    assert len(messages['/camera/camera_info']) == len(messages['/camera/image_raw'])
    assert len(messages['/lidar/points']) == math.ceil(DURATION_S * 10)
    assert len(messages['/gps/fix']) == math.ceil(DURATION_S * 10)
    sensor_count = sum(len(messages[t]) for t in SENSOR_TOPICS.values())
    assert len(messages['/gt/capture_time']) == sensor_count
    (_, tf), = messages['/tf_static']
    children = {t.child_frame_id: t for t in tf.transforms}
    assert set(children) == {'camera_optical', 'lidar', 'gps'}
    lidar_tf = children['lidar'].transform.translation
    assert (lidar_tf.x, lidar_tf.y, lidar_tf.z) == scenario.lidar.translation


def test_log_times_are_arrivals_and_sorted(messages, scenario):
    for sensor, topic in SENSOR_TOPICS.items():
        timing = scenario.timing[sensor]
        refs = {(_ns(m.header.stamp)): _ns(m.time_ref) for _, m in messages['/gt/capture_time']
                if m.source == topic}
        logs = [log for log, _ in messages[topic]]
        assert logs == sorted(logs)
        for log, msg in messages[topic]:
            capture = refs[_ns(msg.header.stamp)]
            assert log >= capture + timing.latency_ms * 1e6


def test_stamps_obey_offsets_drift_and_jitter(messages, scenario):
    start = scenario.start_ns
    for sensor, topic in SENSOR_TOPICS.items():
        timing = scenario.timing[sensor]
        residuals = []
        for _, ref in messages['/gt/capture_time']:
            if ref.source != topic:
                continue
            capture, stamp = _ns(ref.time_ref), _ns(ref.header.stamp)
            assert (capture - start - round(timing.phase_ms * 1e6)) % timing.period_ns == 0
            expected = timing.offset_ms * 1e6 + timing.drift_ppm * 1e-6 * (capture - start)
            residuals.append((stamp - capture - expected) / 1e6)
        residuals = np.array(residuals)
        assert np.all(np.abs(residuals) <= 3.0 * timing.jitter_ms + 1e-3), sensor
        # Jitter is really there, at about its stated size.
        assert 0.4 * timing.jitter_ms < residuals.std() < 1.6 * timing.jitter_ms, sensor


def test_gps_track_matches_true_ego_within_sigma(messages, scenario):
    frame = EnuFrame(*scenario.origin)
    ego_by_time = {_ns(m.header.stamp): m for _, m in messages['/gt/ego']}
    ego_times = np.array(sorted(ego_by_time))
    refs = {_ns(m.header.stamp): _ns(m.time_ref) for _, m in messages['/gt/capture_time']
            if m.source == '/gps/fix'}
    world = World(scenario, SEED)
    normalised = []
    for _, fix in messages['/gps/fix']:
        capture = refs[_ns(fix.header.stamp)]
        # /gt/ego runs at camera rate: interpolate it to the fix's true capture time.
        xs = [ego_by_time[t].pose.pose.position.x for t in ego_times]
        ys = [ego_by_time[t].pose.pose.position.y for t in ego_times]
        true_x = np.interp(capture, ego_times, xs)
        true_y = np.interp(capture, ego_times, ys)
        assert true_x == pytest.approx(world.ego_state(capture).x, abs=0.05)
        east, north, _ = frame.to_enu(fix.latitude, fix.longitude, fix.altitude)
        sigma_e, sigma_n = math.sqrt(fix.position_covariance[0]), math.sqrt(
            fix.position_covariance[4])
        assert fix.position_covariance_type == 2 and fix.status.status == 0
        normalised += [(east - true_x) / sigma_e, (north - true_y) / sigma_n]
    assert np.all(np.abs(normalised) < 4.0)


def test_ground_truth_matches_the_world(messages, scenario):
    world = World(scenario, SEED)
    grid = BevGrid()
    rows, cols = grid.shape
    for log, msg in messages['/gt/bev'][::15]:
        t = _ns(msg.header.stamp)
        assert log == t
        assert (msg.info.width, msg.info.height) == (rows, cols)
        assert (msg.info.origin.position.x, msg.info.origin.position.y) == (grid.x_min,
                                                                            grid.y_min)
        classes = np.asarray(msg.data, dtype=np.uint8).reshape(cols, rows).T
        assert np.array_equal(classes, world.bev_ground_truth(t))
        assert np.count_nonzero(classes) > 0
    for _, msg in messages['/gt/objects'][:3]:
        t = _ns(msg.markers[0].header.stamp)
        expected = {o.object_id: o for o in world.objects(t)}
        assert {m.id for m in msg.markers} == set(expected)
        for m in msg.markers:
            assert m.ns == expected[m.id].class_name
            assert round(m.color.r * 255) == expected[m.id].colour[0]
    for _, msg in messages['/gt/failures'][:3]:
        assert [s.name for s in msg.status] == ['camera', 'lidar', 'gps']
        assert all(s.level == 0 and s.message == 'OK' for s in msg.status)


def test_sensor_payloads_decode(messages, scenario):
    _, image = messages['/camera/image_raw'][5]
    assert (image.height, image.width, image.encoding) == (480, 640, 'rgb8')
    _, cloud = messages['/lidar/points'][3]
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'intensity', 'ring', 'time']
    assert cloud.width * cloud.point_step == len(cloud.data) and cloud.width > 10000
    _, info = messages['/camera/camera_info'][0]
    assert info.k[0] == scenario.camera.fx and info.header.frame_id == 'camera_optical'


def test_mcap_library_reads_the_same_messages(bag):
    counts = Counter()
    decoded = {}
    with open(next(bag.glob('*.mcap')), 'rb') as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for _, channel, _, msg in reader.iter_decoded_messages():
            counts[channel.topic] += 1
            decoded.setdefault(channel.topic, msg)
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    expected = {t['topic_metadata']['name']: t['message_count']
                for t in meta['topics_with_message_count']}
    assert dict(counts) == expected
    assert decoded['/lidar/points'].point_step == 24
    assert decoded['/gt/bev'].info.resolution == 0.5


def test_same_seed_gives_a_byte_identical_bag(tmp_path):
    # rosbag2 records the bag's own name inside it, so both runs use the same name.
    paths = [generate_bag('combined', SEED, tmp_path / run / 'bag', duration_s=1.0,
                          compressed_camera=True, progress=False) for run in ('a', 'b')]
    assert sorted(p.name for p in paths[0].iterdir()) == ['bag.mcap', 'metadata.yaml']
    for name in ('bag.mcap', 'metadata.yaml'):
        assert (paths[0] / name).read_bytes() == (paths[1] / name).read_bytes()
    other = generate_bag('combined', SEED + 1, tmp_path / 'c' / 'bag', duration_s=1.0,
                         compressed_camera=True, progress=False)
    assert (other / 'bag.mcap').read_bytes() != (paths[0] / 'bag.mcap').read_bytes()


def test_cloud_padding_is_zero_whatever_the_points_array_held():
    # Indexed (failed) sweeps come with uninitialised padding; the bag must not carry it.
    raw = np.full(5 * POINT_DTYPE.itemsize, 0xAB, dtype=np.uint8)
    points = raw.view(POINT_DTYPE)
    for k, name in enumerate(POINT_DTYPE.names):
        points[name] = k + 1
    data = MessageFactory().point_cloud(points, 10**9).data.reshape(5, POINT_DTYPE.itemsize)
    ring_end = POINT_DTYPE.fields['ring'][1] + 2
    assert (data[:, ring_end:POINT_DTYPE.fields['time'][1]] == 0).all()
    decoded = data.reshape(-1).view(POINT_DTYPE)
    for name in POINT_DTYPE.names:
        assert np.array_equal(decoded[name], points[name])


def test_sqlite3_and_compressed_camera(tmp_path):
    path = generate_bag('nominal', SEED, tmp_path / 'sq', duration_s=0.5, storage='sqlite3',
                        compressed_camera=True, progress=False)
    assert list(path.glob('*.db3'))
    with AnyReader([path]) as reader:
        conns = [c for c in reader.connections if c.topic == '/camera/image_raw/compressed']
        _, _, raw = next(reader.messages(connections=conns))
        msg = reader.deserialize(raw, conns[0].msgtype)
    img = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (480, 640, 3)


def test_cli_writes_a_bag_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / 'cli_bag'
    assert cli.main(['nominal', '--duration', '0.3', '--seed', '5', '-o', str(out),
                     '--no-progress']) == 0
    assert (out / 'metadata.yaml').is_file()
    assert cli.main(['nominal', '--duration', '0.3', '-o', str(out), '--no-progress']) == 2
    assert 'exists' in capsys.readouterr().err
    assert cli.main(['nominal', '--duration', '-1', '-o', str(tmp_path / 'x'),
                     '--no-progress']) == 2
    with pytest.raises(SystemExit):
        cli.main(['nominal', '--storage', 'rosbag1'])


def test_generate_bag_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='storage'):
        generate_bag('nominal', 1, tmp_path / 'x', storage='bag')
    with pytest.raises(ValueError, match='seed'):
        generate_bag('nominal', -3, tmp_path / 'y', duration_s=0.1)
    assert not Path(tmp_path / 'y').exists()


def test_failure_truth_is_published_at_window_edges(tmp_path):
    """Besides every camera capture, /gt/failures marks the exact instant a failure starts."""
    scenario = load_scenario('lidar_rain')
    generate_bag(scenario, SEED, tmp_path / 'bag', duration_s=7.0, progress=False)
    with AnyReader([tmp_path / 'bag']) as reader:
        conns = [c for c in reader.connections if c.topic == '/gt/failures']
        truth = [reader.deserialize(raw, c.msgtype)
                 for c, _, raw in reader.messages(connections=conns)]
    stamps = {_ns(msg.header.stamp): msg for msg in truth}
    edge = scenario.start_ns + 6_000_000_000
    assert edge in stamps
    assert [s.message for s in stamps[edge].status] == ['OK', 'rain', 'OK']
    before = max(t for t in stamps if t < edge)
    assert [s.message for s in stamps[before].status] == ['OK', 'OK', 'OK']
