"""Name ``--include`` when a deployed function misses a file it opens by a relative path.

The function runs in its package's files folder (``FILES_DIR``) on every target, which holds
only what ``--include`` packaged; the notebook's folder is not there. A ``FileNotFoundError``
for a relative path, or Jinja's ``TemplateNotFound`` (Flask's ``render_template``), is then
almost always a file that was not included, so the error says so with the fix.
"""

from __future__ import annotations

import os


def missing_file_hint(exc: BaseException) -> str:
    """The fix for ``exc`` when it is a relative file the package lacks, else ``""``."""
    if isinstance(exc, FileNotFoundError) and exc.filename and not os.path.isabs(
            os.fsdecode(exc.filename)):
        name = os.fsdecode(exc.filename)
    elif type(exc).__name__ == "TemplateNotFound" and getattr(exc, "name", None):
        name = f"templates/{exc.name}"  # type: ignore[attr-defined]
    else:
        return ""
    return (f"{name!r} is not in the deployed package: a deployed function runs in a folder "
            f"holding only the files given with --include; add --include {name} (or its "
            f"folder) to the %%function line, or include=[...] to deploy().")
