"""fusion_stack: every fusion node in one process (the `composed:=true` launch mode).

rclpy has no component containers, so composition means one process and one executor.
Each node still gets its own --ros-args (name, params file, remappings) exactly as the
separate-process mode would, from fusion_nodes.tools.node_set.
"""

import importlib
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from fusion_nodes.nodes.runner import STARTUP_ERRORS
from fusion_nodes.tools.bringup import argument_parser, options_from_args
from fusion_nodes.tools.node_set import default_params_file, node_specs, ros_arguments


def main(argv: list[str] | None = None) -> int:
    argv = rclpy.utilities.remove_ros_args(sys.argv if argv is None else argv)[1:]
    args = argument_parser().parse_args(argv)
    params_file = args.params_file or default_params_file()
    rclpy.init()
    # Python callbacks hold the GIL, so threads only add rclpy's MultiThreadedExecutor
    # overhead: with 4 threads the end-to-end bench fused about half of the frames at p50
    # over 500 ms; one thread fused all of them at p50 33 ms (2026-12-02, 2 cores).
    executor = SingleThreadedExecutor()
    nodes = []
    try:
        for spec in node_specs(options_from_args(args)):
            node_class = getattr(importlib.import_module(spec.module), spec.class_name)
            nodes.append(node_class(cli_args=ros_arguments(spec, params_file)))
            executor.add_node(nodes[-1])
        executor.spin()
    except STARTUP_ERRORS as error:
        print(f'[fusion_nodes] startup failed: {type(error).__name__}: {error}',
              file=sys.stderr, flush=True)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in nodes:
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
