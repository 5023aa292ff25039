"""The finetune stage: transfer learning on the exported splits, evaluated once on test.

Modules: `backbones` (models, weights, freeze policy), `data` (image tree, transforms),
`training` (the SGD loop), `grid` (every grid point, cached frozen layers), `evaluate`
(metrics, subgroups, figures), `unlearn` (joint learning and unlearning), `pipeline`
(the whole run), `apply` (new images), `stage` (the build's entry); its report section is in tasks/report/.

Only the stage's contract is exposed here.
"""

from tasks.finetune.stage import run

__all__ = ["run"]
