"""Tests of the consensus core: votes, evidence, tallies and the state machine."""
