"""Photometric calibration fits: single detector against a reference catalog, and multi-epoch joint fits.

Layer 6: monolithic, separated and reference-free model families.
"""
