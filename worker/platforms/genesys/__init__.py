"""Genesys Cloud (api-contract.md §2): `profile` (its settings, read by config) and
`client` (the Platform the worker speaks through)."""
