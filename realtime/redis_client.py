"""One place that turns ``REDIS_URL`` into a client: a server, or a Redis Cluster.

``redis://`` / ``rediss://`` name one server. A comma-separated list of node URLs, or
``redis+cluster://host:port`` (``rediss+cluster://`` with TLS), names a Redis Cluster.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from .config import ConfigError

RedisClient = aioredis.Redis | RedisCluster


def is_cluster(url: str) -> bool:
    return "," in url or urlsplit(url).scheme.endswith("+cluster")


def connect(url: str, **options: Any) -> RedisClient:
    """A client for ``url`` (nothing is contacted until the first command)."""
    options.setdefault("socket_connect_timeout", 2)
    if not is_cluster(url):
        return aioredis.Redis.from_url(url, **options)
    nodes = []
    tls = False
    for part in url.split(","):
        parts = urlsplit(part.strip())
        if parts.hostname is None:
            raise ConfigError(f"REDIS_URL: cannot read a host from {part!r}")
        tls = tls or parts.scheme.startswith("rediss")
        nodes.append(ClusterNode(parts.hostname, parts.port or 6379))
        if parts.password:
            options.setdefault("password", parts.password)
        if parts.username:
            options.setdefault("username", parts.username)
    return RedisCluster(startup_nodes=nodes, ssl=tls, **options)
