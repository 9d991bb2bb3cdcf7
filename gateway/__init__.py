"""orga-sip-gateway: answers SIP calls and bridges each caller to an Orga AI realtime session."""

__version__ = "0.1.0"
