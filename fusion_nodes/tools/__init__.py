"""Command-line tools and process helpers (bringup, replay, DDS isolation)."""
