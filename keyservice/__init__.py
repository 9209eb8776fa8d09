"""An organisation's own key service: a separate program the organisation runs, in its own
jurisdiction, holding its key-encryption keys in a PKCS#11 token (SoftHSM2 in the embedded
default and the tests; an HSM or a cloud KMS behind the same interface in production).

It wraps new data keys for its organisation's datasets and releases a data key only to an
attested enclave, deciding that itself (`release.py`): the document verifies against its own
trust roots and allow-list, binds the job and the approved query's digest, its organisation
signed that digest, residency allows the enclave's site for the dataset, and it never released
this key for this job before. The key leaves sealed to the enclave's ephemeral key; the host
relays ciphertext it cannot open. There is no plain unwrap in its API.

No Django and no app: it imports only the kernel (attestation, sealing, residency, canonical
JSON).
"""
