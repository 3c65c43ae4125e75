"""Locust's CSV statistics complete to the run's last request.

Locust's CSV writer rewrites ``*_stats.csv``, ``*_failures.csv`` and
``*_exceptions.csv`` once a second and closes them when Locust quits. A request
that ends in the last second is therefore in the terminal's and the HTML
report's tables but not in the CSV (locustio/locust#1806, #2299). Under
``--stop-timeout`` that is every session that finished after the run time: the
last ``final`` steps, the slowest, were missing from ``make load``'s CSV.
``install()`` makes the writer write its rows once more as it closes.
"""

from __future__ import annotations

import csv
from typing import Any

from locust.stats import StatsCSVFileWriter

_MARK = "_earshot_last_pass"


def _last_pass(writer: Any) -> None:
    """Each file rewritten from its header with the final rows."""
    for handle, header, rows in (
        (writer.requests_csv_filehandle, writer.requests_csv_columns, writer._requests_data_rows),
        (writer.failures_csv_filehandle, writer.failures_columns, writer._failures_data_rows),
        (writer.exceptions_csv_filehandle, writer.exceptions_columns,
         writer._exceptions_data_rows),
    ):
        handle.seek(0)
        out = csv.writer(handle)
        out.writerow(header)
        rows(out)
        handle.truncate()
        handle.flush()


def install() -> None:
    """Write the final rows when Locust closes its CSV files (once per process)."""
    close = StatsCSVFileWriter.close_files
    if getattr(close, _MARK, False):
        return

    def close_files(self: StatsCSVFileWriter) -> None:
        _last_pass(self)
        close(self)

    setattr(close_files, _MARK, True)
    StatsCSVFileWriter.close_files = close_files  # type: ignore[method-assign]
