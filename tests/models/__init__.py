"""Tiny test-only models, built at test time so nothing binary is committed."""
