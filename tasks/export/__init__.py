"""Export: ImageFolder trees, metadata, the shareable manifest and the dataset card; hydrate rebuilds from a share.

Only the stage's contract is exposed here; its code is in the modules beside this file.
"""

from tasks.export.stage import run

__all__ = ["run"]
