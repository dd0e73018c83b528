"""Plugins shared by tests/ and benchmarks/: real memcached processes on free ports, PostgreSQL schemas."""

pytest_plugins = ["memcached_fixtures", "cluster_fixtures", "postgres_fixtures", "pytester"]
