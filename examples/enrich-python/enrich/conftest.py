# Lets the tests `import wasmpipe`: the SDK that `wasmpipe build` keeps up
# to date in .wasmpipe/, else (before a first build) a wasmpipe checkout's.
import pathlib
import sys

here = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(here / ".wasmpipe"))
if not (here / ".wasmpipe" / "wasmpipe.py").is_file():
    for up in here.parents:
        if (up / "plugin-sdk" / "python" / "wasmpipe.py").is_file():
            sys.path.insert(0, str(up / "plugin-sdk" / "python"))
            break
