"""One place that turns ``REDIS_URL`` into a client: a server, or a Redis Cluster.

``redis://`` / ``rediss://`` name one server. A comma-separated list of node URLs, or
``redis+cluster://host:port`` (``rediss+cluster://`` with TLS), names a Redis Cluster.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from .config import ConfigError

#: What ``connect`` returns. Cluster pipelines refuse Script objects: batch through
#: ``realtime.redis_batch``, which drives both.
RedisClient = aioredis.Redis | RedisCluster

#: What a Redis outage raises. A cluster that cannot route a slot raises
#: RedisClusterException, which is not a RedisError.
ERRORS = (RedisError, RedisClusterException, OSError)


def is_cluster(url: str) -> bool:
    return "," in url or urlsplit(url).scheme.endswith("+cluster")


#: Connections one client opens to one Redis node at most. Callers beyond it wait (up
#: to POOL_TIMEOUT_S) instead of failing: a reconnect storm of a thousand clients all
#: recovering at once must queue, not error.
MAX_CONNECTIONS = 64
POOL_TIMEOUT_S = 5.0


def connect(url: str, **options: Any) -> RedisClient:
    """A client for ``url`` (nothing is contacted until the first command)."""
    options.setdefault("socket_connect_timeout", 2)
    if not is_cluster(url):
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT_S, **options
        )
        return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it
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
    # The cluster client has no waiting pool: allow more connections per node instead.
    return RedisCluster(startup_nodes=nodes, ssl=tls, max_connections=16 * MAX_CONNECTIONS, **options)
