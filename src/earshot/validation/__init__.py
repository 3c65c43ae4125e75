"""Pre-release validation of a WhisperLive-protocol server (``make validate``).

:mod:`~earshot.validation.cli` runs it; :mod:`~earshot.validation.thresholds`
reads ``validation.toml``; :mod:`~earshot.validation.suite` runs and classifies
the scenario suite; :mod:`~earshot.validation.measure` measures latency, WER
and load; :mod:`~earshot.validation.report` checks the thresholds and writes
the report.
"""
