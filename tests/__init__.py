"""Tests for Stash."""
