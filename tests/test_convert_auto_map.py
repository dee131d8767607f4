"""patch-auto-map: the guides' config.json edit, with a backup, atomically, idempotent."""

import json
import shutil

import pytest

from ascend_nb.cli import main
from ascend_nb.convert.auto_map import BACKUP_NAME, patch_auto_map
from ascend_nb.errors import AscendNbError
from tests.tiny_checkpoints import make_tiny_aquila


@pytest.fixture(scope="module")
def aquila(tmp_path_factory):
    return make_tiny_aquila(tmp_path_factory.mktemp("aquila") / "src")


@pytest.fixture
def model_dir(aquila, tmp_path):
    directory = shutil.copytree(aquila, tmp_path / "model", ignore=shutil.ignore_patterns("*.bin"))
    (directory / "modeling_aquila_ascend.py").write_text("# the vendor's Ascend modeling file\n")
    return directory


def _auto_map(directory):
    return json.loads((directory / "config.json").read_text())["auto_map"]


def test_patch_sets_the_ascend_class_and_keeps_a_backup(model_dir):
    original = (model_dir / "config.json").read_text()
    patch = patch_auto_map(model_dir)
    assert patch.changed and patch.previous == "modeling_aquila.AquilaForCausalLM"
    assert _auto_map(model_dir)["AutoModelForCausalLM"] == "modeling_aquila_ascend.AquilaForCausalLM"
    assert _auto_map(model_dir)["AutoConfig"] == "configuration_aquila.AquilaConfig"
    assert (model_dir / BACKUP_NAME).read_text() == original
    again = patch_auto_map(model_dir)
    assert not again.changed and (model_dir / BACKUP_NAME).read_text() == original
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".")) == []


def test_cli(model_dir, capsys):
    assert main(["convert", "patch-auto-map", str(model_dir)]) == 0
    assert "-> modeling_aquila_ascend.AquilaForCausalLM" in capsys.readouterr().out
    assert main(["convert", "patch-auto-map", str(model_dir)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_missing_modeling_file_changes_nothing(model_dir):
    (model_dir / "modeling_aquila_ascend.py").unlink()
    before = (model_dir / "config.json").read_text()
    with pytest.raises(AscendNbError, match="modeling_aquila_ascend.py is not in .*copy the vendor's modeling file"):
        patch_auto_map(model_dir)
    assert (model_dir / "config.json").read_text() == before and not (model_dir / BACKUP_NAME).exists()


def test_custom_target_and_bad_targets(model_dir):
    (model_dir / "my_modeling.py").write_text("")
    assert patch_auto_map(model_dir, target="my_modeling.MyModel").target == "my_modeling.MyModel"
    with pytest.raises(AscendNbError, match="must look like"):
        patch_auto_map(model_dir, target="not a class")
