"""fusion_node: aligns the sensor nodes' outputs, runs the gated network, publishes products.

Reference frames are the camera's: each camera frame is fused with the lidar and GPS samples
the DTW aligner matches to it, or without them once max_wait has passed. If the camera
itself goes stale the node keeps publishing at camera rate from the remaining sensors, with
the camera marked unavailable, so one dead sensor never silences the output.
"""

from dataclasses import replace
import math
from pathlib import Path
import sys
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Vector3Stamped
from nav_msgs.msg import OccupancyGrid, Odometry
import numpy as np
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from fusion_nodes import conversions
from fusion_nodes.core.align.aligner import AlignerConfig, StreamAligner
from fusion_nodes.core.assessment import gps_in_multipath, HEALTH_FEATURES, sensor_in_error
from fusion_nodes.core.config import BevGrid, CameraModel, SEMANTIC_CLASSES, SENSORS
from fusion_nodes.core.fusion_inputs import build_feed, SensorSample, StampJoiner
from fusion_nodes.core.gps import GPS_FEATURES
from fusion_nodes.core.lidar_odometry import ego_variance, join_ego
from fusion_nodes.core.motion_compensation import (
    compensate_bev, EgoVelocityHold, PlanarVelocity)
from fusion_nodes.core.overlay import draw_overlay
from fusion_nodes.core.postprocess import (
    CLASS_COLOURS, colourise, extract_objects, occupancy_percent, softmax)
from fusion_nodes.core.stats import RejectionCounter, RollingPercentiles
from fusion_nodes.core.watchdog import ProcessingWatchdog, WatchdogConfig
from fusion_nodes.core.yaw_blame import blame_for_yaw, YawBlameConfig
from fusion_nodes.inference.metadata import load_metadata
from fusion_nodes.inference.registry import AUTO, known_backends, make_backend, resolve_auto
from fusion_nodes.nodes.health_msg import odometry_from_values, parse_health_msg, vector
from fusion_nodes.nodes.params import declare_all, FUSION_PARAMS
from fusion_nodes.nodes.runner import run_node, STARTUP_ERRORS
from fusion_nodes.nodes.sensor_node import ERROR, OK, RELIABLE_OUTPUT, STALE, WARN

MODEL_FILE = 'gated_fusion.json'
_DROPPED_GATE = 0.2
_MIN_TIMER_NS = 100_000
# A calibrated offset is a latency or a small clock difference; a second or more is a clock
# that is simply wrong (the aligner treats such steps as time jumps).
_MAX_TIME_OFFSET_NS = 1_000_000_000
# Each CPU runtime's name for its thread count (TensorRT runs on the GPU).
_THREAD_OPTION = {'onnxruntime': 'intra_op_threads', 'torch': 'threads'}
# int8 needs a calibration cache built offline (fusion-build-engine), so the node offers these.
TENSORRT_PRECISIONS = ('fp16', 'fp32')
_LEVEL_NAMES = {OK: 'OK', WARN: 'WARN', ERROR: 'ERROR', STALE: 'STALE'}


def resolve_model_path(param: str) -> Path:
    """The model metadata path: the param, else the installed share dir, else the source tree."""
    if param:
        path = Path(param).expanduser()
        if path.is_dir():
            path = path / MODEL_FILE
        return path
    candidates = [Path(__file__).resolve().parents[2] / 'models' / MODEL_FILE]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.insert(0, Path(get_package_share_directory('fusion_nodes')) / 'models'
                          / MODEL_FILE)
    except (ImportError, LookupError, ValueError, OSError):
        pass  # not installed through ament (source tree, pip -e): the source tree's models/
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f'no {MODEL_FILE} found in {[str(c) for c in candidates]}; '
                            'set the model parameter')


def _wanted(publisher) -> bool:
    return publisher.get_subscription_count() > 0


def _stamp_ns(msg) -> int:
    return conversions.stamp_to_ns(msg.header.stamp)


def backend_options(runtime: str, providers: list[str], cpu_threads: int,
                    tensorrt_precision: str, engine_cache_dir: str = '') -> dict[str, Any]:
    """The make_backend options fusion_node's parameters ask of this runtime.

    Every value is checked whatever the runtime, so a typo fails at startup, not on the day
    the robot moves to a machine where it applies.
    """
    if cpu_threads < 0:
        raise ValueError(f'cpu_threads must be >= 0 (0 = one per core), got {cpu_threads}')
    if tensorrt_precision not in TENSORRT_PRECISIONS:
        raise ValueError(f'tensorrt_precision must be one of {TENSORRT_PRECISIONS}, got '
                         f'{tensorrt_precision!r}')
    options: dict[str, Any] = {'providers': providers} if providers else {}
    if cpu_threads and runtime in _THREAD_OPTION:
        options[_THREAD_OPTION[runtime]] = cpu_threads
    if runtime == 'tensorrt':
        options['precision'] = tensorrt_precision
        if engine_cache_dir:
            options['cache_dir'] = engine_cache_dir
    return options


class SensorTrack:
    """What the fusion node knows about one sensor stream, for matching and diagnostics."""

    def __init__(self, sensor: str) -> None:
        self.sensor = sensor
        self.joiner = StampJoiner()
        self.last_arrival_ns: int | None = None
        self.last_sample: SensorSample | None = None
        self.latency_ms = RollingPercentiles(300)
        self.invalid = RejectionCounter()
        self.gates = RollingPercentiles(30)
        self.matched = 0
        self.missing = 0
        self.dropped_on_error = 0
        self.dropped_on_yaw = 0  # frames fused without it for a yaw disagreement it caused
        self.dropped_on_multipath = 0  # (GPS) frames whose ego came from the lidar instead
        self.in_error = False  # the last sample fused was dropped for its ERROR health


class FusionBehaviour:
    """The fusion node's work, shared by FusionNode and the managed ManagedFusionNode.

    configure() loads and checks the model and builds the backend, aligner and publishers;
    activate() starts the runtime and the subscriptions and timers; deactivate() and
    cleanup() undo them in reverse. Mixed into an rclpy Node or LifecycleNode.
    """

    def configure(self) -> None:
        """Validate params and the model, build everything; raises on a bad setup."""
        p = self.params
        if p['reference_sensor'] != 'camera':
            raise ValueError('reference_sensor: only camera is supported (output at camera rate)')
        self.backend_name = str(p['backend'])
        if self.backend_name not in known_backends():
            raise ValueError(f'backend {self.backend_name!r} is not one of {known_backends()}')
        model_path = resolve_model_path(str(p['model']))
        self.metadata = load_metadata(model_path)
        if tuple(self.metadata.sensor_order) != SENSORS:
            raise ValueError(f'model {model_path} orders its sensors '
                             f'{self.metadata.sensor_order}, this node expects {SENSORS}')
        self.health_names = {s: tuple(self.metadata.health_features[s]) for s in SENSORS}
        if p['drop_sensor_on_error'] and self.health_names != HEALTH_FEATURES:
            raise ValueError(f'drop_sensor_on_error reads health as {HEALTH_FEATURES}, but model '
                             f'{model_path} has {self.health_names}')
        self.yaw_blame_cfg = YawBlameConfig(float(p['yaw_blame_steady_deg']),
                                            float(p['yaw_blame_turned_deg']))
        self.grid = BevGrid(**self.metadata.grid)
        self.camera_model = CameraModel(**{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in self.metadata.camera_model.items()})
        self.input_shapes = self.metadata.input_shapes()
        runtime = resolve_auto() if self.backend_name == AUTO else self.backend_name
        options = backend_options(runtime, [name for name in p['providers'] if name],
                                  int(p['cpu_threads']), str(p['tensorrt_precision']),
                                  str(p['engine_cache_dir']))
        self.backend = make_backend(runtime, model_path, **options)
        self.model_path = model_path
        priors = tuple((sensor, int(round(float(p[f'{sensor}_time_offset_ms']) * 1e6)))
                       for sensor in ('lidar', 'gps'))
        for sensor, prior in priors:
            if abs(prior) > _MAX_TIME_OFFSET_NS:
                raise ValueError(f'{sensor}_time_offset_ms must be within +-'
                                 f'{_MAX_TIME_OFFSET_NS / 1e6:g} ms, got {prior / 1e6:g}')
        self.aligner = StreamAligner(AlignerConfig(
            reference='camera', streams=('lidar', 'gps'),
            max_wait_ns=int(float(p['max_wait_ms']) * 1e6), prior_offsets_ns=priors,
            min_correction_ns=int(float(p['offset_min_correction_ms']) * 1e6)))
        self.tracks = {sensor: SensorTrack(sensor) for sensor in SENSORS}
        self.compensate_lidar = bool(p['lidar_motion_compensation'])
        self.ego_hold = EgoVelocityHold()
        self.lidar_compensated = 0
        self.lidar_not_compensated = 0
        self.watchdog = ProcessingWatchdog(WatchdogConfig(
            warn_ms=float(p['processing_warn_ms']), error_ms=float(p['processing_error_ms']),
            error_consecutive=int(p['processing_error_consecutive'])))
        self.processing_ms = RollingPercentiles(1000)
        # Camera features' arrival here to the fused publish: aligner wait plus our work, on
        # one clock (the header stamp is the sensor's and may be offset or a bag's).
        self.in_node_ms = RollingPercentiles(1000)
        self.published = 0
        self.fallback_frames = 0
        self.ego_with_lidar_odometry = 0
        self.inference_errors = RejectionCounter()
        self._camera_period_ns = 33_333_333
        self._last_output_ns: int | None = None
        self._overlay_images: dict[int, object] = {}
        self._overlay_count = 0
        self._input_subscriptions: list = []
        self._input_timers: list = []
        self._deadline_timer = None
        self._armed_deadline_ns: int | None = None
        self._overlay_input_type()
        self._create_publishers()

    def activate(self) -> None:
        """Start the runtime, then take input: nothing is received before inference can run."""
        self.backend.activate()
        self._create_subscriptions()
        p = self.params
        # Frames waiting on max_wait get a timer at their deadline (_arm_deadline); this one
        # only paces the camera-stale fallback, so it need not wake the executor at 200 Hz.
        self._input_timers.append(self.create_timer(float(p['poll_period_ms']) / 1e3, self._poll))
        # One timer, re-armed: creating and destroying a timer per frame leaks in rclpy
        # (about 100 bytes each, measured on Kilted).
        self._deadline_timer = self.create_timer(1.0, self._on_deadline)
        self._deadline_timer.cancel()
        self._input_timers.append(self._deadline_timer)
        self._input_timers.append(self.create_timer(float(p['diagnostics_period_s']),
                                                    self._publish_diagnostics))
        self.get_logger().info(
            f'fusion_node active: backend {self.backend.describe()}, model {self.metadata.name} '
            f'{self.metadata.version} ({self.model_path})')

    def deactivate(self) -> None:
        """Stop taking input and release the runtime (its GPU memory, for TensorRT)."""
        for timer in self._input_timers:
            timer.cancel()
            self.destroy_timer(timer)
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_timers, self._input_subscriptions = [], []
        self._deadline_timer = None
        self._armed_deadline_ns = None
        if getattr(self, 'backend', None) is not None:
            self.backend.deactivate()

    def cleanup(self) -> None:
        """Drop the publishers and the backend, back to unconfigured."""
        for publisher in self._publishers_owned:
            self.destroy_publisher(publisher)
        self._publishers_owned = []
        self.backend = None

    # ---- setup -------------------------------------------------------------------------

    def _create_publishers(self) -> None:
        def publisher(msg_type, topic: str, qos):
            handle = self.create_publisher(msg_type, topic, qos)
            self._publishers_owned.append(handle)
            return handle
        self._publishers_owned = []
        self.bev_pub = publisher(OccupancyGrid, 'fusion/bev', RELIABLE_OUTPUT)
        self.semantic_pub = publisher(Image, 'fusion/semantic', RELIABLE_OUTPUT)
        self.objects_pub = publisher(MarkerArray, 'fusion/objects', RELIABLE_OUTPUT)
        self.ego_pub = publisher(Odometry, 'fusion/ego', RELIABLE_OUTPUT)
        self.gates_pub = publisher(Vector3Stamped, 'fusion/gates', RELIABLE_OUTPUT)
        self.overlay_pub = (publisher(Image, 'fusion/overlay', RELIABLE_OUTPUT)
                            if self.params['enable_overlay'] else None)
        self.diagnostics_pub = publisher(DiagnosticArray, '/diagnostics', 10)

    def _overlay_input_type(self):
        transport = str(self.params['overlay_transport'])
        msg_type = {'raw': Image, 'compressed': CompressedImage}.get(transport)
        if msg_type is None:
            raise ValueError(f'overlay_transport must be raw or compressed, got {transport!r}')
        return msg_type

    def _create_subscriptions(self) -> None:
        def subscribe(msg_type, topic: str, callback, qos=10) -> None:
            self._input_subscriptions.append(
                self.create_subscription(msg_type, topic, callback, qos))
        subscribe(Image, 'camera/features', lambda m: self._on_part('camera', 'features', m))
        subscribe(DiagnosticArray, 'camera/health', lambda m: self._on_part('camera', 'health', m))
        subscribe(Image, 'lidar/bev', lambda m: self._on_part('lidar', 'features', m))
        subscribe(DiagnosticArray, 'lidar/health', lambda m: self._on_part('lidar', 'health', m))
        subscribe(DiagnosticArray, 'gps/health', self._on_gps_health)
        if self.overlay_pub is not None:
            subscribe(self._overlay_input_type(), str(self.params['overlay_input']),
                      self._on_overlay_image, qos_profile_sensor_data)

    # ---- inputs ------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_part(self, sensor: str, part: str, msg) -> None:
        track = self.tracks[sensor]
        pair = track.joiner.add(_stamp_ns(msg), part, msg)
        if pair is None:
            return
        try:
            features = conversions.image_to_numpy(pair['features'])
            features = np.ascontiguousarray(features.transpose(2, 0, 1))
            name, level, values = parse_health_msg(pair['health'])
            health = vector(values, 'health', self.health_names[sensor])
            signature = float(values.get('signature', 0.0))
        except ValueError as error:
            self._reject(track, str(error))
            return
        self._accept(track, SensorSample(
            sensor, _stamp_ns(msg), self._now_ns(), features, health, signature, level,
            values.get('mount.travel_heading_deg', math.nan), odometry_from_values(values)))

    def _on_gps_health(self, msg: DiagnosticArray) -> None:
        track = self.tracks['gps']
        try:
            _, level, values = parse_health_msg(msg)
            features = vector(values, 'feature', GPS_FEATURES)
            health = vector(values, 'health', self.health_names['gps'])
        except ValueError as error:
            self._reject(track, str(error))
            return
        self._accept(track, SensorSample('gps', _stamp_ns(msg), self._now_ns(), features,
                                         health, float(values.get('signature', 0.0)), level))

    def _reject(self, track: SensorTrack, detail: str) -> None:
        track.invalid.add(detail.split(':', 1)[0][:80])
        self.get_logger().warning(f'invalid {track.sensor} input: {detail}',
                                  throttle_duration_sec=float(self.params['warn_throttle_s']))

    def _accept(self, track: SensorTrack, sample: SensorSample) -> None:
        if track.sensor == 'camera' and track.last_sample is not None:
            period = sample.stamp_ns - track.last_sample.stamp_ns
            if 0 < period < 1_000_000_000:
                self._camera_period_ns = int(0.9 * self._camera_period_ns + 0.1 * period)
        track.last_arrival_ns = sample.arrival_ns
        track.last_sample = sample
        track.latency_ms.add((sample.arrival_ns - sample.stamp_ns) / 1e6)
        self.aligner.push(track.sensor, sample.stamp_ns, sample.arrival_ns, sample.signature,
                          sample)
        self._poll()

    def _on_overlay_image(self, msg) -> None:
        # Kept as received and decoded only if an overlay is drawn on it: decoding every JPEG
        # here would cost as much as the camera node's own decode.
        self._overlay_images[_stamp_ns(msg)] = msg
        while len(self._overlay_images) > 8:
            self._overlay_images.pop(next(iter(self._overlay_images)))

    def _overlay_rgb(self, stamp_ns: int) -> np.ndarray | None:
        msg = self._overlay_images.get(stamp_ns)
        if msg is None:
            return None
        try:
            return (conversions.image_to_rgb8(msg) if isinstance(msg, Image)
                    else conversions.compressed_to_rgb8(msg))
        except ValueError as error:
            self._reject(self.tracks['camera'], f'overlay image: {error}')
            return None

    # ---- fusion ------------------------------------------------------------------------

    def _poll(self) -> None:
        now = self._now_ns()
        frames = self.aligner.poll(now, estimate=False)
        for frame in frames:
            samples = {'camera': frame.payload}
            for sensor in ('lidar', 'gps'):
                match = frame.matches.get(sensor)
                track = self.tracks[sensor]
                if match is None or self._is_stale(abs(match.residual_ns)):
                    samples[sensor] = None
                    track.missing += 1
                else:
                    samples[sensor] = match.payload
                    track.matched += 1
            if samples['lidar'] is not None and self.compensate_lidar:
                # The residual is the scan's capture minus the frame's, on the camera clock.
                samples['lidar'] = self._move_scan(samples['lidar'], frame.stamp_ns,
                                                   -frame.matches['lidar'].residual_ns)
            self._fuse(frame.stamp_ns, samples, now)
        self._fallback_without_camera(now)
        self._arm_deadline()
        if frames:
            # A clock-offset estimate (DTW over seconds of signatures, 2.5-3.5 ms) runs in the
            # gap after a frame's outputs are out, not in front of the frame that made it due.
            self.aligner.update_offsets()

    def _move_scan(self, scan: SensorSample, stamp_ns: int, age_ns: int) -> SensorSample:
        """The lidar pillars moved by the ego motion over age_ns, when the velocity is known."""
        velocity = self.ego_hold.velocity_at(stamp_ns)
        if (velocity is None or not self.ego_hold.usable_interval(age_ns)
                or scan.features.shape[1:] != self.grid.shape):
            # A scan of the wrong shape goes on unmoved: build_feed rejects it with the reason.
            self.lidar_not_compensated += 1
            return scan
        self.lidar_compensated += 1
        features = compensate_bev(scan.features, self.grid, velocity, age_ns / 1e9)
        return replace(scan, features=features)

    def _arm_deadline(self) -> None:
        """Set the deadline timer to the aligner's next deadline: no frame waits past max_wait."""
        deadline = self.aligner.next_deadline_ns()
        if (self._deadline_timer is None or deadline is None
                or deadline == self._armed_deadline_ns):
            return
        self._deadline_timer.timer_period_ns = max(deadline - self._now_ns(), _MIN_TIMER_NS)
        self._deadline_timer.reset()  # counts the new period from now, and un-cancels
        self._armed_deadline_ns = deadline

    def _on_deadline(self) -> None:
        self._deadline_timer.cancel()
        self._armed_deadline_ns = None
        self._poll()

    def _is_stale(self, age_ns: int) -> bool:
        return age_ns > float(self.params['sensor_stale_ms']) * 1e6

    def _fallback_without_camera(self, now: int) -> None:
        camera = self.tracks['camera']
        stale_ns = float(self.params['camera_stale_ms']) * 1e6
        if camera.last_arrival_ns is not None and now - camera.last_arrival_ns < stale_ns:
            return
        since_output = None if self._last_output_ns is None else now - self._last_output_ns
        if since_output is not None and since_output < self._camera_period_ns:
            return
        samples: dict[str, SensorSample | None] = {'camera': None}
        for sensor in ('lidar', 'gps'):
            track = self.tracks[sensor]
            fresh = track.last_arrival_ns is not None and not self._is_stale(
                now - track.last_arrival_ns)
            samples[sensor] = track.last_sample if fresh else None
        if samples['lidar'] is None and samples['gps'] is None:
            return  # nothing at all to fuse: diagnostics report every sensor stale
        self.fallback_frames += 1
        self._fuse(self._camera_clock_ns(now), samples, now)

    def _camera_clock_ns(self, now: int) -> int:
        """now in the camera's stamp clock, so fallback outputs continue its time line.

        Before the first camera frame it is the clock of the sensor heard from last: the node
        clock can be far from the sensors' stamps (a bag replayed without /clock).
        """
        anchor = self.tracks['camera'].last_sample
        if anchor is None:
            heard = (t.last_sample for t in self.tracks.values() if t.last_sample is not None)
            anchor = max(heard, key=lambda s: s.arrival_ns, default=None)
        if anchor is None:
            return now
        return anchor.stamp_ns + (now - anchor.arrival_ns)

    def _without_errors(self, samples: dict[str, SensorSample | None]
                        ) -> dict[str, SensorSample | None]:
        """samples with every sensor in ERROR (level or health) set missing, when enabled."""
        if not self.params['drop_sensor_on_error']:
            return samples
        kept = dict(samples)
        for sensor, sample in samples.items():
            if sample is None:
                continue
            track = self.tracks[sensor]
            # The level also carries checks over time that the health vector cannot (mounts).
            track.in_error = sample.level >= ERROR or sensor_in_error(sensor, sample.health)
            if track.in_error:
                kept[sensor] = None
                track.dropped_on_error += 1
        return kept

    def _infer(self, kept: dict[str, SensorSample | None]) -> dict[str, np.ndarray] | None:
        try:
            return self.backend.infer(build_feed(kept, self.input_shapes))
        except (ValueError, RuntimeError) as error:
            self.inference_errors.add(str(error).split(':', 1)[0][:80])
            self.get_logger().error(f'inference failed: {error}', throttle_duration_sec=5.0)
            return None

    def _yaw_blamed(self, outputs: dict[str, np.ndarray],
                    kept: dict[str, SensorSample | None]) -> str | None:
        """The sensor to drop for the network's camera-lidar yaw disagreement, if any."""
        disagreement = outputs.get('yaw_disagreement')
        lidar = kept.get('lidar')
        if (not self.params['yaw_blame'] or disagreement is None or lidar is None
                or kept.get('camera') is None or float(disagreement.ravel()[0]) < 0.5):
            return None
        return blame_for_yaw(lidar.travel_heading_deg, self.yaw_blame_cfg)

    def _gps_replaced_by_lidar(self, kept: dict[str, SensorSample | None]) -> bool:
        """Whether to fuse the GPS as missing: inside a multipath episode (its health) while
        a kept lidar's odometry can carry the ego velocity (drop_gps_on_multipath)."""
        gps, lidar = kept.get('gps'), kept.get('lidar')
        return bool(self.params['drop_gps_on_multipath'] and self.params['lidar_odometry']
                    and gps is not None and lidar is not None and lidar.odometry.valid
                    and gps_in_multipath(gps.health))

    def _with_lidar_odometry(self, outputs: dict[str, np.ndarray],
                             kept: dict[str, SensorSample | None]) -> dict[str, np.ndarray]:
        """outputs with the network's ego joined with a kept lidar's odometry by inverse
        variance (lidar_odometry); the network reads velocity from GPS alone."""
        lidar = kept.get('lidar')
        if not self.params['lidar_odometry'] or lidar is None or not lidar.odometry.valid:
            return outputs
        velocity, variance = join_ego(outputs['ego_velocity'][0], outputs['ego_log_variance'][0],
                                      lidar.odometry.velocity, lidar.odometry.variance)
        self.ego_with_lidar_odometry += 1
        return {**outputs, 'ego_velocity': velocity[None].astype(np.float32),
                'ego_log_variance': np.log(variance)[None].astype(np.float32)}

    def _fuse(self, stamp_ns: int, samples: dict[str, SensorSample | None], now: int) -> None:
        start = time.perf_counter()
        kept = self._without_errors(samples)
        gps_replaced = self._gps_replaced_by_lidar(kept)
        if gps_replaced:
            kept = {**kept, 'gps': None}
        outputs = self._infer(kept)
        if outputs is None:
            return
        blamed = self._yaw_blamed(outputs, kept)
        if blamed is not None:
            # Run again without it, so the other gates are those of a run without it.
            self.tracks[blamed].dropped_on_yaw += 1
            self.get_logger().warning(
                f'camera and lidar disagree in yaw; the lidar travels '
                f'{kept["lidar"].travel_heading_deg:+.0f} deg off its x axis: {blamed} dropped',
                throttle_duration_sec=float(self.params['warn_throttle_s']))
            kept = {**kept, blamed: None}
            if blamed == 'lidar' and gps_replaced:
                # Its odometry was to replace the GPS: without it the GPS is all there is.
                kept['gps'] = samples['gps']
                gps_replaced = False
            outputs = self._infer(kept)
            if outputs is None:
                return
        if gps_replaced:
            self.tracks['gps'].dropped_on_multipath += 1
        outputs = self._with_lidar_odometry(outputs, kept)
        header = Header(frame_id=str(self.params['base_frame']))
        header.stamp = conversions.ns_to_stamp(stamp_ns)
        self._publish(header, outputs, samples)
        velocity = outputs['ego_velocity'][0]
        self.ego_hold.update(stamp_ns, PlanarVelocity(*(float(v) for v in velocity[:3])),
                             float(np.exp(0.5 * outputs['ego_log_variance'][0, 0])))
        elapsed_ms = (time.perf_counter() - start) * 1e3
        self.processing_ms.add(elapsed_ms)
        self.watchdog.add(elapsed_ms)
        camera = samples.get('camera')
        if camera is not None:
            self.in_node_ms.add((self._now_ns() - camera.arrival_ns) / 1e6)
        self._last_output_ns = now
        self.published += 1

    def _publish(self, header: Header, outputs: dict[str, np.ndarray],
                 samples: dict[str, SensorSample | None]) -> None:
        # Building a message in Python costs more than the inference, so a product nobody
        # subscribes to is not built (the gates and diagnostics always are).
        probabilities = softmax(outputs['bev_logits'][0])
        if _wanted(self.bev_pub):
            self.bev_pub.publish(conversions.occupancy_grid(
                occupancy_percent(probabilities), self.grid, header))
        if _wanted(self.semantic_pub):
            classes = probabilities.argmax(axis=0)
            self.semantic_pub.publish(
                conversions.numpy_to_image(colourise(classes), 'rgb8', header))
        overlay = self._overlay_due(samples)
        objects = []
        if _wanted(self.objects_pub) or overlay:
            objects = extract_objects(probabilities, self.grid,
                                      min_cells=int(self.params['object_min_cells']),
                                      min_confidence=float(self.params['object_min_confidence']))
        if _wanted(self.objects_pub):
            self.objects_pub.publish(self._markers(header, objects))
        if _wanted(self.ego_pub):
            self.ego_pub.publish(self._ego(header, outputs))
        gates = outputs['gates'][0]
        for sensor, gate in zip(SENSORS, gates):
            self.tracks[sensor].gates.add(float(gate))
        gates_msg = Vector3Stamped(header=header)
        gates_msg.vector.x, gates_msg.vector.y, gates_msg.vector.z = (float(g) for g in gates)
        self.gates_pub.publish(gates_msg)
        if overlay:
            rgb = self._overlay_rgb(samples['camera'].stamp_ns)
            if rgb is not None:
                statuses = {s: self._sensor_status(s)[0] for s in SENSORS}
                image = draw_overlay(rgb, objects, gates, self.camera_model, statuses)
                self.overlay_pub.publish(conversions.numpy_to_image(image, 'rgb8', header))

    def _overlay_due(self, samples: dict[str, SensorSample | None]) -> bool:
        """Every overlay_every_n-th camera frame, when someone watches the overlay."""
        if (self.overlay_pub is None or samples.get('camera') is None
                or not _wanted(self.overlay_pub)):
            return False
        self._overlay_count += 1
        return self._overlay_count % max(int(self.params['overlay_every_n']), 1) == 0

    def _markers(self, header: Header, objects) -> MarkerArray:
        markers = [Marker(header=header, action=Marker.DELETEALL)]
        for k, obj in enumerate(objects):
            name = SEMANTIC_CLASSES[obj.class_id]
            colour = CLASS_COLOURS[obj.class_id] / 255.0
            box = Marker(header=header, ns=name, id=2 * k, type=Marker.CUBE, action=Marker.ADD)
            box.pose.position.x, box.pose.position.y, box.pose.position.z = obj.x, obj.y, 0.5
            box.pose.orientation.w = 1.0
            box.scale.x, box.scale.y, box.scale.z = obj.length, obj.width, 1.0
            box.color.r, box.color.g, box.color.b = (float(c) for c in colour)
            box.color.a = float(obj.confidence)
            label = Marker(header=header, ns=name, id=2 * k + 1, type=Marker.TEXT_VIEW_FACING,
                           action=Marker.ADD, text=f'{name} {obj.confidence:.2f}')
            label.pose.position.x, label.pose.position.y, label.pose.position.z = (
                obj.x, obj.y, 1.5)
            label.pose.orientation.w = 1.0
            label.scale.z = 0.6
            label.color.r = label.color.g = label.color.b = label.color.a = 1.0
            markers.extend([box, label])
        return MarkerArray(markers=markers)

    def _ego(self, header: Header, outputs: dict[str, np.ndarray]) -> Odometry:
        velocity = outputs['ego_velocity'][0]
        variance = ego_variance(outputs['ego_log_variance'][0])
        odom = Odometry(child_frame_id=str(self.params['base_frame']))
        odom.header.stamp = header.stamp
        odom.header.frame_id = str(self.params['odom_frame'])
        odom.pose.pose.orientation.w = 1.0
        odom.pose.covariance = (np.eye(6) * 1e6).ravel().tolist()  # velocity-only estimate
        odom.twist.twist.linear.x = float(velocity[0])
        odom.twist.twist.linear.y = float(velocity[1])
        odom.twist.twist.angular.z = float(velocity[2])
        covariance = np.eye(6) * 1e6
        covariance[0, 0], covariance[1, 1], covariance[5, 5] = (float(v) for v in variance)
        odom.twist.covariance = covariance.ravel().tolist()
        return odom

    # ---- diagnostics -------------------------------------------------------------------

    def _sensor_status(self, sensor: str) -> tuple[str, int]:
        track = self.tracks[sensor]
        now = self._now_ns()
        stale_ms = self.params['camera_stale_ms' if sensor == 'camera' else 'sensor_stale_ms']
        if track.last_arrival_ns is None or now - track.last_arrival_ns > float(stale_ms) * 1e6:
            return 'STALE', STALE
        if track.in_error and self.params['drop_sensor_on_error']:
            return 'DROPPED', WARN  # its own node reports ERROR: fused as missing
        if len(track.gates) and track.gates.percentile(50) < _DROPPED_GATE:
            return 'DROPPED', WARN  # the network excludes it: fusion runs on the others
        if track.last_sample is not None and track.last_sample.level >= ERROR:
            # The sensor node reports an error yet the gate still lets its data in.
            return 'INVALID', ERROR
        return 'OK', OK

    def _publish_diagnostics(self) -> None:
        offsets = self.aligner.offsets()
        statuses = []
        for sensor in SENSORS:
            track = self.tracks[sensor]
            state, level = self._sensor_status(sensor)
            values = {
                'status': state,
                'gate': f'{track.gates.percentile(50):.3f}',
                'latency_ms_p50': f'{track.latency_ms.percentile(50):.2f}',
                'matched': str(track.matched),
                'missing': str(track.missing),
                'dropped_on_error': str(track.dropped_on_error),
                'dropped_on_yaw': str(track.dropped_on_yaw),
                'dropped_on_multipath': str(track.dropped_on_multipath),
                'invalid': str(track.invalid.total),
                'unpaired': str(track.joiner.unpaired),
                'sensor_level': ('none' if track.last_sample is None
                                 else _LEVEL_NAMES.get(track.last_sample.level, 'ERROR')),
            }
            estimate = offsets.get(sensor)
            if estimate is not None:
                values['offset_ms'] = f'{estimate.offset_ns / 1e6:.2f}'
                values['offset_confidence'] = f'{estimate.confidence:.2f}'
            statuses.append(DiagnosticStatus(
                level=bytes([level]), name=f'fusion_nodes: fusion/{sensor}',
                message=f'{sensor} {state}', hardware_id=self.get_fully_qualified_name(),
                values=[KeyValue(key=k, value=v) for k, v in values.items()]))
        watchdog_level = self.watchdog.level()
        message = {OK: 'ok', WARN: 'processing over budget',
                   ERROR: 'processing over budget repeatedly'}[watchdog_level]
        node_values = {
            'backend': self.backend.describe(),
            'model': f'{self.metadata.name} {self.metadata.version}',
            'published': str(self.published),
            'fallback_frames': str(self.fallback_frames),
            'ego_with_lidar_odometry': str(self.ego_with_lidar_odometry),
            'inference_errors': str(self.inference_errors.total),
            'lidar_motion_compensated': str(self.lidar_compensated),
            'lidar_not_compensated': str(self.lidar_not_compensated),
            'processing_ms_p50': f'{self.processing_ms.percentile(50):.2f}',
            'processing_ms_p99': f'{self.processing_ms.percentile(99):.2f}',
            'in_node_ms_p50': f'{self.in_node_ms.percentile(50):.2f}',
            'in_node_ms_p99': f'{self.in_node_ms.percentile(99):.2f}',
        }
        node_values.update({f'aligner.{k}': str(v) for k, v in self.aligner.stats().items()})
        statuses.append(DiagnosticStatus(
            level=bytes([watchdog_level]), name='fusion_nodes: fusion_node', message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=v) for k, v in node_values.items()]))
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)


class FusionNode(FusionBehaviour, Node):
    """Publishes fusion/{bev,semantic,objects,ego,gates,overlay} and /diagnostics."""

    def __init__(self, **kwargs) -> None:
        super().__init__('fusion_node', **kwargs)
        self.params = declare_all(self, FUSION_PARAMS)
        self.configure()
        self.activate()

    def destroy_node(self) -> None:
        """Release the inference backend explicitly, never in a finaliser."""
        if getattr(self, 'backend', None) is not None:
            self.deactivate()
            self.backend = None
        super().destroy_node()


class ManagedFusionNode(FusionBehaviour, LifecycleNode):
    """fusion_node as a managed (lifecycle) node, for onboard bringup by a lifecycle manager.

    configure loads and checks the model (a bad one fails the transition, with the reason
    logged, instead of killing the process); activate starts inference and input;
    deactivate stops both and releases the runtime; cleanup returns to unconfigured.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__('fusion_node', **kwargs)
        self.params = declare_all(self, FUSION_PARAMS)
        self.backend = None

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.configure()
        except STARTUP_ERRORS as error:
            self.get_logger().error(f'configure failed: {type(error).__name__}: {error}')
            self.backend = None
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.activate()
        except STARTUP_ERRORS as error:
            self.get_logger().error(f'activate failed: {type(error).__name__}: {error}')
            self.deactivate()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.deactivate()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.backend is not None:
            self.deactivate()
            self.cleanup()
        return TransitionCallbackReturn.SUCCESS


def main(args: list[str] | None = None) -> None:
    """Entry point: ros2 run fusion_nodes fusion_node."""
    sys.exit(run_node(FusionNode, args))


def managed_main(args: list[str] | None = None) -> None:
    """Entry point: ros2 run fusion_nodes fusion_lifecycle_node (starts unconfigured)."""
    sys.exit(run_node(ManagedFusionNode, args))


if __name__ == '__main__':
    main()
