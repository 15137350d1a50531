"""The gated fusion network: shapes, gating by availability, and the camera lifting grid."""

import math

import numpy as np
import pytest
import torch

from fusion_nodes.core.config import BevGrid, CameraModel
from fusion_nodes.model.lifting import bev_sampling_grid, OUTSIDE
from fusion_nodes.model.network import (
    build_model, GatedFusionNet, INPUT_NAMES, NetworkConfig, OUTPUT_NAMES)


def _inputs(batch: int = 1, seed: int = 0, available=(1.0, 1.0, 1.0)) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        'camera': torch.randn(batch, 3, 96, 128, generator=gen),
        'lidar': torch.rand(batch, 4, 64, 64, generator=gen),
        'gps': torch.randn(batch, 8, generator=gen),
        'health': torch.rand(batch, 3, 4, generator=gen),
        'available': torch.tensor([available] * batch),
    }


@pytest.fixture(scope='module')
def model() -> GatedFusionNet:
    torch.manual_seed(0)
    return build_model().eval()


def test_output_shapes_follow_the_contract(model):
    with torch.no_grad():
        outputs = model(**_inputs())
    shapes = [tuple(t.shape) for t in outputs]
    assert shapes == [(1, 6, 64, 64), (1, 3), (1, 3), (1, 3), (1, 1)]
    positional = model(*_inputs().values())
    for a, b in zip(outputs, positional):
        torch.testing.assert_close(a, b)
    assert len(OUTPUT_NAMES) == 5 and INPUT_NAMES[0] == 'camera'


def test_batched_forward_matches_single_frames(model):
    batch = _inputs(batch=3, seed=1)
    with torch.no_grad():
        together = model(**batch)
        for k in range(3):
            single = model(**{name: value[k:k + 1] for name, value in batch.items()})
            for a, b in zip(together, single):
                torch.testing.assert_close(a[k:k + 1], b, atol=1e-5, rtol=1e-5)


def test_gates_are_sigmoids_and_zero_when_unavailable(model):
    with torch.no_grad():
        gates = model(**_inputs(available=(1.0, 0.0, 1.0)))[3][0]
    assert gates[1].item() == 0.0
    assert 0.0 < gates[0].item() < 1.0 and 0.0 < gates[2].item() < 1.0


def test_unavailable_lidar_cannot_change_the_bev_output(model):
    first = _inputs(seed=2, available=(1.0, 0.0, 1.0))
    second = dict(first, lidar=torch.rand(1, 4, 64, 64) * 5.0)
    with torch.no_grad():
        a, b = model(**first)[0], model(**second)[0]
    torch.testing.assert_close(a, b)
    # ...whereas an available lidar does change it.
    with torch.no_grad():
        c = model(**dict(first, available=torch.ones(1, 3)))[0]
        d = model(**dict(second, available=torch.ones(1, 3)))[0]
    assert (c - d).abs().max().item() > 1e-4


def test_unavailable_gps_cannot_change_the_ego_estimate(model):
    first = _inputs(seed=3, available=(1.0, 1.0, 0.0))
    second = dict(first, gps=torch.randn(1, 8) * 10.0)
    with torch.no_grad():
        a, b = model(**first), model(**second)
    torch.testing.assert_close(a[1], b[1])
    torch.testing.assert_close(a[2], b[2])


def test_fixed_gates_equal_availability():
    torch.manual_seed(0)
    ungated = GatedFusionNet(cfg=NetworkConfig(gate_mode='fixed')).eval()
    with torch.no_grad():
        gates = ungated(**_inputs(available=(1.0, 0.0, 1.0)))[3]
    assert gates.tolist() == [[1.0, 0.0, 1.0]]


def _floored_pair(seed: int = 4) -> tuple[GatedFusionNet, GatedFusionNet, dict, torch.Tensor]:
    """A soft-gated model, its twin with a floor between its lowest and other gates."""
    torch.manual_seed(0)
    soft = GatedFusionNet().eval()
    inputs = _inputs(seed=seed)
    with torch.no_grad():
        gates = soft(**inputs)[3][0]
    ordered = gates.sort().values
    floor = float(ordered[0] + ordered[1]) / 2.0
    floored = GatedFusionNet(cfg=NetworkConfig(gate_floor=floor)).eval()
    floored.load_state_dict(soft.state_dict())
    return soft, floored, inputs, gates


def test_gate_floor_drops_a_low_gate_as_if_the_sensor_were_missing():
    soft, floored, inputs, gates = _floored_pair()
    low = int(gates.argmin())
    with torch.no_grad():
        out = floored(**inputs)
        missing = inputs['available'].clone()
        missing[0, low] = 0.0
        reference = soft(**dict(inputs, available=missing))
    assert out[3][0, low].item() == 0.0
    kept = [k for k in range(3) if k != low]
    torch.testing.assert_close(out[3][0, kept], gates[kept])
    for a, b in zip(out, reference):
        torch.testing.assert_close(a, b)


def _context_model(**cfg) -> GatedFusionNet:
    """Gates with consistency and novelty context, whose statistics have seen features."""
    torch.manual_seed(0)
    model = GatedFusionNet(cfg=NetworkConfig(gate_consistency=True, gate_novelty=True,
                                             **cfg))
    for novelty in (model.camera_novelty, model.lidar_novelty):
        novelty.track(torch.randn(64, novelty.dim) * 0.5 + 0.2, torch.ones(64))
    return model.eval()


def _without(inputs: dict, sensor: int) -> dict:
    """The inputs as predict.mask_sensors leaves a sensor that is missing."""
    missing = {key: value.clone() for key, value in inputs.items()}
    missing['available'][:, sensor] = 0.0
    missing['health'][:, sensor] = 0.0
    missing[('camera', 'lidar', 'gps')[sensor]].zero_()
    return missing


def _novelty_scores(model: GatedFusionNet, inputs: dict) -> tuple[float, float]:
    with torch.no_grad():
        out = model.forward_all(**inputs)
        return (model.camera_novelty(out['camera_pooled']).item(),
                model.lidar_novelty(out['lidar_pooled']).item())


@pytest.mark.parametrize('dropped', [0, 1])
def test_a_vetoed_sensor_is_dropped_exactly_as_if_it_were_missing(dropped):
    soft = _context_model()
    inputs = _inputs(seed=5)
    scores = _novelty_scores(soft, inputs)
    veto = [0.0, 0.0]  # 0: no veto for the other sensor, however novel it looks
    veto[dropped] = scores[dropped] * 0.5
    vetoed = _context_model(novelty_veto=tuple(veto))
    other = 1 - dropped
    with torch.no_grad():
        out = vetoed(**inputs)
        reference = soft(**_without(inputs, dropped))
        soft_gates = soft(**inputs)[3][0]
    assert out[3][0, dropped].item() == 0.0
    # The other gate sees the dropped sensor through its context, so the second pass matters.
    assert abs(out[3][0, other].item() - soft_gates[other].item()) > 1e-4
    for a, b in zip(out, reference):
        torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)


def test_a_floored_gate_drops_its_sensor_from_the_other_gates_context_too():
    soft = _context_model()
    inputs = _inputs(seed=5)
    with torch.no_grad():
        gates = soft(**inputs)[3][0]
    camera, lidar = float(gates[0]), float(gates[1])
    low = 0 if camera < lidar else 1
    floored = _context_model(gate_floor=(camera + lidar) / 2.0)
    with torch.no_grad():
        out = floored(**inputs)
        reference = floored(**_without(inputs, low))
    assert out[3][0, low].item() == 0.0
    for a, b in zip(out, reference):
        torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)


def test_novelty_veto_leaves_sensors_below_it_alone():
    soft = _context_model()
    inputs = _inputs(seed=5)
    scores = _novelty_scores(soft, inputs)
    vetoed = _context_model(novelty_veto=tuple(score + 0.01 for score in scores))
    with torch.no_grad():
        for a, b in zip(vetoed(**inputs), soft(**inputs)):
            torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)
    vetoed.train()
    with torch.no_grad():
        lowered = _context_model(novelty_veto=tuple(score * 0.5 for score in scores)).train()
        torch.testing.assert_close(lowered.forward_all(**inputs)['gates'],
                                   vetoed.forward_all(**inputs)['gates'])


def _absent_code_model(seed: int = 0) -> GatedFusionNet:
    torch.manual_seed(seed)
    model = GatedFusionNet(cfg=NetworkConfig(absent_code=True)).eval()
    with torch.no_grad():  # as if trained: codes that differ from the zero init
        for code in (model.camera_absent_scale, model.camera_absent_bias,
                     model.lidar_absent_bias):
            code.normal_()
    return model


def test_absent_code_stands_in_for_a_missing_sensor_whatever_it_sent():
    model = _absent_code_model()
    first = _inputs(seed=6, available=(0.0, 1.0, 1.0))
    second = dict(first, camera=torch.randn(1, 3, 96, 128) * 5.0)
    with torch.no_grad():
        a, b = model(**first)[0], model(**second)[0]
        present = model(**dict(first, available=torch.ones(1, 3)))[0]
    torch.testing.assert_close(a, b)
    assert (a - present).abs().max().item() > 1e-4
    # With the lidar gate at 1, the head input is the mean of the lidar features and the
    # camera's code, which has the camera's ground footprint in it.
    captured = {}
    model.bev_head.register_forward_hook(lambda m, i, o: captured.update(x=i[0]))
    with torch.no_grad():
        model.forward_all(**first, gate_override=torch.tensor([[0.0, 1.0, 1.0]]))
        lidar_bev = model.lidar_encoder(first['lidar'])
    code = 2.0 * captured['x'] - lidar_bev
    expected = model.camera_absent_scale * model.camera_mask + model.camera_absent_bias
    torch.testing.assert_close(code, expected.expand_as(code))
    inside = model.camera_mask[0, 0] > 0.5
    assert inside.any() and (~inside).any()


def test_absent_code_gate_floor_drops_a_sensor_to_its_code():
    model = _absent_code_model(seed=1)
    inputs = _inputs(seed=7)
    with torch.no_grad():
        gates = model(**inputs)[3][0]
    floor = float(gates[:2].min()) + 1e-3
    floored = GatedFusionNet(cfg=NetworkConfig(absent_code=True, gate_floor=floor)).eval()
    floored.load_state_dict(model.state_dict())
    low = int(gates[:2].argmin())
    missing = inputs['available'].clone()
    missing[0, low] = 0.0
    with torch.no_grad():
        out, reference = floored(**inputs), model(**dict(inputs, available=missing))
    torch.testing.assert_close(out[0], reference[0])


def test_gate_loss_reaches_the_gate_mlps_but_not_the_encoders():
    torch.manual_seed(0)
    model = GatedFusionNet().train()
    model.forward_all(**_inputs(seed=5))['gate_logits'].sum().backward()
    for encoder in (model.camera_stem, model.camera_encoder, model.lidar_encoder,
                    model.gps_encoder):
        assert all(p.grad is None for p in encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for gate in (model.camera_gate, model.lidar_gate, model.gps_gate)
               for p in gate.parameters())


def _consistency_model() -> GatedFusionNet:
    torch.manual_seed(0)
    return GatedFusionNet(cfg=NetworkConfig(gate_consistency=True)).eval()


def test_consistency_heads_on_pooled_features_equal_the_pooled_logits():
    model = _consistency_model()
    features = torch.randn(2, model.cfg.bev_channels, 64, 64)
    pool = torch.nn.functional.avg_pool2d
    torch.testing.assert_close(model.camera_aux_head(pool(features, 4)),
                               pool(model.camera_aux_head(features), 4), atol=1e-5, rtol=1e-5)


def _set_head(head: torch.nn.Conv2d, winning_class: int) -> None:
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-20.0)
        head.bias[winning_class] = 20.0


def test_consistency_measures_agreement_of_the_single_sensor_heads():
    model = _consistency_model()
    features = torch.zeros(1, model.cfg.bev_channels, 64, 64)
    _set_head(model.camera_aux_head, 2)
    _set_head(model.lidar_aux_head, 2)
    agreeing = model._agreement(features, features)[0]
    assert agreeing[0].item() == pytest.approx(1.0, abs=1e-4)
    assert agreeing[1:].abs().max().item() < 1e-4
    _set_head(model.lidar_aux_head, 4)
    disagreeing = model._agreement(features, features)[0]
    assert disagreeing[0].item() == pytest.approx(0.0, abs=1e-4)
    assert disagreeing[1 + 2].item() == pytest.approx(1.0, abs=1e-4)
    assert disagreeing[1 + 4].item() == pytest.approx(-1.0, abs=1e-4)


def test_consistency_lets_the_lidar_move_the_camera_gate_only_when_both_are_present():
    model = _consistency_model()
    plain = GatedFusionNet().eval()
    inputs, other_lidar = _inputs(seed=3), _inputs(seed=4)['lidar']
    with torch.no_grad():
        gate = model(**inputs)[3][0, 0]
        moved = model(**dict(inputs, lidar=other_lidar))[3][0, 0]
        assert abs(gate.item() - moved.item()) > 1e-6
        without = dict(inputs, available=torch.tensor([[1.0, 0.0, 1.0]]))
        other_health = without['health'].clone()
        other_health[0, 1] = 0.5
        torch.testing.assert_close(
            model(**without)[3][0, 0],
            model(**dict(without, lidar=other_lidar, health=other_health))[3][0, 0])
        torch.testing.assert_close(plain(**inputs)[3][0, 0],
                                   plain(**dict(inputs, lidar=other_lidar))[3][0, 0])


def test_gate_floor_is_inactive_while_training():
    soft, floored, inputs, gates = _floored_pair()
    floored.train()
    with torch.no_grad():
        training_gates = floored.forward_all(**inputs)['gates'][0]
    torch.testing.assert_close(training_gates, gates)


def test_bad_architecture_is_rejected():
    with pytest.raises(ValueError, match='gate_mode'):
        NetworkConfig(gate_mode='sometimes')
    with pytest.raises(ValueError, match='gate_floor'):
        NetworkConfig(gate_floor=1.0)
    with pytest.raises(ValueError, match='novelty_veto'):
        NetworkConfig(novelty_veto=(2.0, 1.0))
    with pytest.raises(ValueError, match='novelty_veto'):
        NetworkConfig(gate_novelty=True, novelty_veto=(2.0,))
    with pytest.raises(ValueError, match='novelty_veto'):
        NetworkConfig(gate_novelty=True, novelty_veto=(2.0, -1.0))
    with pytest.raises(ValueError, match='unknown architecture'):
        NetworkConfig.from_dict({'depth': 3})


def _pitched_pinhole(camera: CameraModel, x: float, y: float, z: float) -> tuple[float, float]:
    """Pixel of a base_link point for a camera pitched down by rpy[1], by plain trigonometry."""
    pitch = camera.rpy[1]
    d = np.array([x, y, z]) - np.asarray(camera.translation)
    forward = np.array([math.cos(pitch), 0.0, -math.sin(pitch)])
    down = np.array([-math.sin(pitch), 0.0, -math.cos(pitch)])
    right = np.array([0.0, -1.0, 0.0])
    depth = d @ forward
    return camera.cx + camera.fx * (d @ right) / depth, camera.cy + camera.fy * (d @ down) / depth


def test_lifting_projects_before_sampling_yet_equals_sampling_then_projecting(model):
    """_lift is camera_to_bev applied to [each map sampled at each height..., mask]."""
    gen = torch.Generator().manual_seed(3)
    maps = (torch.randn(2, 16, 48, 64, generator=gen), torch.randn(2, 24, 24, 32, generator=gen))
    grids = [getattr(model, f'lift_grid_{k}').expand(2, -1, -1, -1)
             for k in range(len(model.cfg.lift_heights_m))]
    sampled = [torch.nn.functional.grid_sample(features, grid, mode='bilinear',
                                               padding_mode='zeros', align_corners=False)
               for grid in grids for features in maps]
    mask = model.camera_mask.expand(2, -1, -1, -1)
    with torch.no_grad():
        expected = model.camera_to_bev(torch.cat(sampled + [mask], dim=1))
        lifted = model._lift(maps)
    torch.testing.assert_close(lifted, expected, rtol=0.0, atol=1e-5)
    inside = model.camera_mask.expand_as(expected) > 0
    assert expected[inside].abs().max() > 0.1 and expected[inside].std() > 0.01


def test_lifting_grid_matches_pinhole_geometry():
    grid, camera = BevGrid(), CameraModel()
    sampling, valid = bev_sampling_grid(grid, camera, 0.0)
    xs, ys = grid.cell_centres()
    checked = 0
    for i, j in ((40, 32), (20, 10), (63, 50), (10, 31)):
        u, v = _pitched_pinhole(camera, xs[i, j], ys[i, j], 0.0)
        inside = 0 <= u < camera.width and 0 <= v < camera.height
        assert valid[i, j] == inside
        if inside:
            checked += 1
            np.testing.assert_allclose(sampling[i, j], [2 * u / 640 - 1, 2 * v / 480 - 1],
                                       atol=1e-5)
    assert checked >= 2
    # Cells behind the camera (x < 1.5 m) can never be seen.
    assert not valid[:3].any() and (sampling[:3] == OUTSIDE).all()
    # The optical axis meets the ground at x = 1.5 + 1.6 / tan(0.08): near the image centre.
    row = int((1.5 + 1.6 / math.tan(0.08)) / grid.resolution)
    assert abs(sampling[row, 32, 0]) < 0.02 and abs(sampling[row, 32, 1]) < 0.03


def test_build_model_reads_geometry_from_metadata():
    metadata = {'grid': {'x_min': 0.0, 'x_max': 16.0, 'y_min': -8.0, 'y_max': 8.0,
                         'resolution': 0.5},
                'camera_model': {'translation': [1.0, 0.0, 2.0], 'rpy': [0.0, 0.1, 0.0]},
                'architecture': {'bev_channels': 8}}
    model = build_model(metadata).eval()
    with torch.no_grad():
        out = model(**dict(_inputs(), lidar=torch.rand(1, 4, 32, 32)))
    assert tuple(out[0].shape) == (1, 6, 32, 32)
    expected, _ = bev_sampling_grid(BevGrid(0.0, 16.0, -8.0, 8.0, 0.5),
                                    CameraModel(translation=(1.0, 0.0, 2.0),
                                                rpy=(0.0, 0.1, 0.0)),
                                    model.cfg.lift_heights_m[0])
    np.testing.assert_array_equal(model.lift_grid_0[0].numpy(), expected)
    with pytest.raises(ValueError, match='sensor_order'):
        build_model({'sensor_order': ['lidar', 'camera', 'gps']})


def test_the_shipped_network_in_float16_keeps_its_gates_and_class_map():
    """What a TensorRT fp16 engine computes: before 1.4.1 the novelty's precision (1.7e5)
    overflowed float16 and the camera and lidar gates came out NaN."""
    from pathlib import Path
    from fusion_nodes.model.export import load_trained_model
    shipped = Path(__file__).resolve().parents[1] / 'models' / 'gated_fusion.json'
    model, metadata = load_trained_model(shipped)
    rng = np.random.default_rng(0)
    batch = {spec['name']: torch.from_numpy(rng.standard_normal(spec['shape'])
                                            .astype(np.float32).repeat(4, axis=0))
             for spec in metadata.inputs}
    batch['health'] = torch.from_numpy(rng.random(batch['health'].shape).astype(np.float32))
    batch['available'] = torch.ones_like(batch['available'])
    with torch.inference_mode():
        full = model(*batch.values())
        half = model.half()(*(tensor.half() for tensor in batch.values()))
    names = [spec['name'] for spec in metadata.outputs]
    full, half = dict(zip(names, full)), {k: v.float() for k, v in zip(names, half)}
    assert all(torch.isfinite(value).all() for value in half.values())
    assert (half['gates'] - full['gates']).abs().max() < 2e-3
    assert (half['ego_velocity'] - full['ego_velocity']).abs().max() < 1e-2
    agree = (half['bev_logits'].argmax(1) == full['bev_logits'].argmax(1)).float().mean()
    assert agree > 0.995
