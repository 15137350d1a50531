"""A 60 s soak in CI (`make soak` runs 10 minutes): the demo bag loops through the live nodes;
memory must not grow and latency must not creep."""

from pathlib import Path

import pytest

from fusion_nodes.tools.soak import soak

MODEL = Path(__file__).resolve().parents[1] / 'models' / 'gated_fusion.json'
MAX_RSS_GROWTH_MB = 5.0

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_sixty_second_soak(tmp_path):
    if not MODEL.is_file():
        pytest.fail(f'the shipped model {MODEL} is missing')
    result = soak(duration_s=60.0, warmup_s=15.0, log_dir=tmp_path)
    print(result.as_dict())
    assert result.nodes_alive
    assert result.fused_frames >= 0.95 * result.camera_frames
    for node, growth in result.rss_growth_mb.items():
        assert growth < MAX_RSS_GROWTH_MB, f'{node} grew {growth:.2f} MB'
    # Creep would show as the last fifth running slower than the first.
    assert result.latency_p50_last_ms <= 1.5 * result.latency_p50_first_ms + 10.0
