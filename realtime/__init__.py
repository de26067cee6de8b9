"""Transport: WebSocket gateway, codecs, brokers, identity, storage, metrics, server and CLI. Knows no domain."""
