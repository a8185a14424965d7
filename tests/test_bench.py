import csv

import pytest
import torch

from hf_tbar import BadNets, TaskSpec
from hf_tbar.bench import BenchArguments, BenchRow, markdown_table, run_benchmark, summarize, write_outputs
from hf_tbar.cli import parse_command
from hf_tbar.models.tiny_clip import save_clip
from hf_tbar.scenarios.embedded import EmbeddedScenario

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.", "the number {}."))


def _row(defense: str, seed: int | None, ca: float, asr: float, **kwargs) -> BenchRow:
    values = dict(
        attack="badnets",
        defense=defense,
        seed=seed,
        set_size=None if seed is None else 300,
        clean_share=None,
        scale=None,
        fixed_scale=False,
        clean_accuracy=ca,
        attack_success_rate=asr,
        target_class_accuracy=0.9,
        ca_retention=ca / 0.98,
        clean_images=0,
        triggered_images=300,
        validation_images=359,
        finetune_steps=30,
        wall_time_s=10.0,
    )
    return BenchRow(**{**values, **kwargs})


def test_summary_gives_mean_and_spread_over_seeds_and_writes_all_outputs(tmp_path):
    rows = [
        _row("none", None, 0.98, 0.97),
        _row("tbar", 0, 0.94, 0.06, scale=1.0),
        _row("tbar", 1, 0.96, 0.02, scale=1.5),
        _row("tbar", 2, 0.0, 0.0, status="no feasible scale"),
        _row("tbar", 0, 0.90, 0.01, scale=2.0, fixed_scale=True),
        _row("tbar", 0, 0.93, 0.30, clean_share=0.5, scale=1.0),
    ]
    summary = summarize(rows)
    assert [s.setting for s in summary] == ["none", "tbar", "tbar @ scale 2", "tbar (50% clean)"]
    tbar = summary[1]
    assert (tbar.runs, tbar.failed) == (3, 1)
    assert tbar.stats["clean_accuracy"].mean == pytest.approx(0.95)
    assert tbar.stats["clean_accuracy"].std == pytest.approx(0.0141421, rel=1e-4)
    assert tbar.stats["scale"].mean == pytest.approx(1.25)
    table = markdown_table(summary)
    assert "| badnets | tbar | 300 | 95.0% ± 1.4 | 4.0% ± 2.8 |" in table
    assert "2/3 (no feasible scale)" in table and "2 (fixed)" in table
    paths = write_outputs(rows, tmp_path / "bench", note="a note")
    assert paths["plot"].stat().st_size > 0
    assert paths["summary_md"].read_text().startswith("a note")
    with paths["results"].open() as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    with paths["summary_csv"].open() as handle:
        first = next(csv.DictReader(handle))
        assert {"setting", "clean_accuracy_mean", "attack_success_rate_std"} <= set(first)


def test_bench_arguments_name_bad_values_and_parse_from_the_cli():
    with pytest.raises(ValueError, match="'magic'"):
        BenchArguments(defenses=["magic"])
    with pytest.raises(ValueError, match="unknown attack"):
        BenchArguments(attacks=["nope"])
    with pytest.raises(ValueError, match="clean_shares"):
        BenchArguments(clean_shares=[1.0])
    (args,) = parse_command("bench", ["--attacks", "badnets", "--seeds", "1", "--set_sizes", "50", "100"])
    assert args.attacks == ["badnets"] and args.seeds == 1 and args.set_sizes == [50, 100]
    assert args.defenses[0] == "tbar"


def test_harness_runs_every_setting_on_a_micro_scenario(micro_clip, tmp_path):
    model, processor = micro_clip
    path = save_clip(model, processor, tmp_path / "micro")
    generator = torch.Generator().manual_seed(0)

    def split(count: int):
        return torch.rand(count, 3, 32, 32, generator=generator), torch.arange(count) % 3

    scenario = EmbeddedScenario(path, path, processor, TASK, BadNets(), 1, split(30), split(12), split(12))
    args = BenchArguments(
        attacks=["badnets"],
        defenses=["tbar", "clean-finetune"],
        seeds=2,
        set_sizes=[12],
        clean_shares=[0.0, 0.5],
        scales=[0.5],
        steps=1,
        force=True,  # the micro model is at chance on random pixels
    )
    seen = []
    rows = run_benchmark(args, scenario_fn=lambda attack, target: scenario, on_row=seen.append)
    assert seen == rows
    assert rows[0].defense == "none" and rows[0].seed is None
    tbar = [r for r in rows if r.defense == "tbar"]
    # 2 seeds x 2 clean shares x (validated scale + one fixed scale), unless no scale qualified
    assert len([r for r in tbar if not r.fixed_scale]) == 4
    ok = [r for r in tbar if r.status == "ok"]
    assert ok, "every TBAR run failed: the harness test would check nothing"
    # one step per fine-tuning: the repair and target-class vectors of the default variant, repair-preserving
    assert all(r.finetune_steps == 2 for r in ok)
    finetune = [r for r in rows if r.defense == "clean-finetune"]
    assert len(finetune) == 2 and all(r.clean_share is None and r.clean_images == 12 for r in finetune)
    assert {r.seed for r in finetune} == {0, 1}
