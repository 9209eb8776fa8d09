"""Differential privacy: calibration through OpenDP's privacy maps, and the budget ledger."""
