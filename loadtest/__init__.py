"""Load tests and benchmarks of redis-bus (they import producer, never consumers or web)."""
