"""Progress in a log: lines, never carriage-return frames; a live bar only on a terminal."""
import io

from kit.progress import LineProgress, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_lines_not_frames():
    out = io.StringIO()
    bar = progress(100, "epoch 1", "step", file=out, every=0.0)
    assert isinstance(bar, LineProgress)
    for _ in range(100):
        bar.update()
    bar.set_postfix(loss="0.5")
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and text.count("\n") == 101
    assert text.splitlines()[-1].startswith("epoch 1: 100/100 step (") and text.endswith("loss=0.5\n")


def test_a_line_every_few_seconds_at_most_and_one_at_the_end():
    out = io.StringIO()
    with progress(1000, "caching crops", "img", file=out, every=3600) as bar:
        for _ in range(1000):
            bar.update()
    assert out.getvalue().count("\n") == 1 and "1,000/1,000 img" in out.getvalue()


def test_a_terminal_gets_the_live_bar_and_disabled_gets_nothing():
    from tqdm import tqdm

    bar = progress(10, "x", file=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    out = io.StringIO()
    off = progress(10, "x", file=out, enabled=False)
    off.update(3)
    off.close()
    assert out.getvalue() == ""
