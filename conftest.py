"""Plugins shared by tests/ and benchmarks/: real memcached processes on free ports."""

pytest_plugins = ["memcached_fixtures", "cluster_fixtures"]
