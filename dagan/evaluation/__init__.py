"""Evaluation: the papers' metrics (:mod:`.metrics`), the protocols (:mod:`.evaluate`) and the report files
(:mod:`.report`). Command line: ``python -m dagan.evaluate``.

Example::

    >>> from dagan import DaGAN
    >>> from dagan.evaluation import EvalSettings, run_evaluation, write_report
    >>> model = DaGAN.from_pretrained("checkpoints/dagan-small")
    >>> report = run_evaluation({"dagan-small": model}, "vox/test", EvalSettings(max_videos=2))
    >>> write_report(report, "report/")
"""
from .evaluate import EvalSettings, MetricSuite, build_metric_suite, run_evaluation
from .metrics import (
    FaceAlignmentLandmarks,
    FileIdentityEmbedder,
    LPIPSMetric,
    aed_per_frame,
    akd_per_frame,
    csim_per_frame,
    l1_per_frame,
    psnr_per_frame,
    ssim_per_frame,
)
from .report import write_report

__all__ = [
    "EvalSettings", "MetricSuite", "build_metric_suite", "run_evaluation", "write_report", "FaceAlignmentLandmarks",
    "FileIdentityEmbedder", "LPIPSMetric", "aed_per_frame", "akd_per_frame", "csim_per_frame", "l1_per_frame",
    "psnr_per_frame", "ssim_per_frame",
]
