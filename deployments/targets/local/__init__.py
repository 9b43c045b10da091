"""The local target: version servers and gateways as processes on this machine (`driver.py`)."""
