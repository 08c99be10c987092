"""Beam wiring: each pipeline composes the stages of ``mining`` into a job."""
