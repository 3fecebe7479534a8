"""Machinery behind the public API: controller, replicas, proxies, routing."""
