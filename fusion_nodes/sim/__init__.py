"""Deterministic synthetic driving world that writes rosbag2 files with ground truth."""
