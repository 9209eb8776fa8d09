"""Synthetic extracts: a differentially private synthesizer after MST (OpenDP + mbi) and SDV's
synthesizers, with quality and privacy reports.

Runs inside the TEE enclave: it imports neither Django nor the database, and imports the heavy
libraries (JAX, mbi, SDV, SDMetrics, torch) only inside the functions that use them.
"""

from dataplane.synthesis.accounting import DpBudget, Stage, dp_cost
from dataplane.synthesis.columns import MAX_BINS, SynthColumn, SynthesisError, public_bins
from dataplane.synthesis.extract import Extract, Method, is_differentially_private, synthesize

__all__ = [
    "MAX_BINS",
    "DpBudget",
    "Extract",
    "Method",
    "Stage",
    "SynthColumn",
    "SynthesisError",
    "dp_cost",
    "is_differentially_private",
    "public_bins",
    "synthesize",
]
