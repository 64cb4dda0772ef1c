"""One way to open a Redis client, for every Redis user of the data plane (stream worker, producer,
gateway, ledger, batch checkpoints, cost calibration): bounded socket waits, so a Redis that
vanishes (a failover, a dropped connection, a half-open TCP session) becomes an error the caller
retries instead of a hang.
"""

from __future__ import annotations

from typing import Any

SOCKET_TIMEOUT_S = 10.0  # longest wait for one reply; blocking commands add their BLOCK to it
SOCKET_CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 30  # PING a connection idle this long before reusing it
BLOCK_MARGIN_S = 5.0  # a blocking XREADGROUP's reply may come this long after its BLOCK ends


def socket_timeout_for(block_ms: int) -> float:
    """The socket timeout of a client whose longest blocking command waits block_ms: always above it,
    or every idle XREADGROUP BLOCK would end in a TimeoutError."""
    return max(SOCKET_TIMEOUT_S, max(0, block_ms) / 1000 + BLOCK_MARGIN_S)


def client_options(block_ms: int = 0) -> dict[str, Any]:
    return {
        "socket_timeout": socket_timeout_for(block_ms),
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
    }


def redis_client(url: str, *, block_ms: int = 0, decode_responses: bool = False):
    """A redis.Redis for url (redis://, rediss://, unix://) with the timeouts above.

    block_ms: the longest BLOCK this client's commands use (XREADGROUP), 0 when it never blocks."""
    import redis

    return redis.Redis.from_url(url, decode_responses=decode_responses, **client_options(block_ms))
