"""Load-test toolkit: open-loop WebSocket and HTTP load against any livemart URL."""
