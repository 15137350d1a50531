"""colcon build installs what `ros2 run` and `ros2 launch` need, as on a real ROS install."""

from pathlib import Path
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXECUTABLES = ('camera_node', 'lidar_node', 'gps_node', 'fusion_node', 'fusion-sim',
               'fusion-replay', 'fusion-bringup', 'fusion-build-engine')


def _source_files() -> list[str]:
    listed = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.split('\n')
    return [name for name in listed if name and (ROOT / name).is_file()]


@pytest.fixture(scope='module')
def install_dir(tmp_path_factory) -> Path:
    colcon = Path(sys.executable).with_name('colcon')
    if not colcon.exists():
        pytest.fail('colcon is not installed in this environment (make venv installs it)')
    work = tmp_path_factory.mktemp('colcon')
    source = work / 'src' / 'fusion_nodes'
    for name in _source_files():
        if name.startswith('bags/'):
            continue  # bags are test data, not installed
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    result = subprocess.run(
        [str(colcon), '--log-base', str(work / 'log'), 'build', '--base-paths', str(work / 'src'),
         '--build-base', str(work / 'build'), '--install-base', str(work / 'install')],
        cwd=work, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / 'install' / 'fusion_nodes'


def test_executables_under_lib(install_dir):
    lib = install_dir / 'lib' / 'fusion_nodes'
    missing = [name for name in EXECUTABLES if not (lib / name).is_file()]
    assert missing == []
    site = next((install_dir / 'lib').glob('python3*/site-packages'))
    entry_points = next(site.glob('fusion_nodes*-info/entry_points.txt')).read_text()
    assert 'camera_node = fusion_nodes.nodes.camera_node:main' in entry_points


def test_data_files_under_share(install_dir):
    share = install_dir / 'share' / 'fusion_nodes'
    assert (share / 'package.xml').is_file()
    expected = [name for name in _source_files()
                if name.split('/')[0] in ('launch', 'config', 'models')]
    assert 'config/fusion.yaml' in expected and 'config/fastdds_localhost.xml' in expected
    missing = [name for name in expected if not (share / name).is_file()]
    assert missing == []


def test_ament_index_marker(install_dir):
    marker = install_dir / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'fusion_nodes'
    assert marker.is_file()


def test_python_package_installed(install_dir):
    site = next((install_dir / 'lib').glob('python3*/site-packages'))
    assert (site / 'fusion_nodes' / 'core' / 'config.py').is_file()
    assert not (site / 'tests').exists()
