"""livemart: real-time server for live commerce."""
