"""The four jurisdictions and their sites every deployment starts with (cleanroom/residency.py).

Operators change transfer rules and sites in the admin; these are conservative starting points.
Used by the data migration, and by tests that empty the database between tests.
"""

JURISDICTIONS = {
    # code: (name, legal framework, rows processed by workers in, rows processed in attested
    #        enclaves in, secret shares may go to, outputs may go to)
    "EU": (
        "European Union",
        "GDPR (Regulation (EU) 2016/679)",
        ["EU"],
        ["EU", "CH", "UK"],
        ["EU", "CH", "UK"],
        ["EU", "CH", "UK", "US"],
    ),
    "CH": (
        "Switzerland",
        "Federal Act on Data Protection (revFADP)",
        ["CH"],
        ["CH", "EU", "UK"],
        ["CH", "EU", "UK"],
        ["CH", "EU", "UK", "US"],
    ),
    "UK": (
        "United Kingdom",
        "UK GDPR and Data Protection Act 2018",
        ["UK"],
        ["UK", "EU", "CH"],
        ["UK", "EU", "CH"],
        ["UK", "EU", "CH", "US"],
    ),
    "US": (
        "United States",
        "HIPAA, GLBA and state privacy laws",
        ["US"],
        ["US"],
        ["US"],
        ["US", "EU", "UK", "CH"],
    ),
}

SITES = [
    ("eu-frankfurt", "EU", "worker", "Data-plane worker, Frankfurt"),
    ("eu-frankfurt-tee", "EU", "tee", "Confidential computing host, Frankfurt"),
    ("eu-paris-mpc", "EU", "mpc-party", "MPC compute party, Paris"),
    ("ch-zurich", "CH", "worker", "Data-plane worker, Zurich"),
    ("ch-zurich-tee", "CH", "tee", "Confidential computing host, Zurich"),
    ("ch-geneva-mpc", "CH", "mpc-party", "MPC compute party, Geneva"),
    ("uk-london", "UK", "worker", "Data-plane worker, London"),
    ("uk-london-tee", "UK", "tee", "Confidential computing host, London"),
    ("uk-manchester-mpc", "UK", "mpc-party", "MPC compute party, Manchester"),
    ("us-virginia", "US", "worker", "Data-plane worker, Virginia"),
    ("us-virginia-tee", "US", "tee", "Confidential computing host, Virginia"),
    ("us-ohio-mpc", "US", "mpc-party", "MPC compute party, Ohio"),
]


def seed_jurisdictions_and_sites(apps) -> None:
    Jurisdiction = apps.get_model("parties", "Jurisdiction")
    Site = apps.get_model("parties", "Site")
    by_code = {
        code: Jurisdiction.objects.create(code=code, name=name, legal_framework=framework)
        for code, (name, framework, *_rules) in JURISDICTIONS.items()
    }
    for code, (_name, _framework, raw, enclave, shares, outputs) in JURISDICTIONS.items():
        jurisdiction = by_code[code]
        jurisdiction.raw_processing_in.set([by_code[c] for c in raw])
        jurisdiction.enclave_processing_in.set([by_code[c] for c in enclave])
        jurisdiction.shares_may_go_to.set([by_code[c] for c in shares])
        jurisdiction.outputs_may_go_to.set([by_code[c] for c in outputs])
    for name, code, kind, description in SITES:
        Site.objects.create(
            name=name, jurisdiction=by_code[code], kind=kind, description=description
        )
