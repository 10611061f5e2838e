"""kit.cli: what a script prints when it fails, whatever failed."""
import errno

import pytest

from kit import cli
from kit.errors import KitError


def _exit(main, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        cli.run(main, [])
    return e.value.code, capsys.readouterr().err


def test_a_kit_error_is_one_line(capsys):
    def main(argv):
        raise KitError("data/x.csv: missing column Id")

    assert _exit(main, capsys) == (2, "error: data/x.csv: missing column Id\n")


def test_a_model_package_missing_from_the_light_install_is_one_line(capsys):
    def main(argv):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    code, err = _exit(main, capsys)
    assert code == 2 and err.count("\n") == 1 and "needs torch" in err and "whale-kit[models]" in err


def test_any_other_missing_module_is_a_bug_and_keeps_its_traceback():
    def main(argv):
        raise ModuleNotFoundError("No module named 'nope'", name="nope")

    with pytest.raises(ModuleNotFoundError):
        cli.run(main, [])


def test_a_disk_error_nobody_named_is_one_line(capsys):
    def main(argv):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/train.csv")

    assert _exit(main, capsys) == (2, "error: /data/train.csv: Permission denied\n")
