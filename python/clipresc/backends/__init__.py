"""Backends: each computes the contract for one family of arrays."""
