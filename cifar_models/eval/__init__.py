"""Evaluation: `evaluation` (the test report and the temperature), `metrics`, `calibration`, `corruptions`
and `robustness` (accuracy against corruption severity), `photo` (photo-like test images). The report's file
is `common/reports.py`'s."""
