"""Transport: WebSocket gateway, codecs, brokers, identity, storage, metrics, server, CLI.

It knows no domain: rooms and commerce plug in through namespaces, ops and modules.
"""
