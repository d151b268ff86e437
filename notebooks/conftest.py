"""nbval runs the tutorials headless, as nbconvert and papermill do: no widget front end, so the
text fallback (``OFNOTEBOOK_WIDGETS=off``) is what gets compared. The widget path runs in a
real JupyterLab in tests/browser."""

import os

os.environ["OFNOTEBOOK_WIDGETS"] = "off"
# The tutorials' last cell is an optional clean-up that Run All in JupyterLab skips (the views
# stay live); under nbval it runs, so the run stops what it started.
os.environ["TUTORIAL_CLEANUP"] = "1"
