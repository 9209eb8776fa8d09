"""The data plane: what touches rows, with no Django, database or broker. The query language,
bounding and aggregation, noise and its calibration, the approved terms, extract rows and
synthesis, MPC sharing and the party program, and the enclave program. Exactly this package is
the enclave's measured code (cleanroom/attestation/measured.py)."""
