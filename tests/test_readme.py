"""README's library examples run as written against the current API.

The examples are the ```python blocks of README.md's "## Using the library" section (up to the next "## " heading),
run in order in one namespace, as a reader pasting them into one session would. A block whose fence is directly
preceded by the line `<!-- readme-test: needs QM9 -->` reads the staged QM9 files: it runs only where they are in
MGVAE_DATA_DIR (CI provides them), and the blocks after it are left out too, since they may use its names.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from markers import needs_qm9

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## Using the library"
NEEDS_QM9 = "<!-- readme-test: needs QM9 -->"

# Runs in a fresh interpreter: each block is compiled at its README line, so a traceback names README.md:<line>.
_RUNNER = """
import json, sys
namespace = {"__name__": "__readme__"}
for line, code in json.load(sys.stdin):
  exec(compile("\\n" * (line - 1) + code, "README.md", "exec"), namespace)
"""

def library_blocks() -> list[tuple[int, str, bool]]:
  """(first code line in README.md, code, needs QM9) of each ```python block of the library section, in order."""
  lines = README.read_text(encoding="utf-8").splitlines()
  try:
    start = lines.index(SECTION)
  except ValueError:
    pytest.fail(f"README.md has no {SECTION!r} heading")
  blocks, i = [], start + 1
  while i < len(lines) and not lines[i].startswith("## "):
    if lines[i].strip() == "```python":
      needs = lines[i - 1].strip() == NEEDS_QM9
      end = i + 1
      while end < len(lines) and lines[end].strip() != "```":
        end += 1
      if end == len(lines):
        pytest.fail(f"README.md:{i + 1}: unterminated ```python block")
      blocks.append((i + 2, "\n".join(lines[i + 1:end]) + "\n", needs))
      i = end
    i += 1
  return blocks


def test_library_section_has_the_examples():
  blocks = library_blocks()
  assert len(blocks) >= 4, f"expected the library examples under {SECTION!r}, found {len(blocks)} python blocks"
  assert re.search(r"^import mgvae_jax as mg$", blocks[0][1], re.M), "the first example must import mgvae_jax"
  text = README.read_text(encoding="utf-8")
  for marker in re.finditer(re.escape(NEEDS_QM9), text):  # a marker must sit right on a fence, or it marks nothing
    assert text[marker.end():].startswith("\n```python\n"), f"{NEEDS_QM9} not directly above a ```python fence"


@pytest.mark.heavy
def test_library_examples_run(tmp_path):
  blocks = library_blocks()
  qm9_missing = needs_qm9.args[0]  # the marker's skipif condition
  runnable = []
  for line, code, needs in blocks:
    if needs and qm9_missing:
      break
    runnable.append((line, code))
  env = dict(os.environ)  # conftest's fast-compile XLA flags included
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(runnable), text=True, capture_output=True,
                        env=env, cwd=tmp_path, timeout=900, check=False)
  assert proc.returncode == 0, f"a README example failed:\n{proc.stderr[-6000:]}"
  if len(runnable) < len(blocks):
    pytest.skip(f"ran {len(runnable)} of {len(blocks)} examples; README.md:{blocks[len(runnable)][0]} onwards need "
                "QM9 staged in MGVAE_DATA_DIR")
