"""Sky background estimation, always modelled on surface-brightness images (rule 3).

Layer 5 (processing).
"""
