"""Seeded simulators of the operational systems that source-aligned domains read from."""

from mesh_platform.sources.simulation.insurance import SourceLayout, simulate, simulation_summary

__all__ = ["SourceLayout", "simulate", "simulation_summary"]
