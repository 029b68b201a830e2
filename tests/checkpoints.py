"""Moved to ``engine.demo``; kept as an alias for older imports."""
from engine.demo import *  # noqa: F401,F403
from engine.demo import CONFIGS, make_tiny_checkpoint  # noqa: F401
