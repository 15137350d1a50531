"""Inference backends behind one small interface (Polygraphy style)."""
