import subprocess
import sys

from grin_ui.cli import main


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "grin_ui.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("serve", "run", "report", "teach"):
        assert cmd in out.stdout


def test_bad_input_exits_2_with_one_line(capsys):
    code = main(["serve", "--model", "nobody-xyz/no-such-model", "--port", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "hub cannot be reached" in err
