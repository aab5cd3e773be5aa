"""Each metric against an independent computation on small arrays (numpy formulas, scikit-image, known points)."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from dagan.errors import InputError, MissingWeightsError
from dagan.evaluation import metrics as M


def _pair(seed=0, b=3, h=24, w=28, noise=0.15):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 3, h, w, generator=g)
    pred = (gt + noise * torch.randn(b, 3, h, w, generator=g)).clamp(0, 1)
    return pred, gt


def _hwc(t, i):
    return t[i].permute(1, 2, 0).double().numpy()


def test_l1_matches_numpy_and_is_zero_for_identical_frames():
    pred, gt = _pair()
    expected = [np.abs(_hwc(pred, i) - _hwc(gt, i)).mean() for i in range(3)]
    np.testing.assert_allclose(M.l1_per_frame(pred, gt).numpy(), expected, rtol=1e-12)
    assert M.l1_per_frame(gt, gt).abs().max().item() == 0.0


def test_psnr_by_formula_and_capped_for_identical_frames():
    pred, gt = _pair(1)
    mse = np.array([((_hwc(pred, i) - _hwc(gt, i)) ** 2).mean() for i in range(3)])
    np.testing.assert_allclose(M.psnr_per_frame(pred, gt).numpy(), 10 * np.log10(1.0 / mse), rtol=1e-10)
    np.testing.assert_allclose(M.psnr_per_frame(pred, gt, data_range=2.0).numpy(), 10 * np.log10(4.0 / mse),
                               rtol=1e-10)
    assert M.psnr_per_frame(gt, gt, max_db=77.0).tolist() == [77.0] * 3


@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_ssim_matches_scikit_image(data_range):
    from skimage.metrics import structural_similarity

    pred, gt = _pair(2, h=33, w=40)
    expected = [structural_similarity(_hwc(pred, i), _hwc(gt, i), channel_axis=-1, data_range=data_range)
                for i in range(3)]
    np.testing.assert_allclose(M.ssim_per_frame(pred, gt, data_range=data_range).numpy(), expected, atol=1e-10)


def test_ssim_identical_is_one_and_data_range_matters():
    pred, gt = _pair(3)
    np.testing.assert_allclose(M.ssim_per_frame(gt, gt).numpy(), 1.0, atol=1e-12)
    assert (M.ssim_per_frame(pred, gt, data_range=2.0) > M.ssim_per_frame(pred, gt, data_range=1.0)).all()
    with pytest.raises(InputError, match="at least 7x7"):
        M.ssim_per_frame(gt[..., :5, :5], gt[..., :5, :5])
    with pytest.raises(InputError, match="same shape"):
        M.ssim_per_frame(gt, gt[:1])


def test_quantize_truncates_like_astype_uint8():
    x = torch.tensor([0.0, 0.9 / 255, 1.99 / 255, 0.5, 1.0]).view(1, 1, 1, 5)
    expected = np.floor(x.numpy() * 255).astype(np.uint8) / 255.0
    np.testing.assert_allclose(M.quantize_8bit(x).numpy(), expected, atol=1e-7)


def test_akd_is_mean_absolute_coordinate_difference_and_skips_missing_faces():
    rng = np.random.default_rng(0)
    gt = [rng.uniform(0, 256, (68, 2)) for _ in range(3)]
    offsets = np.zeros((68, 2))
    offsets[:, 0], offsets[:, 1] = 3.0, -1.0  # |dx| = 3, |dy| = 1 -> mean absolute difference 2
    pred = [gt[0] + offsets, None, gt[2]]
    assert M.akd_per_frame(pred, gt) == pytest.approx([2.0, None, 0.0])
    assert M.akd_per_frame([gt[0]], [None]) == [None]


def test_motion_akd_compares_displacements_from_the_first_frame():
    rng = np.random.default_rng(1)
    g0 = rng.uniform(0, 64, (68, 2))
    p0 = g0 * 0.5 + 10  # another face shape
    move = np.zeros((68, 2))
    move[:, 0] = 4.0
    gt = [g0, g0 + move, None]
    pred = [p0, p0 + move / 2, p0]
    assert M.motion_akd_per_frame(pred, gt, p0, g0) == pytest.approx([0.0, 1.0, None])  # |2 - 4| and 0 -> mean 1
    assert M.motion_akd_per_frame(pred, gt, None, g0) == [None, None, None]


def test_aed_is_squared_distance_of_unit_embeddings_and_csim_is_cosine():
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    b = torch.tensor([[0.0, 5.0], [1.0, 1.0], [-1.0, -1.0]])
    assert M.aed_per_frame(a, b).tolist() == pytest.approx([2.0, 0.0, 4.0])
    src = torch.tensor([[1.0, 0.0]])
    assert M.csim_per_frame(a, src).tolist() == pytest.approx([1.0, 2 ** -0.5, 2 ** -0.5])
    with pytest.raises(InputError):
        M.aed_per_frame(a, b[:, :1])


def test_lpips_wrapper_maps_to_minus_one_one_unless_legacy():
    seen = []

    def fake(x, y):
        seen.append((x.min().item(), x.max().item()))
        return (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)

    pred = torch.zeros(2, 3, 8, 8)
    gt = torch.ones(2, 3, 8, 8)
    assert M.LPIPSMetric(fake)(pred, gt).tolist() == [2.0, 2.0]
    assert seen[-1] == (-1.0, -1.0)
    assert M.LPIPSMetric(fake, legacy_range=True)(pred, gt).tolist() == [1.0, 1.0]
    assert seen[-1] == (0.0, 0.0)


def test_lpips_load_reports_missing_package_or_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "lpips", None)
    with pytest.raises(MissingWeightsError, match="pip install lpips"):
        M.LPIPSMetric.load()
    monkeypatch.setitem(sys.modules, "lpips", types.ModuleType("lpips"))
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth") as err:
        M.LPIPSMetric.load("alex")
    assert str(tmp_path) in str(err.value)


def test_face_alignment_names_missing_weight_files(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "s3fd-619a316812.pth").write_bytes(b"x")
    with pytest.raises(MissingWeightsError) as err:
        M.FaceAlignmentLandmarks("cpu")
    msg = str(err.value)
    assert "2DFAN4-11f355bf06.pth.tar" in msg and "s3fd" not in msg and str(tmp_path) in msg


def test_face_alignment_landmarks_take_the_largest_face(monkeypatch):
    from dagan.faces import Face

    big, small = np.full((68, 2), 5.0), np.full((68, 2), 1.0)
    seen = []

    class FakeDetector:
        def detect(self, image, landmarks=False):
            seen.append((image.dtype, image.shape))
            if image.mean() < 1:
                return []
            return [Face(np.array([0, 0, 30, 30.0]), 0.9, big), Face(np.array([0, 0, 5, 5.0]), 0.9, small)]

    lm = M.FaceAlignmentLandmarks.__new__(M.FaceAlignmentLandmarks)
    lm.detector = FakeDetector()
    frames = torch.stack([torch.full((3, 32, 32), 0.5), torch.zeros(3, 32, 32)])
    out = lm(frames)
    assert out[0] is big and out[1] is None
    assert seen[0] == (np.uint8, (32, 32, 3))


class _TinyEmbedder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_identity_model_loads_offline_and_preprocesses(tmp_path):
    net = _TinyEmbedder().eval()
    path = tmp_path / "id.pt"
    torch.jit.script(net).save(str(path))
    emb = M.FileIdentityEmbedder(path, input_size=16, mean=127.5, std=127.5)
    frames = torch.rand(2, 3, 32, 32)
    x = torch.nn.functional.interpolate(frames, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    expected = net((x * 255 - 127.5) / 127.5)
    torch.testing.assert_close(emb(frames), expected)
    assert len(emb.digest) == 16 and emb.name == "id.pt"


def test_onnx_identity_model_runs_with_onnxruntime(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((3 * 8 * 8, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["emb"])],
        "embedder", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [None, 5])],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "arc.onnx"
    onnx.save(model, str(path))
    emb = M.FileIdentityEmbedder(path)
    assert emb.input_size == 8  # read from the model's input shape
    frames = torch.rand(2, 3, 16, 16)
    x = torch.nn.functional.interpolate(frames, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    expected = ((x.numpy() * 255 - 127.5) / 127.5).reshape(2, -1) @ weight
    np.testing.assert_allclose(emb(frames).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_identity_model_missing_or_unreadable(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found"):
        M.FileIdentityEmbedder(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot load identity model"):
        M.FileIdentityEmbedder(bad)
