"""The inference benchmark's timing: variants take turns, each gets the frames it asked for."""

from fusion_nodes.benchmarks import inference


class _Recorder:
    def __init__(self, label: str, calls: list[str]) -> None:
        self.label = label
        self.calls = calls

    def infer(self, feed):
        self.calls.append(self.label)
        return feed


def test_variants_take_turns_in_blocks_and_each_gets_every_frame(monkeypatch):
    monkeypatch.setattr(inference, 'BLOCK_PAUSE_S', 0.0)
    calls: list[str] = []
    backends = {label: _Recorder(label, calls) for label in ('a', 'b', 'c')}
    times = inference.time_in_turns(backends, {}, frames=20, blocks=3)
    assert {label: len(t) for label, t in times.items()} == {'a': 20, 'b': 20, 'c': 20}
    warmups = 3 * inference.WARMUP
    per_block = [7 + inference.BLOCK_WARMUP, 7 + inference.BLOCK_WARMUP,
                 6 + inference.BLOCK_WARMUP]
    assert calls[:warmups] == ['a'] * inference.WARMUP + ['b'] * inference.WARMUP + \
        ['c'] * inference.WARMUP
    blocks, rest = [], calls[warmups:]
    while rest:
        label = rest[0]
        size = next((k for k, c in enumerate(rest) if c != label), len(rest))
        blocks.append((label, size))
        rest = rest[size:]
    # Rounds rotate the order, so no variant always runs first or last.
    assert [label for label, _ in blocks] == ['a', 'b', 'c', 'b', 'c', 'a', 'c', 'a', 'b']
    assert [size for _, size in blocks] == [per_block[0]] * 3 + [per_block[1]] * 3 + \
        [per_block[2]] * 3
    assert all(t.min() >= 0.0 for t in times.values())
