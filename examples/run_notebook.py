"""Execute a notebook headless (as CI and papermill do) and print what each cell showed.

    python examples/run_notebook.py notebooks/quickstart.ipynb [--write]

Exits non-zero when a cell fails, so a failed deploy fails the run. ``--write`` stores the
fresh outputs in the notebook (the reference nbval compares against). Headless means no widget
front end, so the kernel draws the text fallback (``OFNOTEBOOK_WIDGETS=off``) unless told.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main(path: str, write: bool = False) -> int:
    os.environ.setdefault("OFNOTEBOOK_WIDGETS", "off")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(path).parent)}})
    try:
        client.execute()
        status = 0
    except CellExecutionError as exc:
        print(f"cell failed:\n{exc}", file=sys.stderr)
        status = 1
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        print(f"--- [{index}] {cell.source.splitlines()[0] if cell.source else ''}")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                print(output["text"], end="")
            elif "data" in output and "text/plain" in output["data"]:
                print(output["data"]["text/plain"])
            elif output.get("output_type") == "error":
                print(f"{output['ename']}: {output['evalue']}")
    if write and status == 0:
        for cell in notebook.cells:
            cell.get("metadata", {}).pop("execution", None)
        nbformat.write(notebook, path)
    return status


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--write"]
    sys.exit(main(args[0] if args else "notebooks/quickstart.ipynb", "--write" in sys.argv))
