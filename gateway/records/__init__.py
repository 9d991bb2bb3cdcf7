"""Call records, their delivery by webhook through a durable spool, and call recordings.

`record.py` builds one call's record from facts the `Call` reports; `spool.py` keeps events on
disk until delivered; `webhooks.py` signs and delivers them; `recording.py` writes a call's
stereo audio off the event loop; `settings.py` reads and checks `[webhooks]` and `[recording]`.
"""
