"""`make bench`: runs every benchmark module in order and prints its figures."""

import importlib
import sys

# Each module exposes run() -> None and prints figures measured in the same run as its baseline.
BENCHMARKS = (
    'fusion_nodes.benchmarks.conversions',
    'fusion_nodes.benchmarks.nodes',
    'fusion_nodes.benchmarks.generator',
    'fusion_nodes.benchmarks.alignment',
    'fusion_nodes.benchmarks.inference',
    'fusion_nodes.benchmarks.gpu',
    'fusion_nodes.benchmarks.end_to_end',
)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks named on the command line, or all that exist."""
    selected = (argv if argv is not None else sys.argv[1:]) or BENCHMARKS
    for name in selected:
        module_name = name if '.' in name else f'fusion_nodes.benchmarks.{name}'
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            print(f'== {module_name}: not built yet, skipped')
            continue
        print(f'== {module_name}', flush=True)
        module.run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
