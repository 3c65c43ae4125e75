"""The load tooling's own logic, without Locust or a server: what a session counts
as a looping snapshot, its WER bounds, the capacity rule, and bad input to
``python -m earshot.load``."""

from __future__ import annotations

import pytest

from earshot.load import capacity as cap
from earshot.load.cli import parse_args
from earshot.load.session import SessionOptions, repeated_run

JFK = ("And so my fellow Americans, ask not what your country can do for you, "
       "ask what you can do for your country.")


def test_a_snapshot_that_repeats_itself_is_a_loop() -> None:
    # The snapshot the load issue quotes, read under load.
    text = ("ask what you ask. And so, my fellow Americans ask not what your country "
            "can do for you, ask what you")
    assert repeated_run(text, JFK) is None  # repeats nothing five words long
    looping = "And so my fellow Americans, and, and, and so my fellow Americans, and, and"
    assert repeated_run(looping, JFK) == "and so my fellow americans"


def test_speech_that_repeats_itself_is_not_a_loop() -> None:
    # (words, not numbers: the normaliser turns "one two three four five" into "12345")
    reference = "ask what you can do and then ask what you can do again"
    assert repeated_run(reference, reference) is None
    assert repeated_run(JFK, JFK) is None
    # what the reference repeats is allowed; another repeat in the same text is not
    text = reference + " for your country for your country"
    assert repeated_run(text, reference) is None  # "for your country" is three words
    text = reference + " and so my fellow americans and so my fellow americans"
    assert repeated_run(text, reference) == "and so my fellow americans"


def test_a_repeat_that_ends_the_snapshot_is_a_loop() -> None:
    text = "my fellow Americans ask not what your country ask not what your country"
    assert repeated_run(text, JFK) == "ask not what your country"
    assert repeated_run("ask not what your", JFK) is None  # shorter than a run


def test_a_clip_with_a_baseline_gets_its_own_bound() -> None:
    options = SessionOptions(max_wer=0.10, wer_bounds={"jfk.flac": 0.05})
    assert options.wer_bound("jfk.flac") == 0.05
    assert options.wer_bound("other.wav") == 0.10


def level(users: int, failures: int = 0, first: float = 1.0, final: float = 0.2
          ) -> cap.Level:
    step = {"count": 4, "failures": 0, "p50": 0.1, "max": 2.0}
    steps = {"connect": {**step, "p95": 0.01, "failures": failures},
             "first_text": {**step, "p95": first}, "final": {**step, "p95": final}}
    return cap.Level(users, {"steps": steps, "failures": {}, "generator": {}})


def test_capacity_is_the_last_level_before_the_first_that_did_not_hold() -> None:
    levels = [level(1), level(2), level(4, final=1.6), level(6)]
    assert [lv.held for lv in levels] == [True, True, False, True]
    assert cap.capacity(levels) == 2
    assert level(4, final=1.6).problems() == ["p95 final 1.60 s over 1.5 s"]
    assert level(4, failures=2).problems() == ["2 failed step(s)"]
    assert cap.capacity([level(1, first=1.51)]) == 0


def test_the_soak_runs_at_three_quarters_of_the_capacity() -> None:
    assert [cap.soak_users(n) for n in (1, 2, 4, 8, 10)] == [1, 1, 3, 6, 7]


@pytest.mark.parametrize(("argv", "message"), [
    (["capacity", "--levels", "4,x"], "--levels must be whole numbers"),
    (["capacity", "--levels", "0,2"], "each 1 or more"),
    (["capacity", "--peer", "--target", "ws://127.0.0.1:1"], "does not go with --target"),
    (["load", "--target", "http://127.0.0.1:1"], "must be a ws:// or wss:// URL"),
    (["load", "--users", "0"], "--users must be at least 1"),
    (["load", "--clips", "nope.wav"], "unknown clip 'nope.wav'"),
    (["load", "--server-option", "beam=1"], "no server setting 'beam'"),
    (["load", "--server-option", "beam_size"], "must be NAME=VALUE"),
])
def test_bad_input_is_refused_with_one_line(argv: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_side_by_side_gives_each_load_both_measured_its_ratio() -> None:
    from earshot.load.cli import side_by_side

    ours = [level(1, first=0.9), level(4, first=1.1)]
    theirs = [level(1, first=1.3)]
    ours[0].summary["steps"]["first_text"]["p50"] = 0.5
    theirs[0].summary["steps"]["first_text"]["p50"] = 1.0
    table = side_by_side(ours, theirs).splitlines()
    assert len(table) == 3  # header, rule, the one load both ran
    assert table[2].startswith("| 1 | 0.50 / 1.00 (0.50) | 0.10 / 0.10 (1.00) | 0 / 0 |")


def test_the_whole_file_baseline_is_faster_whisper_on_each_clip_scored_as_wer_is(
        speech_clip) -> None:
    from earshot.load.baseline import whole_file
    from earshot.testing.wer import wer

    jfk, other = speech_clip("jfk.flac"), speech_clip("librivox_ss01_0890.wav")
    wrong = type(jfk)(jfk.name, jfk.samples, "something else entirely was said")
    [first, second, third] = whole_file([jfk, other, wrong])
    assert (first.clip, second.clip) == ("jfk.flac", "librivox_ss01_0890.wav")
    assert first.wer == 0.0 and "fellow Americans" in first.text  # tiny.en, word for word
    assert second.wer < 0.1 and second.seconds > 0
    # The same speech held to another reference: scored as the WER of make validate is.
    assert third.text == first.text and third.wer == wer(wrong.reference, third.text) > 1


LOCUSTFILE_OPTIONS = """
import json, sys
from earshot.load import LOCUSTFILE
from earshot.load.runner import load_locustfile
from locust.argument_parser import get_parser
module = load_locustfile(LOCUSTFILE)
options = module.session_options(get_parser().parse_args(["-f", str(LOCUSTFILE), *sys.argv[1:]]))
print(json.dumps({"max_wer": options.max_wer, "wer_bounds": options.wer_bounds,
                  "end_by_close": options.end_by_close, "final_timeout": options.final_timeout,
                  "headers": options.headers}))
"""


@pytest.mark.parametrize(("args", "expected"), [
    ([], {"max_wer": 0.10, "wer_bounds": None, "end_by_close": False, "final_timeout": 30.0,
          "headers": None}),
    (["--max-wer", "0.2", "--end-by", "close", "--final-timeout", "12", "--api-key", "k"],
     {"max_wer": 0.2, "wer_bounds": None, "end_by_close": True, "final_timeout": 12.0,
      "headers": {"Authorization": "Bearer k"}}),
    (["--wer-baseline", "BASELINE", "--wer-margin", "0.1"],
     {"max_wer": 0.10, "wer_bounds": {"jfk.flac": pytest.approx(0.15)},
      "end_by_close": False, "final_timeout": 30.0, "headers": None}),
], ids=["defaults", "each option", "a baseline"])
def test_the_locustfiles_options_under_plain_locust_become_the_sessions_checks(
        tmp_path, args: list[str], expected: dict) -> None:
    # In a process of its own: importing Locust patches the standard library (gevent).
    import json
    import subprocess
    import sys

    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"jfk.flac": 0.05}))
    args = [str(baseline) if a == "BASELINE" else a for a in args]
    done = subprocess.run([sys.executable, "-c", LOCUSTFILE_OPTIONS, *args],
                          capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected
