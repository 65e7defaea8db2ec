"""Pure decisions: (observed state, time) -> (next state, actions).

No kopf, no kubernetes, no I/O.
"""
