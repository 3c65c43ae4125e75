"""Word error rate as Whisper's authors score English, and the words a transcript
lost at its end."""

from __future__ import annotations

import pytest

from earshot.testing.wer import normalise, wer, words_lost_at_the_end

JFK = "And so my fellow Americans, ask not what your country can do for you"


def test_normalising_drops_case_and_punctuation_and_spells_out_titles() -> None:
    assert normalise("Hello, World!  Mr. Smith") == "hello world mister smith"


def test_the_same_words_differently_written_score_zero() -> None:
    assert wer(JFK, JFK.upper().replace(",", "")) == 0.0


def test_wer_counts_errors_per_reference_word() -> None:
    # 14 reference words; one substituted, one left out
    hypothesis = JFK.replace("fellow", "yellow").replace(" for you", " you")
    assert wer(JFK, hypothesis) == pytest.approx(2 / 14)
    assert isinstance(wer(JFK, hypothesis), float)


def test_an_empty_reference_scores_zero_only_for_an_empty_hypothesis() -> None:
    assert wer("", "") == 0.0
    assert wer("?!", " ") == 0.0  # nothing left after normalising, either side
    assert wer("", "words out of nothing") == 1.0
    assert wer(", ", "words") == 1.0


def test_the_words_lost_at_the_end_are_the_trailing_deletions() -> None:
    assert words_lost_at_the_end(JFK, "And so my fellow Americans, ask not what your") == 5
    assert words_lost_at_the_end(JFK, "And so my fellow Americans ask not") == 7


def test_errors_before_the_end_lose_no_words_at_the_end() -> None:
    assert words_lost_at_the_end(JFK, JFK) == 0
    assert words_lost_at_the_end(JFK, JFK.replace("And so ", "")) == 0  # lost at the start
    assert words_lost_at_the_end(JFK, JFK.replace("you", "me")) == 0  # the last one wrong
    assert words_lost_at_the_end(JFK, JFK + " and more") == 0  # words added at the end


def test_an_empty_hypothesis_loses_every_reference_word() -> None:
    assert words_lost_at_the_end(JFK, "") == 14
    assert words_lost_at_the_end(JFK, " , ") == 14  # empty once normalised


def test_an_empty_reference_has_no_words_to_lose() -> None:
    assert words_lost_at_the_end("", "") == 0
    assert words_lost_at_the_end("?! ", "some words") == 0
