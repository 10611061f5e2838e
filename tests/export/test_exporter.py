"""The export: contract I/O, a dynamic batch axis, and a parity check that catches a broken graph."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from kit.export import exporter
from kit.export.exporter import OUTPUTS, ParityError, check_parity, export_checked, read_metadata, to_fp16
from kit.export.runtime import OnnxRunner, TorchRunner
from kit.train.model import load_member

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's


@pytest.fixture(scope="module")
def loaded(twin_member):
    model, info = load_member(twin_member)
    x = np.random.default_rng(0).standard_normal((7, 3, *info.input_size)).astype(np.float32)
    return twin_member, model, info, x


def test_contract_io(loaded):
    member, _, info, _ = loaded
    m = onnx.load(str(member / "model.onnx"))
    assert [i.name for i in m.graph.input] == ["image"]
    assert [o.name for o in m.graph.output] == list(OUTPUTS)
    batch_dim = m.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: any batch size
    assert not (member / "model.onnx.data").exists() and not any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)  # one self-contained file
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = read_metadata(member / "model.onnx")
    assert meta["member"]["classes"] == list(info.classes) and meta["member"]["flip_twins"] is True
    # the dynamo exporter ran, not the TorchScript fallback (which an onnxscript too old for the
    # installed torch would trigger silently)
    props = {p.key: p.value for p in m.metadata_props}
    assert props["whale_kit.exporter"] == "dynamo" and "whale_kit.fallback" not in props, props.get("whale_kit.fallback")


@pytest.mark.parametrize("batch", [1, 7])
def test_dynamic_batch_matches_pytorch(loaded, batch):
    member, model, info, x = loaded
    logits, emb = OnnxRunner(member / "model.onnx", "cpu")(x[:batch])
    ref_logits, ref_emb = TorchRunner(model)(x[:batch])
    assert logits.shape == (batch, 2 * len(info.classes)) and emb.shape == (batch, info.embedding_dim)
    assert exporter.relative_error(ref_logits, logits) < 1e-4
    assert exporter.relative_error(ref_emb, emb) < 1e-4


def test_parity_check_fails_on_a_broken_graph(loaded, tmp_path):
    member, model, _, x = loaded
    m = onnx.load(str(member / "model.onnx"))
    # The exporter bug this guards against: one wrong bias. Nudge the classifier's.
    target = max((t for t in m.graph.initializer if len(t.dims) == 1), key=lambda t: "classifier" in t.name)
    w = numpy_helper.to_array(target).copy()
    w += 0.05 * (np.abs(w).max() + 1)
    target.CopyFrom(numpy_helper.from_array(w, target.name))
    onnx.save(m, str(tmp_path / "broken.onnx"))
    parity = check_parity(model, tmp_path / "broken.onnx", x[:3])
    assert not parity.ok and parity.rel_error["logits"] > 1e-4
    assert check_parity(model, member / "model.onnx", x[:3]).ok


def test_failed_parity_leaves_no_file(loaded, tmp_path, monkeypatch):
    member, model, info, x = loaded
    real = exporter.export_onnx

    def export_then_break(model, info, path, **kw):
        used = real(model, info, path, **kw)
        m = onnx.load(str(path))
        for t in m.graph.initializer:  # scale every float weight: a thoroughly wrong graph
            a = numpy_helper.to_array(t)
            if a.dtype == np.float32:
                t.CopyFrom(numpy_helper.from_array(a * np.float32(1.01), t.name))
        onnx.save(m, str(path))
        return used

    monkeypatch.setattr(exporter, "export_onnx", export_then_break)
    out = tmp_path / "model.onnx"
    with pytest.raises(ParityError, match=r"logits: relative \d\.\d+e[-+]\d+.*embedding: relative"):
        export_checked(model, info, out, x[:2])
    assert list(tmp_path.iterdir()) == []  # no model.onnx, no temp file


def test_fp16_conversion_keeps_float32_io(loaded, tmp_path):
    member, model, _, x = loaded
    to_fp16(member / "model.onnx", tmp_path / "half.onnx")
    runner = OnnxRunner(tmp_path / "half.onnx", "cpu")
    logits, emb = runner(x[:2])
    assert logits.dtype == np.float32
    parity = check_parity(model, tmp_path / "half.onnx", x[:2], tolerance=exporter.FP16_TOLERANCE)
    assert parity.ok, parity.summary()


def _exported_like_pytorch(tmp_path, seed: int, **over) -> None:
    """A tiny member with `over`'s recipe keys exported: onnxruntime's logits and embedding are PyTorch's."""
    import torch

    from kit.testing import make_tiny_recipe
    from kit.train.model import build_model, member_info

    recipe = make_tiny_recipe("x", **over)
    torch.manual_seed(0)
    model = build_model(recipe, num_classes=6).eval()
    info = member_info(recipe, [f"w_{i}" for i in range(6)], (0.5,) * 3, (0.25,) * 3, False)
    x = np.random.default_rng(seed).standard_normal((5, 3, *recipe.input.size)).astype(np.float32)
    export_checked(model, info, tmp_path / "model.onnx", x)
    for got, want in zip(OnnxRunner(tmp_path / "model.onnx", "cpu")(x), TorchRunner(model)(x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_subcenter_arcface_exports_with_parity(tmp_path):
    """Sub-center ArcFace's max over sub-centres is in the graph, the batch axis still dynamic."""
    _exported_like_pytorch(tmp_path, 0, head={"type": "arcface", "subcenters": 2, "embedding_dim": 16})


def test_gem_on_two_stages_exports_with_parity(tmp_path):
    """GeM (a learnable p) over the last two stages, concatenated."""
    _exported_like_pytorch(tmp_path, 1, model={"pool": "gem", "pool_stages": 2, "gem_p": 3.5})
