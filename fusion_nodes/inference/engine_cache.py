"""TensorRT engine cache: when a serialised engine may be reused and when it must be rebuilt.

Pure logic, no tensorrt import. An engine is valid only for the exact ONNX bytes, precision,
TensorRT version, GPU compute capability, input shapes and builder options it was built
with, so those form the key, stored in a JSON sidecar beside the engine:

    <cache_dir>/<model>.<precision>[.dla<N>].engine
    <cache_dir>/<model>.<precision>[.dla<N>].engine.json   {format, key, engine_sha256, ...}

A missing engine builds; a changed key rebuilds and logs which fields changed (old -> new);
an unreadable sidecar or an engine whose bytes no longer match the sidecar rebuilds. Builds
hold an exclusive file lock, so two processes starting together build once. The TensorRT-
facing parts (Platform, EngineBuilder) are small interfaces, injected by the caller.
"""

from dataclasses import asdict, dataclass, fields
import errno
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
import time
from typing import Callable, Protocol

from fusion_nodes.inference.metadata import file_sha256, ModelMetadata

PRECISIONS = ('fp32', 'fp16', 'int8')
SIDECAR_FORMAT = 'fusion_nodes.engine-cache/1'
DEFAULT_LOCK_TIMEOUT_S = 1800.0
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    """The builder settings a user chooses; each one changes the engine that comes out.

    calibration_id names the int8 calibration data (e.g. a hash of the calibration set),
    so new calibration data rebuilds the engine.
    """

    precision: str = 'fp16'
    workspace_mb: int = 1024
    dla_core: int | None = None
    calibration_id: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {list(PRECISIONS)}, '
                             f'got {self.precision!r}')
        if not isinstance(self.workspace_mb, int) or self.workspace_mb < 1:
            raise ValueError(f'workspace_mb must be a positive integer, got {self.workspace_mb!r}')
        if self.dla_core is not None and (not isinstance(self.dla_core, int)
                                          or self.dla_core < 0):
            raise ValueError(f'dla_core must be None or a non-negative integer, '
                             f'got {self.dla_core!r}')
        if self.precision == 'int8' and not self.calibration_id:
            raise ValueError('int8 needs calibration_id naming the calibration data, so the '
                             'cache can tell engines calibrated on different data apart')


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialised engine depends on."""

    onnx_sha256: str
    precision: str
    tensorrt_version: str
    compute_capability: str
    input_profile: tuple[tuple[str, tuple[int, ...]], ...]
    workspace_mb: int
    dla_core: int | None
    calibration_id: str | None

    def to_dict(self) -> dict:
        out = asdict(self)
        out['input_profile'] = {name: list(shape) for name, shape in self.input_profile}
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> 'EngineKey':
        """Parse a sidecar's key; ValueError if any field is missing or mistyped."""
        names = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) != names:
            raise ValueError(f'key must have exactly the fields {sorted(names)}')
        profile = raw['input_profile']
        if not isinstance(profile, dict):
            raise ValueError('input_profile must map input names to shapes')
        try:
            values = {**raw, 'input_profile': tuple(
                (str(name), tuple(int(d) for d in shape)) for name, shape in profile.items())}
        except (TypeError, ValueError) as error:
            raise ValueError(f'input_profile is malformed: {error}') from error
        return cls(**values)

    def changes_from(self, old: 'EngineKey') -> list[str]:
        """'field: old -> new' for every field that differs from old."""
        new_dict, old_dict = self.to_dict(), old.to_dict()
        return [f'{name}: {old_dict[name]!r} -> {new_dict[name]!r}'
                for name in new_dict if new_dict[name] != old_dict[name]]


class Platform(Protocol):
    """The TensorRT and GPU this process would build for."""

    def tensorrt_version(self) -> str: ...

    def compute_capability(self) -> str: ...


class EngineBuilder(Protocol):
    """Builds a serialised engine from an ONNX file."""

    def build(self, onnx_path: Path, options: BuildOptions) -> bytes: ...


def make_key(metadata: ModelMetadata, options: BuildOptions, platform: Platform) -> EngineKey:
    return EngineKey(
        onnx_sha256=metadata.onnx_sha256, precision=options.precision,
        tensorrt_version=str(platform.tensorrt_version()),
        compute_capability=str(platform.compute_capability()),
        input_profile=tuple((spec['name'], tuple(spec['shape'])) for spec in metadata.inputs),
        workspace_mb=options.workspace_mb, dla_core=options.dla_core,
        calibration_id=options.calibration_id)


@dataclass(frozen=True)
class CacheStatus:
    """Whether the cached engine can be used, and if not, why."""

    valid: bool
    reason: str
    changes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CacheResult:
    engine_path: Path
    key: EngineKey
    built: bool
    reason: str


class EngineCache:
    """Engines and their sidecars in one directory."""

    def __init__(self, cache_dir: str | os.PathLike,
                 lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                 log: logging.Logger | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.lock_timeout_s = lock_timeout_s
        self.log = log or _LOG

    def engine_path(self, metadata: ModelMetadata, options: BuildOptions) -> Path:
        # Precision and DLA core are in the name so the variants a user switches between
        # can live side by side; everything else in the key replaces the engine in place.
        dla = f'.dla{options.dla_core}' if options.dla_core is not None else ''
        return self.cache_dir / f'{metadata.name}.{options.precision}{dla}.engine'

    @staticmethod
    def sidecar_path(engine_path: Path) -> Path:
        return engine_path.with_name(engine_path.name + '.json')

    def check(self, engine_path: Path, key: EngineKey) -> CacheStatus:
        """Whether engine_path holds a usable engine for key (no building, no locking)."""
        if not engine_path.is_file():
            return CacheStatus(False, f'no engine at {engine_path}')
        sidecar = self.sidecar_path(engine_path)
        try:
            raw = json.loads(sidecar.read_text())
            if not isinstance(raw, dict) or raw.get('format') != SIDECAR_FORMAT:
                raise ValueError(f'format is not {SIDECAR_FORMAT!r}')
            cached = EngineKey.from_dict(raw['key'])
            engine_sha = raw['engine_sha256']
        except FileNotFoundError:
            return CacheStatus(False, f'no sidecar {sidecar} for the engine')
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            return CacheStatus(False, f'unreadable sidecar {sidecar}: {error}')
        if cached != key:
            changes = tuple(key.changes_from(cached))
            return CacheStatus(False, 'cache key changed: ' + '; '.join(changes), changes)
        if file_sha256(engine_path) != engine_sha:
            return CacheStatus(False, f'{engine_path} does not match the sha256 in its sidecar '
                                      '(truncated or overwritten)')
        return CacheStatus(True, 'cached engine matches the key')

    def ensure(self, metadata: ModelMetadata, options: BuildOptions, platform: Platform,
               builder: EngineBuilder) -> CacheResult:
        """The path of a valid engine for this model and platform, building it if needed."""
        key = make_key(metadata, options, platform)
        engine_path = self.engine_path(metadata, options)
        status = self.check(engine_path, key)
        if status.valid:
            return CacheResult(engine_path, key, False, status.reason)
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(f'cannot create the engine cache {self.cache_dir} ({error}); give a '
                          f'writable directory (fusion_node: engine_cache_dir)') from error
        with BuildLock(engine_path.with_name(engine_path.name + '.lock'), self.lock_timeout_s,
                       self.log):
            # Another process may have built it while this one waited for the lock.
            recheck = self.check(engine_path, key)
            if recheck.valid:
                return CacheResult(engine_path, key, False,
                                   'built by another process while waiting for the lock')
            self.log.warning('building TensorRT engine %s (%s); this can take minutes',
                             engine_path, recheck.reason)
            started = time.monotonic()
            data = builder.build(metadata.onnx_path, options)
            if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
                raise RuntimeError(f'the TensorRT builder produced no engine for '
                                   f'{metadata.onnx_path}')
            self._store(engine_path, bytes(data), key, time.monotonic() - started)
        self.log.info('engine %s built in %.1f s', engine_path, time.monotonic() - started)
        return CacheResult(engine_path, key, True, recheck.reason)

    def require(self, metadata: ModelMetadata, options: BuildOptions,
                platform: Platform) -> CacheResult:
        """The valid cached engine, or RuntimeError saying why there is none (never builds)."""
        key = make_key(metadata, options, platform)
        engine_path = self.engine_path(metadata, options)
        status = self.check(engine_path, key)
        if not status.valid:
            raise RuntimeError(f'no usable engine for {metadata.name}: {status.reason}; '
                               'build it with fusion-build-engine')
        return CacheResult(engine_path, key, False, status.reason)

    def _store(self, engine_path: Path, data: bytes, key: EngineKey, build_s: float) -> None:
        # Engine first, sidecar last, each by atomic rename: a crash in between leaves an
        # engine without a matching sidecar, which the next start rebuilds.
        sidecar = self.sidecar_path(engine_path)
        sidecar.unlink(missing_ok=True)
        _atomic_write(engine_path, data)
        payload = {'format': SIDECAR_FORMAT, 'key': key.to_dict(),
                   'engine_sha256': hashlib.sha256(data).hexdigest(),
                   'engine_bytes': len(data), 'build_seconds': round(build_s, 3)}
        _atomic_write(sidecar, (json.dumps(payload, indent=2) + '\n').encode())


class BuildLock:
    """An exclusive flock on a lock file; the kernel drops it if the holder dies."""

    def __init__(self, path: Path, timeout_s: float, log: logging.Logger = _LOG,
                 poll_s: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.log = log
        self.poll_s = poll_s
        self.clock = clock
        self._fd: int | None = None

    def __enter__(self) -> 'BuildLock':
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = self.clock() + self.timeout_s
        waiting_logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if not waiting_logged:
                self.log.warning('waiting for another process building %s (lock %s, %s)',
                                 self.path.stem, self.path, _holder(fd))
                waiting_logged = True
            if self.clock() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise TimeoutError(f'gave up after {self.timeout_s} s waiting for the engine '
                                   f'build lock {self.path} ({holder})')
            time.sleep(self.poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f'pid {os.getpid()}\n'.encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    try:
        return 'held by ' + (os.pread(fd, 64, 0).decode(errors='replace').strip() or 'unknown')
    except OSError:
        return 'holder unknown'


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f'{path.name}.{os.getpid()}.tmp')
    with open(temporary, 'wb') as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
