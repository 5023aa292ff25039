"""After keep_freed_memory(), a CNN on the CPU reuses freed memory instead of faulting in fresh pages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Three EfficientNet-Lite0 forward passes (16 images, 160 px) after a warm-up: page faults taken.
PROBE = """
import json, resource, sys
sys.path.insert(0, {repo!r})
import timm, torch
from tasks.vision.cpu_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else False
torch.manual_seed(0)
net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
images = torch.randn(16, 3, 160, 160)
with torch.no_grad():
    net(images)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        net(images)
print(json.dumps({{"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_cnn_passes_stop_faulting_in_fresh_pages():
    runs = {mode: json.loads(subprocess.run([sys.executable, "-c", PROBE.format(repo=str(REPO)), mode], check=True,
                                            capture_output=True, text=True).stdout) for mode in ("off", "on")}
    assert runs["on"]["applied"] is True
    assert runs["off"]["faults"] > 20_000  # glibc's default: activations come and go as fresh mmaps
    assert runs["on"]["faults"] < runs["off"]["faults"] / 5, runs
