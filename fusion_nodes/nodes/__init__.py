"""Thin rclpy Node classes over the core, one executable each."""
