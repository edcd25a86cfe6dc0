"""GPMP2 path planning for unmanned surface vehicles with a spatiotemporal ocean-current factor."""

from importlib.metadata import version as _version

from usv_planner.astar import GridAStar
from usv_planner.currents import (
    CURRENTS,
    CurrentField,
    DoubleGyre,
    FrozenField,
    GriddedField,
    PeninsulaFlow,
    RankineVortex,
    ShearJet,
    UniformCurrent,
    sample_to_grid,
)
from usv_planner.environment import Environment, OccupancyMap, PlanarSDF, signed_distance_field
from usv_planner.gp_current import GPHyperparameters, SpatioTemporalGP
from usv_planner.planner import GPMP2Planner, PlannerConfig, Trajectory
from usv_planner.scenarios import SCENARIOS, make_scenario

__version__ = _version("usv-planner")

__all__ = [
    "CURRENTS",
    "SCENARIOS",
    "CurrentField",
    "DoubleGyre",
    "Environment",
    "FrozenField",
    "GPHyperparameters",
    "GPMP2Planner",
    "GridAStar",
    "GriddedField",
    "OccupancyMap",
    "PeninsulaFlow",
    "PlanarSDF",
    "PlannerConfig",
    "RankineVortex",
    "ShearJet",
    "SpatioTemporalGP",
    "Trajectory",
    "UniformCurrent",
    "__version__",
    "make_scenario",
    "sample_to_grid",
    "signed_distance_field",
]
