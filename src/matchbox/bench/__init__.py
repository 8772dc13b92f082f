"""Reproducible benchmarks that compare side by side in one run, and print figures."""
