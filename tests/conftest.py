pytest_plugins = ["memcached_fixtures"]
