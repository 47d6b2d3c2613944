"""Calibration: statistics of what each weight multiplies, collected by running the model on
data (collect.calibrate) and carried inside the program (stats.py) for the calibrated stages."""
from stages.calibration.stats import calibration_info, calibration_stats, has_calibration, with_calibration, without_calibration
from stages.calibration.collect import CalibrationError, calibrate

__all__ = ["calibrate", "calibration_stats", "calibration_info", "has_calibration", "with_calibration", "without_calibration",
           "CalibrationError"]
