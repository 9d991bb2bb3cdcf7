"""asyncio drivers for the sans-IO SIP core: UDP and TCP sockets, one loop timer each."""
