"""Fluence-conserving warps and coadds (rule 2).

Layer 5 (processing).
"""
