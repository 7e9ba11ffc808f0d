"""Learning, pure: datasets built from plain rows, the λ-mix of the losses, the trainer and the
gate.  No database and no serving here; the task kind supplies what differs between kinds."""
