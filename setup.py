from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'fusion_nodes'


def _tree(src: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install every file under src, keeping sub-folders."""
    entries = []
    for root, _, files in os.walk(src):
        paths = [os.path.join(root, name) for name in files]
        if paths:
            entries.append((os.path.join('share', package_name, root), paths))
    return entries


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['tests', 'tests.*']),
    package_data={'fusion_nodes.sim': ['scenarios/*.yaml']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        *_tree('config'),
        *_tree('models'),
    ],
    install_requires=['setuptools'],
    extras_require={'test': ['pytest', 'hypothesis']},
    zip_safe=True,
    maintainer='fusion_nodes maintainers',
    maintainer_email='maintainers@fusion-nodes.dev',
    description='Real-time camera, lidar and GPS fusion with DTW alignment and gated fusion.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'camera_node = fusion_nodes.nodes.camera_node:main',
            'lidar_node = fusion_nodes.nodes.lidar_node:main',
            'gps_node = fusion_nodes.nodes.gps_node:main',
            'fusion_node = fusion_nodes.nodes.fusion_node:main',
            'fusion_lifecycle_node = fusion_nodes.nodes.fusion_node:managed_main',
            'fusion-sim = fusion_nodes.sim.cli:main',
            'fusion-align-eval = fusion_nodes.tools.align_eval:main',
            'fusion-train = fusion_nodes.model.train:main',
            'fusion-eval = fusion_nodes.model.evaluate:main',
            'fusion-build-engine = fusion_nodes.inference.build_engine:main',
            'fusion-replay = fusion_nodes.tools.replay:main',
            'fusion-bringup = fusion_nodes.tools.bringup:main',
            'fusion_stack = fusion_nodes.tools.stack:main',
        ],
    },
)
