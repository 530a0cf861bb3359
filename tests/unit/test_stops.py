"""Stop strings across delta boundaries never leak into the output."""
import pytest

from trtllm_service.stops import StopMatcher


def run(stops, chunks):
    m = StopMatcher(stops)
    out = "".join(m.feed(c) for c in chunks) + m.flush()
    return out, m.matched


@pytest.mark.parametrize("chunks", [["Hello END world"], ["Hello E", "ND world"], ["Hello ", "E", "N", "D", " x"],
                                    list("Hello END world")])
def test_stop_straddling_deltas_is_cut(chunks):
    assert run(["END"], chunks) == ("Hello ", "END")


def test_partial_prefix_is_released_when_it_cannot_match():
    m = StopMatcher(["END"])
    assert m.feed("abc E") == "abc "
    assert m.feed("x") == "Ex"
    assert m.matched is None


def test_earliest_of_several_stops_wins():
    assert run(["world", "lo w"], ["Hello world"]) == ("Hel", "lo w")


def test_held_tail_flushed_at_end():
    assert run(["ENDING"], ["text END"]) == ("text END", None)


def test_no_stops_passes_through():
    assert run([], ["a", "b"]) == ("ab", None)


def test_nothing_after_match():
    m = StopMatcher(["x"])
    assert m.feed("axb") == "a"
    assert m.feed("more") == ""
    assert m.flush() == ""
