from gateway.media.jitter import JitterBuffer, Output, PushResult

FRAME = bytes(160)


def frame(i: int) -> bytes:
    return bytes([i % 256]) * 160


def drain(jb: JitterBuffer, n: int) -> list[tuple[Output, int]]:
    out = []
    for _ in range(n):
        o = jb.pop()
        out.append((o.kind, o.payload[0] if o.payload else -1))
    return out


def test_primes_to_40ms_then_plays_in_order() -> None:
    jb = JitterBuffer()
    jb.push(100, frame(1))
    assert jb.pop().kind is Output.EMPTY  # 20 ms buffered < 40 ms target
    jb.push(101, frame(2))
    assert drain(jb, 2) == [(Output.AUDIO, 1), (Output.AUDIO, 2)]


def test_reorder_is_fixed() -> None:
    jb = JitterBuffer()
    for seq in (10, 12, 11, 13):
        jb.push(seq, frame(seq))
    assert [p for _, p in drain(jb, 4)] == [10, 11, 12, 13]


def test_single_loss_is_reported_for_concealment_and_late_packet_dropped() -> None:
    jb = JitterBuffer()
    jb.push(1, frame(1))
    jb.push(3, frame(3))
    assert drain(jb, 2) == [(Output.AUDIO, 1), (Output.LOSS, -1)]
    assert jb.push(2, frame(2)) is PushResult.LATE
    assert drain(jb, 1) == [(Output.AUDIO, 3)]
    assert jb.stats.lost == 1 and jb.stats.late == 1


def test_duplicate() -> None:
    jb = JitterBuffer()
    assert jb.push(5, frame(5)) is PushResult.ACCEPTED
    assert jb.push(5, frame(5)) is PushResult.DUPLICATE
    assert jb.stats.duplicates == 1


def test_wraparound() -> None:
    jb = JitterBuffer()
    for seq in (65534, 65535, 0, 1):
        jb.push(seq, frame(seq))
    assert [p for _, p in drain(jb, 4)] == [254, 255, 0, 1]


def test_underrun_grows_target_and_idle_decays_it() -> None:
    jb = JitterBuffer(initial_ms=40, max_ms=200)
    seq = 0
    jb.push(seq, frame(0))
    jb.push(seq + 1, frame(1))
    drain(jb, 2)
    assert jb.pop().kind is Output.EMPTY
    assert jb.stats.underruns == 1 and jb.target_ms == 60
    # steady stream: one push, one pop; target decays back after 2 s without underruns
    seq = 2
    for _ in range(3):
        jb.push(seq, frame(seq))
        seq += 1
    for _ in range(150):
        jb.pop()
        jb.push(seq, frame(seq))
        seq += 1
    assert jb.target_ms == 40


def test_delay_shrinks_after_a_burst() -> None:
    jb = JitterBuffer()
    seq = 0
    for _ in range(2):
        jb.push(seq, frame(seq))
        seq += 1
    jb.pop()
    # a 120 ms burst arrives at once (the network held it)
    for _ in range(6):
        jb.push(seq, frame(seq))
        seq += 1
    assert jb.depth_ms >= 120
    for _ in range(100):  # 2 s of steady flow
        jb.pop()
        jb.push(seq, frame(seq))
        seq += 1
    assert jb.depth_ms <= 40
    assert jb.stats.shrink_dropped >= 4


def test_delay_never_exceeds_bound() -> None:
    jb = JitterBuffer(max_ms=200)
    for seq in range(100):  # 2 s arriving with nothing played
        jb.push(seq, frame(seq))
        assert jb.depth_ms <= 200
    assert jb.stats.overflow_dropped == 90
    assert jb.pop().payload[0] == 90  # the newest audio survives


def test_non_audio_slots_play_silence_not_loss() -> None:
    jb = JitterBuffer()
    jb.push(1, frame(1))
    jb.mark_non_audio(2)
    jb.push(3, frame(3))
    kinds = [k for k, _ in drain(jb, 3)]
    assert kinds == [Output.AUDIO, Output.SILENCE, Output.AUDIO]
    assert jb.stats.lost == 0


def test_ssrc_reset_keeps_buffered_audio_and_continues_without_gap() -> None:
    jb = JitterBuffer()
    jb.push(1000, frame(1))
    jb.push(1001, frame(2))
    assert drain(jb, 1) == [(Output.AUDIO, 1)]
    jb.reset()
    jb.push(7, frame(7))  # new stream, unrelated numbering
    jb.push(8, frame(8))
    assert drain(jb, 3) == [(Output.AUDIO, 2), (Output.AUDIO, 7), (Output.AUDIO, 8)]
    assert jb.stats.lost == 0 and jb.stats.late == 0 and jb.stats.underruns == 0


def test_ssrc_reset_with_empty_buffer() -> None:
    jb = JitterBuffer()
    jb.push(50000, frame(1))
    jb.push(50001, frame(2))
    drain(jb, 2)
    jb.reset()
    jb.push(3, frame(3))
    jb.push(4, frame(4))
    out = drain(jb, 3)
    assert (Output.AUDIO, 3) in out and (Output.AUDIO, 4) in out
    assert jb.stats.late == 0
