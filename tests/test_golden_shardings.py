"""Golden parameter shardings per model x mesh: accidental changes fail here.

Regenerate after an intended change with `UPDATE_GOLDEN=1 pytest tests/test_golden_shardings.py`
and review the diff of tests/golden/.
"""

import json
import os

import pytest

from codereason_jax import gin_utils, partitioning
from codereason_jax.model.abstract import abstract_params

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
CASES = [("pangu_2_6b", (1, 16, 1)), ("pangu_13b", (1, 32, 1)), ("pangu_350m", (2, 2, 2)),
         ("pangu_tiny", (2, 1, 4))]


@pytest.mark.parametrize("model,mesh", CASES, ids=[f"{m}-{'x'.join(map(str, s))}"
                                                    for m, s in CASES])
def test_parameter_shardings_match_golden(model, mesh):
    gin_utils.parse([f"gin/models/{model}.gin"])
    table = partitioning.sharding_table(abstract_params(gin_utils.model_config()), mesh)
    path = os.path.join(GOLDEN, f"shardings_{model}_{'x'.join(map(str, mesh))}.json")
    if os.environ.get("UPDATE_GOLDEN"):
        with open(path, "w") as f:
            json.dump(table, f, indent=1, sort_keys=True)
            f.write("\n")
    with open(path) as f:
        assert table == json.load(f), f"shardings changed; see {path} (UPDATE_GOLDEN=1 to accept)"
