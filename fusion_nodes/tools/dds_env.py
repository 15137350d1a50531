"""Environment that keeps every test, demo and benchmark process's DDS on loopback.

Every process that calls rclpy.init in tests, CI and the demo must run with localhost
discovery, a domain id no other run on this machine uses, and the project's Fast DDS profile
(shared memory plus UDPv4 on 127.0.0.1). A domain id is claimed with an flock held for the
life of the claiming process, so parallel runs never share a graph.
"""

import fcntl
import os
from pathlib import Path

_PROFILE_NAME = 'fastdds_localhost.xml'
_LOCK_DIR = Path('/tmp/fusion_nodes_domains')
_DOMAIN_RANGE = range(11, 101)  # inside the 0..101 range that leaves ports for 120 participants
_held_lock = None


def profile_path() -> Path:
    """Path of the shipped Fast DDS profile, from a source tree or an install."""
    source = Path(__file__).resolve().parents[2] / 'config' / _PROFILE_NAME
    if source.is_file():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = Path(get_package_share_directory('fusion_nodes')) / 'config' / _PROFILE_NAME
    except (ImportError, LookupError, ValueError):
        installed = None
    if installed is not None and installed.is_file():
        return installed
    raise FileNotFoundError(f'cannot find {_PROFILE_NAME} in the source tree or share dir')


def claim_domain_id() -> int:
    """Claim a free ROS_DOMAIN_ID for this process (idempotent)."""
    global _held_lock
    if _held_lock is not None:
        return int(_held_lock.name.rsplit('/', 1)[-1].split('.')[0])
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for domain in _DOMAIN_RANGE:
        handle = open(_LOCK_DIR / f'{domain}.lock', 'w')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held_lock = handle
        return domain
    raise RuntimeError(f'no free ROS_DOMAIN_ID in {_DOMAIN_RANGE}: too many parallel runs')


def isolated_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process: localhost discovery, own domain, loopback profile."""
    env = dict(os.environ if base is None else base)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env.pop('ROS_LOCALHOST_ONLY', None)  # deprecated since Jazzy; conflicts with the above
    env.setdefault('ROS_DOMAIN_ID', str(claim_domain_id()))
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile_path())
    env['RMW_IMPLEMENTATION'] = 'rmw_fastrtps_cpp'
    env.setdefault('PYTHONUNBUFFERED', '1')
    return env


def apply_to_current_process() -> dict[str, str]:
    """Isolate this process before it calls rclpy.init; children inherit the settings."""
    env = isolated_env()
    os.environ.update(env)
    return env
