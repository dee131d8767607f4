"""The guides' manual ``config.json`` edit, done safely: point ``auto_map`` at the vendor's Ascend modeling file.

For users who run the vendor's ``modeling_aquila_ascend.py`` / ``modeling_baichuan_ascend.py``
(``trust_remote_code``) instead of converting: ``auto_map.AutoModelForCausalLM`` is set to the
Ascend class, the original ``config.json`` is kept once as ``config.json.bak``, the write is
atomic, and running it again changes nothing.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ascend_nb.files import atomic_write_text
from ascend_nb.convert.kinds import kind_of_config, read_source_config
from ascend_nb.errors import AscendNbError

ASCEND_CLASSES = {"aquila": "modeling_aquila_ascend.AquilaForCausalLM",
                  "baichuan2": "modeling_baichuan_ascend.BaichuanForCausalLM"}
BACKUP_NAME = "config.json.bak"


@dataclass(frozen=True)
class AutoMapPatch:
    """The outcome: the key's previous and new value, whether the file changed, and the backup."""

    key: str
    previous: str | None
    target: str
    changed: bool
    backup: Path


def patch_auto_map(model_dir: Path, target: str | None = None, key: str = "AutoModelForCausalLM") -> AutoMapPatch:
    """Set ``config.json``'s ``auto_map[key]`` to ``target`` (default: the family's Ascend class).

    The module named by ``target`` must be a ``.py`` file in ``model_dir`` already.
    """
    model_dir = Path(model_dir)
    config = read_source_config(model_dir)
    kind = kind_of_config(config)
    if target is None:
        if kind not in ASCEND_CLASSES:
            raise AscendNbError(f"{model_dir} is neither Aquila nor Baichuan2: pass --target MODULE.CLASS")
        target = ASCEND_CLASSES[kind]
    if not re.fullmatch(r"[A-Za-z_]\w*\.[A-Za-z_]\w*", target):
        raise AscendNbError(f"target {target!r} must look like modeling_file_name.ClassName")
    module_file = model_dir / (target.split(".")[0] + ".py")
    if not module_file.is_file():
        raise AscendNbError(f"{module_file.name} is not in {model_dir}: copy the vendor's modeling file there first")
    auto_map = config.setdefault("auto_map", {})
    if not isinstance(auto_map, dict):
        raise AscendNbError(f"auto_map in {model_dir / 'config.json'} is not an object: restore the original config.json")
    previous = auto_map.get(key)
    backup = model_dir / BACKUP_NAME
    if previous == target:
        return AutoMapPatch(key, previous, target, changed=False, backup=backup)
    if not backup.exists():
        shutil.copy2(model_dir / "config.json", backup)
    auto_map[key] = target
    atomic_write_text(model_dir / "config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return AutoMapPatch(key, previous, target, changed=True, backup=backup)
