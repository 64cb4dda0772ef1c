"""The streaming path: events on Redis Streams, the routing record, producers, the gateway and the worker."""
