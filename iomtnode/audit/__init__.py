"""The audit trail of reads of patients' records: an append-only log per node, its Merkle
tree, and the offline check of the log against its anchors on the ledger (docs/privacy.md,
section 6)."""
