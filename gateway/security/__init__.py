"""Edge security that needs no I/O: rate limits, connection caps and trunk source matching.

Every function takes `now` (monotonic seconds) from the caller and keeps bounded memory, so a
flood from many (possibly spoofed) addresses cannot grow it. SIP digest authentication lives
with the SIP core in `gateway/sip/auth.py`.
"""
