"""`tokcomp sweep`: choose a static compression by measuring each candidate on the user's own images with the
VLM's own LLM (agreement with the uncompressed model: teacher-forced top-1, KL, answer match), its cost
(tokens, vision-path latency, LLM prefill saved), the Pareto front and the pick.

Workstation side: it runs the full VLM in PyTorch. Importing this package is cheap (torch and transformers
are imported by the functions that need them).
"""

from __future__ import annotations

from .candidates import Candidate, candidate_grid, parse_candidates
from .choose import Constraint, NoFeasibleCandidate, choose, pareto_front
from .result import SweepConfig, SweepResult
from .run import run_sweep

__all__ = ["Candidate", "Constraint", "NoFeasibleCandidate", "SweepConfig", "SweepResult", "candidate_grid",
           "choose", "pareto_front", "parse_candidates", "run_sweep"]
