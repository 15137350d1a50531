"""fusion_nodes: real-time camera, lidar and GPS fusion for ROS 2."""

__version__ = '0.1.0'
