"""Benchmarks behind ``its bench NAME --json``: each measures ours next to a named peer in the same run."""
