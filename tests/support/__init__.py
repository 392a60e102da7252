"""Helpers shared by the tests: real servers on free ports, and an exact RESP client."""
