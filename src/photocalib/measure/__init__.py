"""Detection, centroids and aperture photometry on fluence images (rule 1).

Layer 5 (processing).
"""
