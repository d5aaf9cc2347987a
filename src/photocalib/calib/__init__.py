"""PhotoCalib: the mapping from instrumental flux to calibrated fluence in nJy.

Layer 4 of photocalib: knows which image kind it takes and splits into Jacobian x fluence-to-fluence mapping.
"""
