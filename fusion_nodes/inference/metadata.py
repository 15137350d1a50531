"""Model metadata: the JSON that travels beside the ONNX file and the torch weights.

load_metadata() is the single gate every backend goes through: it checks the schema, that
the I/O shapes are static, that classes, sensors and grid agree with fusion_nodes.core.config,
and that the ONNX and weights files on disk are the ones the metadata was written for
(sha256). Nothing is unpickled here; JSON only.
"""

from dataclasses import asdict, dataclass, field, fields
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from fusion_nodes.core.config import BevGrid, CameraModel, SEMANTIC_CLASSES, SENSORS

METADATA_FORMAT = 'fusion_nodes.model/1'
DEFAULT_MODEL_FILE = 'gated_fusion.json'
SUPPORTED_DTYPES = ('float32', 'float16', 'int32', 'int64', 'uint8', 'bool')
_REQUIRED = ('format', 'name', 'version', 'onnx_file', 'onnx_sha256', 'opset', 'inputs',
             'outputs', 'sensor_order', 'class_names', 'grid', 'normalisation',
             'camera_model', 'health_features', 'training')
_OPTIONAL = ('torch_weights_file', 'torch_weights_sha256', 'architecture')
_TRAINING_REQUIRED = ('data_sha256', 'seeds', 'epochs')
_MIN_OPSET = 7


@dataclass(frozen=True)
class ModelMetadata:
    """What a backend needs to know about a model; see load_metadata for the checks.

    metadata_format is the JSON's 'format'. inputs and outputs are tuples of
    {'name', 'shape', 'dtype'} dicts in the model's order. directory is where the JSON was
    read from, so file names resolve beside it.
    """

    metadata_format: str
    name: str
    version: str
    onnx_file: str
    onnx_sha256: str
    opset: int
    inputs: tuple[dict, ...]
    outputs: tuple[dict, ...]
    sensor_order: tuple[str, ...]
    class_names: tuple[str, ...]
    grid: dict
    normalisation: dict
    camera_model: dict
    health_features: dict
    training: dict
    torch_weights_file: str | None = None
    torch_weights_sha256: str | None = None
    architecture: dict | None = None
    directory: Path = field(default=Path('.'), compare=False)

    @property
    def onnx_path(self) -> Path:
        return self.directory / self.onnx_file

    @property
    def torch_weights_path(self) -> Path | None:
        if self.torch_weights_file is None:
            return None
        return self.directory / self.torch_weights_file

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {spec['name']: tuple(spec['shape']) for spec in self.inputs}

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {spec['name']: tuple(spec['shape']) for spec in self.outputs}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (without the directory it was loaded from)."""
        out = {}
        for f in fields(self):
            if f.name == 'directory':
                continue
            value = getattr(self, f.name)
            if value is None and f.name in _OPTIONAL:
                continue
            out['format' if f.name == 'metadata_format' else f.name] = _jsonable(value)
        return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_metadata_path(path: str | os.PathLike) -> Path:
    """The metadata JSON for a path that names the JSON itself or the model directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        default = path / DEFAULT_MODEL_FILE
        if default.is_file():
            return default
        candidates = sorted(path.glob('*.json'))
        if len(candidates) != 1:
            raise ValueError(
                f'model directory {path} has no {DEFAULT_MODEL_FILE} and '
                f'{len(candidates)} other JSON files {[c.name for c in candidates]}; '
                'name the metadata JSON itself')
        return candidates[0]
    if not path.is_file():
        raise ValueError(f'model metadata {path} does not exist')
    return path


def load_metadata(path: str | os.PathLike, check_files: bool = True) -> ModelMetadata:
    """Read and validate a metadata JSON (or the model directory holding it).

    check_files=True (the default) also verifies that the ONNX and torch weights files
    exist beside it and match their sha256, so a backend never runs a model other than the
    one described. Raises ValueError saying what is wrong.
    """
    json_path = resolve_metadata_path(path)
    try:
        raw = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f'model metadata {json_path} is not readable JSON: {error}') from error
    meta = metadata_from_dict(raw, json_path.parent, source=str(json_path))
    if check_files:
        verify_files(meta, source=str(json_path))
    return meta


def metadata_from_dict(raw: Any, directory: str | os.PathLike = '.',
                       source: str = 'metadata') -> ModelMetadata:
    """Validate a metadata mapping (no file checks) and freeze it into ModelMetadata."""
    if not isinstance(raw, Mapping):
        raise ValueError(f'{source}: expected a JSON object, got {type(raw).__name__}')
    fmt = raw.get('format')
    if fmt != METADATA_FORMAT:
        raise ValueError(f'{source}: unknown format {fmt!r}, expected {METADATA_FORMAT!r}')
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ValueError(f'{source}: missing keys {missing}')
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ValueError(f'{source}: unknown keys {unknown} for format {METADATA_FORMAT}')

    for key in ('name', 'version'):
        _require(isinstance(raw[key], str) and raw[key], source,
                 f'{key} must be a non-empty string')
    onnx_file = _file_name(raw['onnx_file'], 'onnx_file', source)
    onnx_sha = _sha(raw['onnx_sha256'], 'onnx_sha256', source)
    weights_file = raw.get('torch_weights_file')
    weights_sha = raw.get('torch_weights_sha256')
    if weights_file is not None:
        weights_file = _file_name(weights_file, 'torch_weights_file', source)
        weights_sha = _sha(weights_sha, 'torch_weights_sha256', source)
    elif weights_sha is not None:
        raise ValueError(f'{source}: torch_weights_sha256 given without torch_weights_file')
    opset = raw['opset']
    _require(isinstance(opset, int) and not isinstance(opset, bool) and opset >= _MIN_OPSET,
             source, f'opset must be an integer >= {_MIN_OPSET}, got {opset!r}')

    inputs = _tensor_specs(raw['inputs'], 'inputs', source)
    outputs = _tensor_specs(raw['outputs'], 'outputs', source)
    clash = {s['name'] for s in inputs} & {s['name'] for s in outputs}
    _require(not clash, source, f'names used as both input and output: {sorted(clash)}')

    sensor_order = _names(raw['sensor_order'], 'sensor_order', source)
    _require(sensor_order == SENSORS, source,
             f'sensor_order {list(sensor_order)} differs from core.config SENSORS {list(SENSORS)}')
    class_names = _names(raw['class_names'], 'class_names', source)
    _require(class_names == SEMANTIC_CLASSES, source,
             f'class_names {list(class_names)} differ from core.config SEMANTIC_CLASSES '
             f'{list(SEMANTIC_CLASSES)}')
    grid = _grid(raw['grid'], source)
    normalisation = _normalisation(raw['normalisation'], source)
    camera_model = _camera_model(raw['camera_model'], source)
    health = _health_features(raw['health_features'], sensor_order, source)
    training = raw['training']
    _require(isinstance(training, Mapping), source, 'training must be an object')
    missing = [key for key in _TRAINING_REQUIRED if key not in training]
    _require(not missing, source, f'training is missing {missing}')
    architecture = raw.get('architecture')
    _require(architecture is None or isinstance(architecture, Mapping), source,
             'architecture must be an object')

    meta = ModelMetadata(
        metadata_format=fmt, name=raw['name'], version=raw['version'], onnx_file=onnx_file,
        onnx_sha256=onnx_sha, opset=opset, inputs=inputs, outputs=outputs,
        sensor_order=sensor_order, class_names=class_names, grid=grid,
        normalisation=normalisation, camera_model=camera_model, health_features=health,
        training=dict(training), torch_weights_file=weights_file,
        torch_weights_sha256=weights_sha,
        architecture=None if architecture is None else dict(architecture),
        directory=Path(directory))
    _check_io_consistency(meta, source)
    return meta


def verify_files(meta: ModelMetadata, source: str = 'metadata') -> None:
    """Raise ValueError unless the ONNX (and weights, if named) exist and match their sha256."""
    checks = [('onnx_file', meta.onnx_path, meta.onnx_sha256)]
    if meta.torch_weights_path is not None:
        checks.append(('torch_weights_file', meta.torch_weights_path, meta.torch_weights_sha256))
    for key, path, expected in checks:
        if not path.is_file():
            raise ValueError(f'{source}: {key} {path} does not exist')
        actual = file_sha256(path)
        if actual != expected:
            raise ValueError(f'{source}: {path} has sha256 {actual}, but the metadata says '
                             f'{expected}: the file was changed or belongs to another model')


def write_metadata(meta: ModelMetadata | Mapping[str, Any],
                   path: str | os.PathLike) -> Path:
    """Validate and write metadata as JSON; returns the path written.

    meta may be a ModelMetadata or the plain dict the exporter builds. The arguments are
    also accepted in (path, meta) order, as the exporter calls it.
    """
    if isinstance(meta, (str, os.PathLike)) and isinstance(path, (Mapping, ModelMetadata)):
        meta, path = path, meta
    path = Path(path)
    if isinstance(meta, ModelMetadata):
        payload = meta.to_dict()
    else:
        payload = _jsonable(dict(meta))
    metadata_from_dict(payload, path.parent, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + '.tmp')
    temporary.write_text(json.dumps(payload, indent=2) + '\n')
    os.replace(temporary, path)
    return path


def _require(condition: bool, source: str, message: str) -> None:
    if not condition:
        raise ValueError(f'{source}: {message}')


def _file_name(value: Any, key: str, source: str) -> str:
    # Files live beside the JSON: a bare name, so metadata cannot point anywhere else.
    _require(isinstance(value, str) and value and Path(value).name == value
             and value not in ('.', '..'), source,
             f'{key} must be a file name beside the metadata, got {value!r}')
    return value


def _sha(value: Any, key: str, source: str) -> str:
    ok = isinstance(value, str) and len(value) == 64 and all(
        c in '0123456789abcdef' for c in value)
    _require(ok, source, f'{key} must be 64 lowercase hex digits, got {value!r}')
    return value


def _names(value: Any, key: str, source: str) -> tuple[str, ...]:
    _require(isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value),
             source, f'{key} must be a list of strings')
    return tuple(value)


def _tensor_specs(value: Any, key: str, source: str) -> tuple[dict, ...]:
    _require(isinstance(value, (list, tuple)) and value, source, f'{key} must be a non-empty list')
    specs, seen = [], set()
    for index, spec in enumerate(value):
        where = f'{key}[{index}]'
        _require(isinstance(spec, Mapping) and set(spec) == {'name', 'shape', 'dtype'}, source,
                 f'{where} must have exactly name, shape and dtype')
        name, shape, dtype = spec['name'], spec['shape'], spec['dtype']
        _require(isinstance(name, str) and name, source, f'{where}.name must be a string')
        _require(name not in seen, source, f'{key} has {name!r} twice')
        seen.add(name)
        _require(isinstance(shape, (list, tuple)) and shape, source,
                 f'{name}: shape must be a non-empty list')
        static = all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        _require(static, source, f'{name}: dynamic or invalid shape {list(shape)}; only static '
                 'positive integer dimensions are supported')
        _require(dtype in SUPPORTED_DTYPES, source,
                 f'{name}: dtype {dtype!r} is not one of {list(SUPPORTED_DTYPES)}')
        specs.append({'name': name, 'shape': tuple(shape), 'dtype': dtype})
    return tuple(specs)


def _grid(value: Any, source: str) -> dict:
    expected = asdict(BevGrid())
    _require(isinstance(value, Mapping) and set(value) == set(expected), source,
             f'grid must have exactly the BevGrid fields {sorted(expected)}')
    for key, want in expected.items():
        got = value[key]
        _require(isinstance(got, (int, float)) and not isinstance(got, bool)
                 and math.isclose(float(got), want, abs_tol=1e-9), source,
                 f'grid.{key} is {got!r} but core.config BevGrid has {want}')
    return {key: float(value[key]) for key in expected}


def _float_list(value: Any, length: int, what: str, source: str) -> list[float]:
    ok = (isinstance(value, (list, tuple)) and len(value) == length
          and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  and math.isfinite(v) for v in value))
    _require(ok, source, f'{what} must be {length} finite numbers, got {value!r}')
    return [float(v) for v in value]


def _normalisation(value: Any, source: str) -> dict:
    _require(isinstance(value, Mapping) and isinstance(value.get('camera'), Mapping), source,
             'normalisation must hold camera: {mean, std}')
    camera = value['camera']
    mean = _float_list(camera.get('mean'), 3, 'normalisation.camera.mean', source)
    std = _float_list(camera.get('std'), 3, 'normalisation.camera.std', source)
    _require(min(std) > 0.0, source, f'normalisation.camera.std must be positive, got {std}')
    return {**value, 'camera': {'mean': mean, 'std': std}}


def _camera_model(value: Any, source: str) -> dict:
    known = {f.name for f in fields(CameraModel)}
    _require(isinstance(value, Mapping) and set(value) <= known, source,
             f'camera_model must hold only CameraModel fields {sorted(known)}')
    values = {key: tuple(v) if isinstance(v, list) else v for key, v in value.items()}
    try:
        CameraModel(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f'{source}: camera_model is not a valid CameraModel: {error}') from error
    return values


def _health_features(value: Any, sensors: tuple[str, ...], source: str) -> dict:
    _require(isinstance(value, Mapping) and set(value) == set(sensors), source,
             f'health_features must name the features of each sensor in {list(sensors)}')
    return {sensor: tuple(_names(value[sensor], f'health_features.{sensor}', source))
            for sensor in sensors}


def _check_io_consistency(meta: ModelMetadata, source: str) -> None:
    """Where the contract's tensors are present, their shapes must match grid, classes, sensors."""
    rows, cols = BevGrid(**meta.grid).shape
    sensors = len(meta.sensor_order)
    per_sensor = {len(names) for names in meta.health_features.values()}
    shapes = {**meta.input_shapes(), **meta.output_shapes()}
    expected = {'bev_logits': (1, len(meta.class_names), rows, cols),
                'available': (1, sensors), 'gates': (1, sensors)}
    if len(per_sensor) == 1:
        expected['health'] = (1, sensors, per_sensor.pop())
    for name, want in expected.items():
        if name in shapes and shapes[name] != want:
            raise ValueError(f'{source}: {name} has shape {list(shapes[name])}, but grid, '
                             f'classes, sensors and health features imply {list(want)}')


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
