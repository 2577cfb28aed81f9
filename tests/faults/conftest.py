"""Fault-injection suite: kill -9, corrupted checkpoints, changed settings, bad inputs.

Each test adds what it checked to :data:`fault_tools.FIGURES`; the totals are printed at the end
of the run (kills survived, corruptions detected, bad inputs refused, bytes lost).
"""

from fault_tools import FIGURES


def pytest_terminal_summary(terminalreporter):
    if any(FIGURES.values()):
        terminalreporter.write_line("fault injection: " + ", ".join(f"{k} {v}" for k, v in FIGURES.items()))
