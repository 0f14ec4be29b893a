"""Tests of the pure core state machines."""
