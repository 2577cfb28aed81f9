"""Every tutorial runs top to bottom (papermill, SMOKE=True: tiny offline models and data)."""

from pathlib import Path

import nbformat
import papermill
import pytest

TUTORIALS = sorted((Path(__file__).parents[2] / "tutorials").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_tutorials():
    assert TUTORIALS, "no tutorials found"


@pytest.mark.parametrize("notebook", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_executes(notebook, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nb = nbformat.read(notebook, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "google.colab" in first_code.source, "the first code cell must be the Colab install cell"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged, "the notebook needs a cell tagged 'parameters' (papermill) with SMOKE"
    out = tmp_path / notebook.name
    papermill.execute_notebook(
        str(notebook), str(out), parameters={"SMOKE": True}, kernel_name="python3",
        cwd=str(tmp_path), progress_bar=False, execution_timeout=600,
    )
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
