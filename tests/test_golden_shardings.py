"""Golden parameter shardings per model x mesh: accidental changes fail here.

Regenerate after an intended change with `UPDATE_GOLDEN=1 pytest tests/test_golden_shardings.py`
and review the diff of tests/golden/. With UPDATE_GOLDEN set, a file that differed is rewritten
and its test still fails (naming the changed parameters), so an update is never a silent pass;
rerun without UPDATE_GOLDEN once the diff is reviewed.
"""

import json
import math
import os

import flax.linen as nn
import jax
import pytest

from codereason_jax import gin_utils, partitioning
from codereason_jax.model.abstract import abstract_params, param_table

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
CASES = [("pangu_2_6b", (1, 16, 1)), ("pangu_13b", (1, 32, 1)), ("pangu_350m", (2, 2, 2)),
         ("pangu_tiny", (2, 1, 4))]
IDS = [f"{m}-{'x'.join(map(str, s))}" for m, s in CASES]


def _path(model, mesh):
    return os.path.join(GOLDEN, f"shardings_{model}_{'x'.join(map(str, mesh))}.json")


def _table(model, mesh, rules=partitioning.DEFAULT_RULES):
    gin_utils.parse([f"gin/models/{model}.gin"])
    return partitioning.sharding_table(abstract_params(gin_utils.model_config()), mesh, rules)


def _changed(table, golden):
    return sorted(k for k in set(table) | set(golden) if table.get(k) != golden.get(k))


def check_against_golden(table, path, update):
    """Compare ``table`` with the golden file; with ``update``, rewrite a differing file and
    fail all the same."""
    with open(path) as f:
        golden = json.load(f)
    changed = _changed(table, golden)
    if not changed:
        return
    if update:
        with open(path, "w") as f:
            json.dump(table, f, indent=1, sort_keys=True)
            f.write("\n")
        pytest.fail(f"UPDATE_GOLDEN: rewrote {path} ({len(changed)} parameters changed, e.g. "
                    f"{changed[:3]}); review the diff and rerun without UPDATE_GOLDEN.")
    pytest.fail(f"shardings changed for {len(changed)} parameters (e.g. {changed[:3]}); see "
                f"{path} (UPDATE_GOLDEN=1 rewrites it for review).")


@pytest.mark.parametrize("model,mesh", CASES, ids=IDS)
def test_parameter_shardings_match_golden(model, mesh):
    check_against_golden(_table(model, mesh), _path(model, mesh),
                         bool(os.environ.get("UPDATE_GOLDEN")))


@pytest.mark.parametrize("model,mesh", CASES, ids=IDS)
def test_golden_per_device_shapes_tile_the_full_shapes(model, mesh):
    """Independently of the rules: each golden entry names every parameter of the model, and
    its per-device shape times the sizes of the mesh axes its spec names is the full shape."""
    with open(_path(model, mesh)) as f:
        golden = json.load(f)
    gin_utils.parse([f"gin/models/{model}.gin"])
    shapes = {row.name: row.shape for row in param_table(gin_utils.model_config())}
    assert sorted(golden) == sorted(shapes)
    sizes = dict(zip(partitioning.MESH_AXES, mesh))
    sharded = 0
    for name, entry in golden.items():
        full = []
        for shard, axes in zip(entry["shard_shape"], entry["spec"] + [None] * len(shapes[name])):
            names = [] if axes is None else [axes] if isinstance(axes, str) else axes
            full.append(shard * math.prod(sizes[a] for a in names))
        assert tuple(full) == tuple(shapes[name]), name
        sharded += entry["shard_shape"] != list(shapes[name])
    assert sharded > len(golden) // 2  # most parameters really are split over the mesh


def test_the_training_shardings_are_the_golden_ones():
    """The golden files are made by sharding_table; training shards through
    partitioning.param_shardings on a real mesh. On 8 devices both must give the golden
    per-device shape of every pangu_tiny parameter, or the files pin the wrong thing."""
    model, mesh = "pangu_tiny", (2, 1, 4)
    with open(_path(model, mesh)) as f:
        golden = json.load(f)
    gin_utils.parse([f"gin/models/{model}.gin"])
    boxed = abstract_params(gin_utils.model_config())
    shardings = partitioning.param_shardings(boxed, partitioning.make_mesh(mesh),
                                             partitioning.DEFAULT_RULES)
    flat = jax.tree_util.tree_flatten_with_path(
        boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    real = {"/".join(str(getattr(k, "key", k)) for k in path): list(sharding.shard_shape(
        box.value.shape)) for (path, box), sharding in zip(flat, jax.tree.leaves(shardings))}
    assert real == {name: entry["shard_shape"] for name, entry in golden.items()}


def test_a_changed_rule_fails_and_update_mode_rewrites_then_fails(tmp_path):
    """The check has power, and UPDATE_GOLDEN never passes silently: a table made with 'mlp'
    left unsharded differs from the golden file; in update mode the copy is rewritten to the
    new table and the test still fails; a second update run finds nothing changed."""
    model, mesh = "pangu_tiny", (2, 1, 4)
    rules = tuple((name, None if name == "mlp" else axes)
                  for name, axes in partitioning.DEFAULT_RULES)
    changed = _table(model, mesh, rules)
    copy = tmp_path / "golden.json"
    copy.write_text(open(_path(model, mesh)).read())
    with pytest.raises(pytest.fail.Exception, match=r"shardings changed for \d+ parameters"):
        check_against_golden(changed, str(copy), update=False)
    with pytest.raises(pytest.fail.Exception, match="UPDATE_GOLDEN: rewrote"):
        check_against_golden(changed, str(copy), update=True)
    assert json.loads(copy.read_text()) == changed
    check_against_golden(changed, str(copy), update=True)  # now equal: nothing to rewrite
    check_against_golden(_table(model, mesh), _path(model, mesh), update=False)
