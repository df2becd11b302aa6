"""Benchmarks: metrics (NME, bins, pose MAE, CED), the AFLW2000-3D folder
(aflw2000), protocols with explicit arguments (protocols), published
numbers, the notebook's analysis and the study's report (study).

The metrics are re-exported here: ``from dasl_jax import evaluation;
evaluation.nme(...)``.
"""
from dasl_jax.evaluation.metrics import *  # noqa: F401,F403
from dasl_jax.evaluation.metrics import (  # noqa: F401
    aflw_pose_angles, aflw_pose_angles_from_params, rotation_from_pose_para)
