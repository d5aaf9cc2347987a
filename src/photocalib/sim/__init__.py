"""A camera and survey simulator with known truth, rendered through GalSim.

Layer 7: the only part of photocalib that imports GalSim; a client of the library, not a part of it.
"""
