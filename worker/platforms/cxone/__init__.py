"""NICE CXone (api-contract.md §4): `profile` (its settings, read by config) and `client`
(the Platform the worker speaks through)."""
