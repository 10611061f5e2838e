"""What every script shares: one-line errors and exit codes."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from kit.errors import KitError
from kit.io import DISK_ERRORS, disk_error

# what the extras bring: [models] training and export, [local] the matcher; never post-processing, scoring or tuning
MODEL_PACKAGES = frozenset({"torch", "torchvision", "timm", "huggingface_hub", "onnx", "onnxscript", "onnxruntime"})
EXTRA_OF = {name: "models" for name in MODEL_PACKAGES} | {"cv2": "local"}


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Call a script's main; a KitError becomes `error: ...` on stderr and exit status 2."""
    try:
        code = main(argv)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except ModuleNotFoundError as e:  # the light install (no [models] extra) running train or export
        extra = EXTRA_OF.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"error: {sys.argv[0]} needs {e.name}, which the light install leaves out: "
              f"pip install 'whale-kit[{extra}]' (or -e '.[{extra}]' in a checkout)", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a full disk or a refused write the code did not name: still one line

        if e.errno not in DISK_ERRORS:
            raise
        print(f"error: {disk_error(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def parser(description: str, example: str) -> argparse.ArgumentParser:
    """An argument parser whose --help ends with a worked example."""
    return argparse.ArgumentParser(
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
