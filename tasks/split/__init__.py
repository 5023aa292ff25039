"""Split: leak-free, stratified train/val/test (assign.py) and the recipe's variants (variants.py).

Only the stage's contract is exposed here; its code is in the modules beside this file.
"""

from tasks.split.stage import run

__all__ = ["run"]
