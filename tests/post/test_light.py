"""House rule: post-processing, tuning and the report never import torch or timm (they start fast, install light)."""
import subprocess
import sys


def test_post_tune_report_do_not_import_torch():
    code = ("import sys, kit.post.pipeline, kit.data.phash, kit.tune.study, kit.report.html, kit.predset; "
            "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
