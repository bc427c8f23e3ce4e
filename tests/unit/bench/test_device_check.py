"""bench/device_check.py runs on the CPU (quick), and refuses a missing or silently unused GPU with a clear exit."""

import json

import pytest
import torch

from bench import device_check


def test_the_quick_check_runs_on_the_cpu_and_writes_its_figures(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert device_check.main(["--device", "cpu", "--quick", "--output", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and figures["dtype"] == "float32" and figures["quick"]
    assert figures["finetune_precision"] == "cpu (float32)"  # ranking.finetune.training's steps, not a copy
    assert figures["embed_images"] == 8 and figures["embed_images_per_s"] > 0
    # 128 pairs in steps of 16; an epoch that did not fit its time budget says it was extrapolated.
    assert figures["finetune_steps_per_epoch"] == 8
    assert figures["finetune_extrapolated"] == (figures["finetune_steps_timed"] < 8)
    assert figures["finetune_s_per_epoch"] >= figures["finetune_train_s_per_epoch"] > 0
    assert "images/s" in capsys.readouterr().out


def test_a_cuda_request_without_cuda_exits_non_zero_with_the_reason(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_check.main(["--device", "cuda", "--quick"]) == 2
    error = capsys.readouterr().err
    assert "--device cuda: LOUPE_DEVICE=cuda, but torch sees no CUDA device" in error and "bin/setup --cuda" in error


def test_work_left_on_the_cpu_counts_as_a_fall_back():
    with pytest.raises(device_check.FellBack, match="fell back"):
        device_check.require_on(torch.device("cuda"), "the image vectors", torch.zeros(2))
    device_check.require_on(torch.device("cpu"), "the image vectors", torch.zeros(2))


def test_a_fall_back_is_exit_3(monkeypatch, capsys):
    def on_the_cpu(args):
        device_check.require_on(torch.device("cuda"), "the image tower's weights", torch.zeros(1))

    monkeypatch.setattr(device_check, "run_check", on_the_cpu)
    assert device_check.main(["--device", "cpu", "--quick"]) == 3
    assert "FAILED" in capsys.readouterr().err
