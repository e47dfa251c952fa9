"""Red-teaming a route: probe families sent through the pipeline, each attempt judged (book ch. 5).

See :mod:`aiestack.redteam.probes` for the families and :mod:`aiestack.redteam.runner` for how
attempts are judged; ``aiestack redteam ROUTE`` is the command.
"""

from aiestack.redteam.probes import FAMILIES, Probe, Tokens, build_probes
from aiestack.redteam.runner import Attempt, FamilyReport, RedteamReport, detect, run_redteam

__all__ = [
    "FAMILIES",
    "Attempt",
    "FamilyReport",
    "Probe",
    "RedteamReport",
    "Tokens",
    "build_probes",
    "detect",
    "run_redteam",
]
