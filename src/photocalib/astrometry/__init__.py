"""World coordinate systems with exact Jacobians: SkyWcs, pixel areas, tangent planes.

Layer 2 of photocalib: imports fields, never anything above.
"""
