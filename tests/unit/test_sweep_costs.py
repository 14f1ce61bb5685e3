"""The plan's GPU-hours (issue 38): the cost model fitted to the project's H200 records
predicts each left-out shape, the shipped grid is costed from measurements and the model (no
run assumed), and a model or record that does not fit the plan is refused or left aside, said."""

from __future__ import annotations

import json

import pytest
from helpers import REPO
from helpers.sweep import plan_for

from leviathan.sweep import cost_records
from leviathan.sweep.cost_model import CostModel, CostModelError, fit

RECORDS = sorted((REPO / "docs" / "gpu").glob("*.json"))
SUITE = REPO / "docs" / "gpu" / "2026-12-04-h200-gpu-suite.json"


@pytest.fixture(scope="module")
def h200():
    return fit(cost_records.read(RECORDS))


def test_each_left_out_shape_of_the_h200_records_is_predicted_within_30_percent(h200):
    """Leave-one-shape-out on the records the project holds (v1/60M real job, v1/421M and
    v2/1.2B bench shapes, eager and compiled): every (size, arm) left out of the fit and
    predicted from the others lands within +-30% of its measured tokens/s."""
    shapes = {(p["shape"], p["arm"]) for p in h200.points}
    assert {("v1/60M", "dense"), ("v1/60M", "leviathan"), ("v1/421M", "factorized"),
            ("v2/1.2B", "dense_untied")} <= shapes and len(h200.points) == 12
    modes = {(p["shape"], p["compile"], p["job"]) for p in h200.points}
    assert {("v1/421M", False, False), ("v1/421M", True, False), ("v1/60M", True, True)} <= modes
    for p in h200.points:
        assert abs(p["left_out_error"]) <= 0.30, p
        assert abs(p["fitted_tokens_per_s"] / p["measured_tokens_per_s"] - 1) <= 0.15, p
    assert h200.loo_error == max(abs(p["left_out_error"]) for p in h200.points) <= 0.30
    # the newest record of a size and settings wins: 421M compiled is the fused-loss run's
    dense421 = next(p for p in h200.points if (p["shape"], p["arm"], p["compile"], p["job"])
                    == ("v1/421M", "dense", True, False))
    assert dense421["measured_tokens_per_s"] == pytest.approx(212651.4, abs=0.1)


def test_the_committed_cost_model_is_the_fit_of_the_committed_records(h200):
    model = CostModel.load(REPO / "sweeps" / "cost_model.json")
    assert model.device == h200.device == "NVIDIA H200"
    assert model.coef == pytest.approx(h200.coef) and model.loo_error == h200.loo_error


def test_the_shipped_isoparametric_grid_is_measured_or_modelled_and_60m_is_the_real_job(
        tmp_path):
    """No run assumed; the v1/60M rows' throughput within 10% of the real job's measured
    tokens/s (today's plan at the assumed MFU 0.4: ten times apart); the dry run's total is a
    range."""
    from leviathan.sweep.plan import format_plan

    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    (sweeps / "cost_model.json").write_text((REPO / "sweeps/cost_model.json").read_text())
    _, plan = plan_for(["+grid=isoparametric", "data.seq_len=512", "grid.power.enabled=false",
                        f"sweep.measured_mfu={SUITE}"], tmp_path)
    df = plan.frame()
    assert set(df.cost_source) <= {"measured", "modelled"}
    job = json.loads(SUITE.read_text())["parts"]["train"]
    for arm in ("dense", "leviathan"):
        rows = df[(df["size"] == "60M") & (df.arm == arm)]
        assert set(rows.cost_source) == {"measured"}
        tps = rows.tokens.sum() / (rows.gpu_hours.sum() * 3600)
        measured = job[arm]["result"]["throughput"]["tokens_per_s"]
        assert abs(tps / measured - 1) <= 0.10, (arm, tps, measured)
    assert set(df[(df["size"] == "60M") & (df.arm == "factorized")].cost_source) == {"modelled"}
    text = format_plan(plan)
    assert "measured" in text and "modelled (the cost model's leave-one-shape-out error" in text
    assert "GPU-hours in all" in text and "assumed" not in text.split("GPU-hours of")[1]


def test_a_cost_model_of_another_device_or_settings_is_refused_naming_the_key(tmp_path):
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    (sweeps / "cost_model.json").write_text((REPO / "sweeps/cost_model.json").read_text())
    base = ["+grid=smoke", "grid.sizes=[smoke/13M]", "grid.power.enabled=false"]
    with pytest.raises(CostModelError, match=r"sweep.cost_model=.* models NVIDIA H200, the plan "
                                             r"is for sweep.device=A100"):
        plan_for([*base, "sweep.device=A100"], tmp_path)
    with pytest.raises(CostModelError, match=r"sweep.cost_model: .* trainer.precision in "
                                             r"\['bf16-mixed'\], the plan runs "
                                             r"trainer.precision=32-true"):
        plan_for([*base, "trainer=gpu", "trainer.precision=32-true"], tmp_path)
    (sweeps / "cost_model.json").write_text('{"format": 1, "coef": {"flops": 1}}')
    with pytest.raises(CostModelError, match=r"sweep.cost_model=.*cost_model.json: not a cost "
                                             r"model of format 1"):
        plan_for(base, tmp_path)


def test_a_record_without_the_plans_shapes_leaves_them_modelled_and_says_so(tmp_path):
    record = tmp_path / "bench.json"  # a bench gpu record of v2/1.2B only
    suite = json.loads(SUITE.read_text())["parts"]["gpu_compiled"]
    record.write_text(json.dumps({"device": "NVIDIA H200", "written_at": "2026-12-05T00:00:00",
                                  "settings": {"shapes": "v2/1.2B", "compile": True,
                                               "micro_batch": 32, "accumulation": 1,
                                               "seq_len": 512, "loss_impl": "chunked"},
                                  "shapes": {"v2/1.2B": suite["shapes"]["v2/1.2B"]}}))
    from leviathan.sweep.plan import format_plan

    _, plan = plan_for(["+grid=isoparametric", "grid.sizes=[v1/60M]", "grid.dense_sizes=[]",
                        "data.seq_len=512", "grid.power.enabled=false",
                        f"sweep.measured_mfu={record}",
                        f"sweep.cost_model={REPO / 'sweeps/cost_model.json'}"], tmp_path)
    assert set(plan.frame().cost_source) == {"modelled"}
    text = format_plan(plan)
    assert "modelled, no measurement of these settings: v1/60M (dense, factorized, leviathan)" \
        in text


def test_costs_from_a_sweep_without_a_finished_run_is_refused_naming_the_key(tmp_path):
    """A pilot that was planned but never ran (no run folder holds its summary) is one line
    naming sweep.costs_from (a missing one: tests/integration/test_sweep_launch.py)."""
    from leviathan.sweep.plan import write_plan

    base = ["+grid=smoke_tiny", "grid.sizes=[smoke_tiny/164K]", "sweep.device=cpu"]
    _, pilot = plan_for([*base, "sweep.name=pilot"], tmp_path)
    write_plan(pilot, tmp_path / "sweeps" / "pilot")
    with pytest.raises(CostModelError, match=r"^sweep.costs_from: sweep 'pilot' has no finished "
                                             r"run with its cost \(none of its 2 planned runs"):
        plan_for([*base, "sweep.costs_from=pilot"], tmp_path)
