"""The photocalib pipeline: steps, on-disk layout, Dask execution and the HTML report.

Layer 8.
"""
