"""Report: reports/report.html from the manifest and every stage's reports/<stage>.json.

Only the stage's contract is exposed here; its code is in the modules beside this file.
"""

from tasks.report.stage import run

__all__ = ["run"]
