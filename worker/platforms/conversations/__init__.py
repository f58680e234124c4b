"""The seed thread's contract (api-contract.md §1): `profile` (what the settings know of
it) and `client` (the Platform the worker speaks through)."""
