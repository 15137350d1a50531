"""Pure algorithms: numpy and OpenCV only, no rclpy and no *_msgs (a test enforces it).

Time is int nanoseconds everywhere. Settings arrive as frozen dataclasses.
"""
