"""Operator control: the one HTTP server of the gateway and what it serves.

- `server.py`: uvicorn on one bound socket, with the per-connection bounds the operator port
  needs (header read time, header size, concurrent connections).
- `health.py`: `/metrics`, `/healthz`, `/ready`, `/calls` (open, read-only).
- `api.py`: the operator API under `/v1/` (bearer token; off without one).

Routes only *ask* a call to act (hang up, transfer); the call decides whether and how.
"""
