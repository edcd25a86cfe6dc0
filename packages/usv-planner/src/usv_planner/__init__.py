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
from usv_planner.free_time import ArrivalSearch, plan_free_arrival
from usv_planner.geometry import ObstacleShapes
from usv_planner.global_search import homotopy_paths
from usv_planner.gp_current import (
    DivergenceFreeGP,
    GPHyperparameters,
    SparseSpatioTemporalGP,
    SpatioTemporalGP,
)
from usv_planner.planner import GPMP2Planner, PlannerConfig, Trajectory
from usv_planner.scenarios import SCENARIOS, generated_scenario, make_scenario

__version__ = _version("usv-planner")

__all__ = [
    "CURRENTS",
    "SCENARIOS",
    "ArrivalSearch",
    "CurrentField",
    "DivergenceFreeGP",
    "DoubleGyre",
    "Environment",
    "FrozenField",
    "GPHyperparameters",
    "GPMP2Planner",
    "GridAStar",
    "GriddedField",
    "ObstacleShapes",
    "OccupancyMap",
    "PeninsulaFlow",
    "PlanarSDF",
    "PlannerConfig",
    "RankineVortex",
    "ShearJet",
    "SparseSpatioTemporalGP",
    "SpatioTemporalGP",
    "Trajectory",
    "UniformCurrent",
    "__version__",
    "generated_scenario",
    "homotopy_paths",
    "make_scenario",
    "plan_free_arrival",
    "sample_to_grid",
    "signed_distance_field",
]
