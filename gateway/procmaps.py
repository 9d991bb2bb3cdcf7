"""Which shared libraries this process has mapped (Linux `/proc/self/maps`).

How the gateway reaches the native libraries PyAV's wheel brought along, to call them directly:
libavutil (aiortc_patches.single_threaded_ffmpeg) and libopus (media/libopus.py). Elsewhere
(no /proc, an unreadable file) nothing is found and each caller falls back its own way.
"""

from __future__ import annotations


def mapped(fragment: str, maps: str = "/proc/self/maps") -> set[str]:
    """Paths of the mapped files whose path contains `fragment` (e.g. "libopus")."""
    try:
        with open(maps) as f:
            return {path for line in f if fragment in (path := line.split()[-1])}
    except OSError:
        return set()
