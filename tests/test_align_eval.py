"""fusion-align-eval --quick on generator streams: the JSON has every figure for every method."""

import json

from fusion_nodes.tools import align_eval

KEYS = ('offset_rmse_ms', 'offset_max_ms', 'pairing_accuracy', 'convergence_s',
        'update_us_p50', 'update_us_p99', 'added_wait_ms_p99')


def test_quick_eval_json_and_plot(tmp_path, capsys):
    plot = tmp_path / 'align.png'
    assert align_eval.main(['--quick', '--json', '--plot', str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    for row in [out] + [out['baselines'][m] for m in align_eval.METHODS[1:]]:
        for key in KEYS:
            assert key in row
    assert plot.stat().st_size > 0
    # ApproximateTime uses each lidar message once: at most a third of the camera frames.
    assert out['baselines']['approximate_time']['coverage'] < 0.4
    assert out['added_wait_ms_p99'] <= 33.334
    # Stamp-trusting matchers never lock an offset; ours reports what share of pairs it had.
    assert out['baselines']['nearest_stamp']['locked_share'] == 0.0
    assert out['baselines']['nearest_stamp']['pairing_accuracy_locked'] is None
    # On the generator's drive the estimate locks within the 20 s (it never did before the
    # metric signatures) and then pairs better than raw stamps under offset.
    assert out['locked_share'] > 0.1 and out['pairing_accuracy_locked'] > 0.95
    assert out['pairing_accuracy'] > out['baselines']['nearest_stamp']['pairing_accuracy']
