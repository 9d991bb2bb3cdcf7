import enum

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import ConversationStats, Metrics, orga_status, status_class


def samples(m: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = m.render().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return samples(m).get((name, frozenset(labels.items())))


def names(m: Metrics) -> set[str]:
    return {name for name, _ in samples(m)}


def test_registries_are_independent_and_prefixed() -> None:
    a, b = Metrics(), Metrics()
    a.sip_request("INVITE")
    assert value(a, "orga_gateway_sip_requests_total", method="INVITE", direction="in") == 1
    assert value(b, "orga_gateway_sip_requests_total", method="INVITE", direction="in") is None
    assert all(n.startswith("orga_gateway_") for n in names(a))
    assert any(n == "orga_gateway_build_info" for n in names(a))


def test_sip_labels_are_bounded() -> None:
    m = Metrics()
    for i in range(50):
        m.sip_request(f"SCAN{i}")
        m.sip_response("INVITE", 100 + i * 13)
    m.sip_response("bye", 200, "in")
    ss = samples(m)
    methods = {dict(k[1])["method"] for k in ss if k[0] == "orga_gateway_sip_requests_total"}
    assert methods == {"other"}
    classes = {dict(k[1])["status_class"] for k in ss
               if k[0] == "orga_gateway_sip_responses_total"}
    assert classes <= {"1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "other"}
    assert value(m, "orga_gateway_sip_responses_total", method="BYE", status_class="2xx",
                 direction="in") == 1


class Result(enum.Enum):
    NORMAL = "normal"


def test_calls_setup_and_duration() -> None:
    m = Metrics()
    m.call_started("+4930*", "pbx")
    m.set_active_calls(1)
    m.call_setup(0.8)
    m.setup_step("client_secrets", 0.12)
    m.setup_step("made_up_step", 0.1)
    m.call_ended(Result.NORMAL, "+4930*", "pbx", duration_s=42.0)
    m.set_active_calls(0)
    assert value(m, "orga_gateway_calls_started_total", route="+4930*", trunk="pbx") == 1
    assert value(m, "orga_gateway_calls_ended_total", result="normal", route="+4930*",
                 trunk="pbx") == 1
    assert value(m, "orga_gateway_active_calls") == 0
    assert value(m, "orga_gateway_call_setup_seconds_bucket", le="1.0") == 1
    assert value(m, "orga_gateway_call_setup_seconds_bucket", le="0.75") == 0
    assert value(m, "orga_gateway_call_setup_step_seconds_count", step="client_secrets") == 1
    assert value(m, "orga_gateway_call_setup_step_seconds_count", step="other") == 1
    assert value(m, "orga_gateway_call_duration_seconds_sum") == 42.0


def test_orga_media_and_daemon_recorders() -> None:
    m = Metrics()
    m.orga_request("calls", 0.3)
    m.orga_request("calls", 10.0, "timeout")
    m.orga_request("client_secrets", 0.1, 401)
    m.orga_request("client_secrets", 0.1, 503)
    m.rtp("in", 50, 8000, lost=2, late=1)
    m.rtp("out", 50, 8000)
    m.rtp_jitter(0.004)
    m.playout_underrun()
    m.playout_dropped(0.12)
    m.playout_max_gap(0.021)
    m.dtmf("rfc4733")
    m.dtmf("5")  # not a source: bounded to "other"
    m.text_event("transcript")
    m.text_event("assistant")
    m.set_free_ports(499)
    m.set_draining(True)
    m.security_rejection("unknown_source")
    m.security_rejection("no such reason")
    m.turn_latency(0.45)
    assert value(m, "orga_gateway_orga_request_seconds_count", endpoint="calls") == 2
    assert value(m, "orga_gateway_orga_request_errors_total", endpoint="calls",
                 status="timeout") == 1
    assert value(m, "orga_gateway_orga_request_errors_total", endpoint="client_secrets",
                 status="401") == 1
    assert value(m, "orga_gateway_orga_request_errors_total", endpoint="client_secrets",
                 status="5xx") == 1
    assert value(m, "orga_gateway_rtp_packets_total", direction="in") == 50
    assert value(m, "orga_gateway_rtp_bytes_total", direction="out") == 8000
    assert value(m, "orga_gateway_rtp_lost_packets_total", direction="in") == 2
    assert value(m, "orga_gateway_rtp_late_packets_total", direction="in") == 1
    assert value(m, "orga_gateway_rtp_jitter_seconds_count") == 1
    assert value(m, "orga_gateway_playout_underruns_total") == 1
    assert value(m, "orga_gateway_playout_dropped_seconds_total") == 0.12
    assert value(m, "orga_gateway_playout_max_gap_seconds_count") == 1
    assert value(m, "orga_gateway_playout_max_gap_seconds_bucket", le="0.025") == 1
    assert value(m, "orga_gateway_dtmf_digits_total", source="rfc4733") == 1
    assert value(m, "orga_gateway_dtmf_digits_total", source="other") == 1
    assert value(m, "orga_gateway_conversation_text_events_total", kind="transcript") == 1
    assert value(m, "orga_gateway_rtp_ports_free") == 499
    assert value(m, "orga_gateway_draining") == 1
    assert value(m, "orga_gateway_security_rejections_total", reason="unknown_source") == 1
    assert value(m, "orga_gateway_security_rejections_total", reason="other") == 1
    assert value(m, "orga_gateway_turn_latency_seconds_bucket", le="0.5") == 1
    assert value(m, "orga_gateway_turn_latency_seconds_bucket", le="0.4") == 0


def test_per_conversation_series_exist_only_while_the_call_runs() -> None:
    m = Metrics(max_conversations=2)
    stats = ConversationStats(audio_in_seconds=3.5, audio_out_seconds=2.0, packets_in=175,
                              packets_out=100, packets_lost=1, jitter_seconds=0.003, turns=2)
    current = {"s": stats}
    assert m.add_conversation("conv-1", "*", lambda: current["s"])
    assert value(m, "orga_gateway_conversation_audio_in_seconds_total",
                 conversation_id="conv-1", route="*") == 3.5
    assert value(m, "orga_gateway_conversation_turns_total", conversation_id="conv-1",
                 route="*") == 2
    # No turn yet measured: no last-latency series rather than a made-up zero.
    assert value(m, "orga_gateway_conversation_last_turn_latency_seconds",
                 conversation_id="conv-1", route="*") is None
    current["s"] = ConversationStats(turns=3, last_turn_latency_seconds=0.61)
    assert value(m, "orga_gateway_conversation_last_turn_latency_seconds",
                 conversation_id="conv-1", route="*") == 0.61
    assert m.conversations() == [{"conversation_id": "conv-1", "route": "*",
                                  **{f: getattr(current["s"], f)
                                     for f in ConversationStats.__dataclass_fields__}}]
    assert m.add_conversation("conv-2", "*", ConversationStats)
    assert not m.add_conversation("conv-3", "*", ConversationStats)  # bounded
    m.remove_conversation("conv-1")
    m.remove_conversation("conv-2")
    m.remove_conversation("never-added")
    text = m.render().decode()
    assert "conversation_id=" not in text
    # The families stay described (HELP/TYPE), only their series are gone.
    assert "# TYPE orga_gateway_conversation_turns_total counter" in text


def test_failing_stats_source_does_not_break_the_scrape() -> None:
    m = Metrics()

    def broken() -> ConversationStats:
        raise RuntimeError("boom")

    m.add_conversation("bad", "*", broken)
    m.add_conversation("good", "*", lambda: ConversationStats(turns=1))
    assert value(m, "orga_gateway_conversation_turns_total", conversation_id="good",
                 route="*") == 1
    assert "conversation_id=\"bad\"" not in m.render().decode()


def test_status_helpers() -> None:
    assert status_class(183) == "1xx" and status_class(99) == "other" and status_class(700) == (
        "other")
    assert orga_status(422) == "422" and orga_status(502) == "5xx" and orga_status("x") == "other"
