"""The cell protocol, once for every framework: phases, heads, metrics, the shift profile."""
