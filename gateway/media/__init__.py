"""Media plane: RTP to and from the phone, jitter buffering, G.711 transcoding, aiortc tracks."""
