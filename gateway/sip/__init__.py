"""Sans-IO SIP (RFC 3261): bytes, source address and `now` in; events, bytes and timers out."""
