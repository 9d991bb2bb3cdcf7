"""Orga realtime API client: REST setup (httpx) and the WebRTC peer (aiortc)."""
