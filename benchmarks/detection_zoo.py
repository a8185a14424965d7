"""Detection on a zoo of clean and backdoored models, and the automatic path's removal on the real trigger.

The zoo spans three worlds of different image families and training: the embedded digits (32 px, supervised
pretraining of a tiny CLIP), the captioned world (32 px scenes, contrastive pretraining on captions) and the
glyph world (64 px Greek capitals drawn stroke by stroke, supervised pretraining). Every
model is trained by its recipe and cached (hf_tbar's cache, keyed by recipe and code):

- tuning part: digits, pretraining seed 0 (clean, and the 4 attacks toward class 0), and a clean digits model
  of pretraining seed 2;
- held-out part: digits of pretraining seed 1 (clean, and the 4 attacks toward classes 4 and 7: another seed
  and other targets), the captioned world (clean, BadNets, Blended) and the glyph world (clean models of seeds 0
  and 1, the 4 attacks toward class 0 on seed 0).

Each model is judged by every registered detector on 128 clean validation images (with their labels). The
anomaly-index thresholds of the class-conditional detectors are chosen on the tuning part (the lowest threshold
of a grid that flags no tuning clean model, Neural Cleanse's 2 at least) and reported on the held-out part:
AUROC, true-positive rate at that threshold, false-positive rate, share of flagged models whose target class
was found, and seconds per model. A backdoored model counts only when its backdoor implanted (ASR >= 50% with
the real trigger). The chosen thresholds and the rates measured per world are written to
``src/hf_tbar/detection/calibrations.json``: the verdicts of ``hf-tbar scan`` call models of these worlds
calibrated, and no others.

Removal: once every model is judged, for every backdoored model, TBAR runs with the trigger and class of its
verdict judged at the thresholds chosen on the tuning part (the verdict a user of these worlds gets, through
calibrations.json) and the default configuration (``BackdoorUnlearner.unlearn(verdict, ...)``, as
``--trigger auto`` does), and the sanitized model is measured on the test split with the attack's *real*
trigger.

    python benchmarks/detection_zoo.py
    python benchmarks/detection_zoo.py --worlds digits --held_out_seeds --no_removal   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_tbar import BackdoorUnlearner
from hf_tbar.bench import results
from hf_tbar.data import load_embedded_dataset
from hf_tbar.data.pixels import dataset_to_tensors
from hf_tbar.detection import CALIBRATION_FILE, DETECTORS, DetectionConfig, ScanVerdict
from hf_tbar.errors import HfTbarError
from hf_tbar.models.loading import load_model
from hf_tbar.training.backdoor import BackdoorConfig, backdoored_clip_path
from hf_tbar.training.pretrain import PretrainConfig, pretrained_clip_path

ATTACKS = ("badnets", "blended", "wanet", "sig")
IMPLANTED = 0.5  # a backdoored model whose real ASR is below this did not implant: left out of the rates
THRESHOLD_GRID = [2.0 + 0.25 * i for i in range(25)]  # 2 .. 8


@dataclass
class Entry:
    """One model of the zoo."""

    world: str
    part: str  # "tuning" or "held-out"
    seed: int
    attack: str | None  # None: clean
    target: int | None
    path: Path
    task: object
    trigger: object
    splits: dict  # name -> (pixels, labels)
    train_captions: list[str] | None = None

    @property
    def name(self) -> str:
        what = "clean" if self.attack is None else f"{self.attack}->{self.target}"
        return f"{self.world} s{self.seed} {what}"


def world_entry(world: str, part: str, seed: int, attack: str | None, target: int | None) -> Entry:
    """A model of an embedded classification world (``"digits"``, ``"glyphs"``) by its recipes."""
    pretrain = PretrainConfig.for_dataset(world, seed=seed)
    side = pretrain.architecture.image_size
    dataset, task = load_embedded_dataset(world, image_size=side, seed=seed)
    if attack is None:
        path, trigger = pretrained_clip_path(pretrain), None
    else:
        backdoor = BackdoorConfig.for_attack(attack, target=target, dataset=world, seed=seed)
        path, trigger = backdoored_clip_path(backdoor, pretrain), backdoor.trigger()
    _, processor = load_model(path)
    splits = {name: dataset_to_tensors(dataset[name], processor) for name in ("train", "validation", "test")}
    return Entry(pretrain.world, part, seed, attack, target, path, task, trigger, splits)


def captions_entry(part: str, seed: int, attack: str | None) -> Entry:
    from hf_tbar.scenarios.captioned import captioned_scenario
    from hf_tbar.training.captioned_backdoor import CaptionBackdoorConfig

    scenario = captioned_scenario(
        attack or "badnets", backdoor=CaptionBackdoorConfig.for_attack(attack or "badnets")
    )
    path = scenario.clean_path if attack is None else scenario.backdoored_path
    splits = {"train": scenario.train, "validation": scenario.validation, "test": scenario.test}
    trigger = None if attack is None else scenario.trigger
    target = None if attack is None else scenario.target
    return Entry(
        "captions@32",
        part,
        seed,
        attack,
        target,
        path,
        scenario.task,
        trigger,
        splits,
        scenario.train_captions,
    )


def zoo(args: argparse.Namespace) -> list[tuple[str, callable]]:
    """``(part, build)`` of every model of the zoo, in the order they are built and judged."""
    plan = []
    if "digits" in args.worlds:
        for part, seeds, targets in (
            ("tuning", args.tuning_seeds, args.tuning_targets),
            ("held-out", args.held_out_seeds, args.held_out_targets),
        ):
            for seed in seeds:
                plan.append((part, lambda s=seed, p=part: world_entry("digits", p, s, None, None)))
                for attack in args.attacks:
                    for target in targets:
                        plan.append(
                            (
                                part,
                                lambda s=seed, p=part, a=attack, t=target: world_entry("digits", p, s, a, t),
                            )
                        )
        for seed in args.extra_clean_seeds:
            plan.append(("tuning", lambda s=seed: world_entry("digits", "tuning", s, None, None)))
    if "captions" in args.worlds:
        plan.append(("held-out", lambda: captions_entry("held-out", 0, None)))
        for attack in args.caption_attacks:
            plan.append(("held-out", lambda a=attack: captions_entry("held-out", 0, a)))
    if "glyphs" in args.worlds:
        for seed in args.glyph_seeds:
            plan.append(("held-out", lambda s=seed: world_entry("glyphs", "held-out", s, None, None)))
        for attack in args.attacks:
            for target in args.glyph_targets:
                plan.append(
                    ("held-out", lambda a=attack, t=target: world_entry("glyphs", "held-out", 0, a, t))
                )
    return plan


def judge(entry: Entry, config: DetectionConfig) -> tuple[dict, ScanVerdict, BackdoorUnlearner]:
    """Evaluate the model (CA, real ASR) and run every detector on validation images."""
    unlearner = BackdoorUnlearner(entry.path, task=entry.task)
    test = unlearner.evaluate(*entry.splits["test"], entry.trigger, entry.target)
    start = time.perf_counter()
    verdict = unlearner.detect(entry.splits["validation"], config)
    seconds = time.perf_counter() - start
    row = {
        "world": entry.world,
        "part": entry.part,
        "real_trigger_rms": real_trigger_rms(entry),
        "seed": entry.seed,
        "attack": entry.attack,
        "target": entry.target,
        "clean_accuracy": test.clean_accuracy,
        "attack_success_rate": test.attack_success_rate,
        "implanted": entry.attack is None or (test.attack_success_rate or 0) >= IMPLANTED,
        "seconds": seconds,
        "findings": {f.detector: {**f.to_dict(), "margin": f.margin} for f in verdict.findings},
        "verdict": verdict.verdict,
        "winner": None if verdict.winner is None else verdict.winner.detector,
        "found_target": verdict.target,
    }
    return row, verdict, unlearner


def real_trigger_rms(entry: Entry, images: int = 128) -> float | None:
    """RMS in pixel units of what the attack's real trigger adds to clean validation images (``trigger(x) - x``
    over the first ``images``), the measure the class-perturbation detector minimises; ``None`` for a clean
    model."""
    if entry.trigger is None:
        return None
    pixels = entry.splits["validation"][0][:images]
    return float((entry.trigger(pixels).clamp(0, 1) - pixels).pow(2).mean().sqrt())


def size_table(rows: list[dict]) -> str:
    """Per backdoored model: the real trigger's RMS against the smallest universal perturbations the
    class-perturbation inversion found, toward the target class and toward the median class."""
    lines = [
        "| part | world | attack | target | real trigger RMS | inverted RMS toward the target | median over "
        "classes | smallest (class) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        found = r["findings"].get("class-perturbation")
        if r["attack"] is None or found is None or not found.get("per_class"):
            continue
        sizes = {int(k): v for k, v in found["per_class"].items()}
        smallest = min(sizes, key=sizes.get)
        toward = sizes.get(r["target"])
        lines.append(
            f"| {r['part']} | {r['world']} | {r['attack']} | {r['target']} | {r['real_trigger_rms']:.3f} | "
            f"{'-' if toward is None else f'{toward:.3f}'} | {statistics.median(sizes.values()):.3f} | "
            f"{sizes[smallest]:.3f} ({smallest}) |"
        )
    return "\n".join(lines)


def score(row: dict, detector: str) -> float:
    """Higher is more suspicious: the anomaly index, or -PL1 for DECREE (-inf when not computed)."""
    found = row["findings"].get(detector)
    if found is None or found["value"] is None:
        return -math.inf
    return -found["value"] if found["direction"] == "below" else found["value"]


def auroc(positives: list[float], negatives: list[float]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def flagged(row: dict, detector: str, thresholds: dict[str, float]) -> bool:
    """The detector's own flag: a class-conditional index above the threshold chosen on the tuning part, or
    DECREE's PL1 below its threshold (whether or not that threshold counts toward the verdict)."""
    found = row["findings"].get(detector)
    if found is None or found["value"] is None:
        return False
    if detector in thresholds:
        return found["value"] > thresholds[detector]
    return bool(found["flagged"])


def combined(row: dict, thresholds: dict[str, float]) -> bool:
    """The verdict: a flag of a detector that counts (the class-conditional ones; DECREE only where its
    threshold was set by the user, never in this benchmark)."""
    return any(flagged(row, name, thresholds) for name, f in row["findings"].items() if f["counts"])


def choose_thresholds(rows: list[dict], class_detectors: list[str]) -> dict[str, float]:
    """Per class-conditional detector, the lowest grid threshold that flags no clean model of ``rows`` (the
    tuning part) - Neural Cleanse's 2 at least."""
    chosen = {}
    for name in class_detectors:
        clean = [score(r, name) for r in rows if r["attack"] is None]
        chosen[name] = next((t for t in THRESHOLD_GRID if all(s <= t for s in clean)), THRESHOLD_GRID[-1])
    return chosen


def rates(rows: list[dict], decide, target_of=None) -> dict:
    """TPR, FPR, target found among flagged, models counted."""
    backdoored = [r for r in rows if r["attack"] is not None and r["implanted"]]
    clean = [r for r in rows if r["attack"] is None]
    hits = [r for r in backdoored if decide(r)]
    right = [r for r in hits if (target_of(r) if target_of else r["found_target"]) == r["target"]]
    return {
        "tpr": len(hits) / len(backdoored) if backdoored else None,
        "fpr": sum(decide(r) for r in clean) / len(clean) if clean else None,
        "target_found": len(right) / len(hits) if hits else None,
        "backdoored": len(backdoored),
        "clean": len(clean),
    }


def listed(values: list) -> str:
    """``[4, 7]`` as ``4 and 7`` (``0`` for ``[0]``)."""
    words = [str(v) for v in values]
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def detection_table(rows: list[dict], thresholds: dict[str, float]) -> str:
    names = list(DETECTORS)
    lines = [
        "| part | detector | threshold | AUROC | TPR | FPR | target found | backdoored / clean models | s per model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for part in ("tuning", "held-out"):
        subset = [r for r in rows if r["part"] == part]
        if not subset:
            continue
        for name in [*names, "combined"]:
            if name == "combined":
                measured = rates(subset, lambda r: combined(r, thresholds))
                area, threshold = None, "any that counts (the class-conditional ones)"
                seconds = sum(r["seconds"] for r in subset) / len(subset)
            else:
                measured = rates(
                    subset,
                    lambda r, n=name: flagged(r, n, thresholds),
                    lambda r, n=name: r["findings"][n]["target"],
                )
                positives = [score(r, name) for r in subset if r["attack"] is not None and r["implanted"]]
                negatives = [score(r, name) for r in subset if r["attack"] is None]
                area = auroc(positives, negatives)
                threshold = (
                    f"index > {thresholds[name]:g}"
                    if name in thresholds
                    else "PL1 < its default (indicative: not in the verdict)"
                )
                seconds = sum(r["findings"][name]["seconds"] for r in subset) / len(subset)
            lines.append(
                f"| {part} | {name} | {threshold} | {'-' if area is None else f'{area:.2f}'} | {pct(measured['tpr'])} | "
                f"{pct(measured['fpr'])} | {pct(measured['target_found'])} | {measured['backdoored']} / "
                f"{measured['clean']} | {seconds:.0f} |"
            )
    return "\n".join(lines)


def per_attack_table(rows: list[dict], thresholds: dict[str, float]) -> str:
    """The combined verdict per part, world and attack, and on each world's clean models."""
    lines = [
        "| part | world | model | implanted / models | flagged (combined) | target found |",
        "|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(r["part"], r["world"], r["attack"] or "clean") for r in rows},
        key=lambda k: (k[0] != "tuning", k[1], k[2] != "clean", k[2]),
    )
    for part, world, attack in keys:
        subset = [r for r in rows if (r["part"], r["world"], r["attack"] or "clean") == (part, world, attack)]
        if attack == "clean":
            flags = [r for r in subset if combined(r, thresholds)]
            seeds = ", ".join(f"seed {r['seed']}" for r in subset)
            lines.append(f"| {part} | {world} | clean ({seeds}) | - | {len(flags)} / {len(subset)} | - |")
            continue
        implanted = [r for r in subset if r["implanted"]]
        hits = [r for r in implanted if combined(r, thresholds)]
        right = [r for r in hits if r["found_target"] == r["target"]]
        lines.append(
            f"| {part} | {world} | {attack} | {len(implanted)} / {len(subset)} | {len(hits)} / {len(implanted)} | "
            f"{len(right)} / {len(hits)} |"
        )
    return "\n".join(lines)


def recalibrated(verdict: ScanVerdict, thresholds: dict[str, float]) -> ScanVerdict:
    """``verdict`` with each class-conditional finding judged again at the threshold chosen on the tuning part."""
    findings = [
        dataclasses.replace(
            f,
            threshold=thresholds[f.detector],
            threshold_source="self-relative, index threshold chosen on the detection zoo's tuning part",
            flagged=f.value is not None and f.value > thresholds[f.detector],
        )
        if f.detector in thresholds
        else f
        for f in verdict.findings
    ]
    return dataclasses.replace(verdict, findings=findings)


def removal(entry: Entry, verdict: ScanVerdict, unlearner: BackdoorUnlearner) -> dict:
    """TBAR with the verdict's trigger and class (the default configuration), scored with the real trigger."""
    row = {"world": entry.world, "attack": entry.attack, "target": entry.target, "detector": None}
    before = unlearner.evaluate(*entry.splits["test"], entry.trigger, entry.target)
    row["before"] = before
    start = time.perf_counter()
    try:
        clean = entry.splits["train"]
        kwargs = {"clean_captions": entry.train_captions} if entry.train_captions is not None else {}
        result = unlearner.unlearn(verdict, None, clean[0], entry.splits["validation"], entry.splits["test"],
                                   clean_labels=clean[1], **kwargs)  # fmt: skip
    except HfTbarError as err:
        row.update(outcome=type(err).__name__, after=before, seconds=time.perf_counter() - start)
        return row
    after = unlearner.evaluate(*entry.splits["test"], entry.trigger, entry.target, model=result.model)
    row.update(
        outcome="removed",
        detector=verdict.winner.detector,
        found_target=result.target,
        inverted_before=result.before.attack_success_rate,
        inverted_after=result.after.attack_success_rate,
        after=after,
        retention=after.clean_accuracy / before.clean_accuracy,
        scale=result.selection.scale,
        steps=sum(len(v) for v in result.losses.values()),
        seconds=time.perf_counter() - start,
    )
    return row


def removal_table(rows: list[dict]) -> str:
    lines = [
        "| world | attack | target | detector (class found) | ASR of the inverted trigger | real ASR | CA retention | "
        "target-class acc. | met (ASR <= 10%, retention >= 95%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        before, after = r["before"], r["after"]
        if r["outcome"] != "removed":
            lines.append(
                f"| {r['world']} | {r['attack']} | {r['target']} | {r['outcome']} | - | "
                f"{pct(before.attack_success_rate)} (unchanged) | - | - | no |"
            )
            continue
        met = after.attack_success_rate <= 0.10 and r["retention"] >= 0.95
        lines.append(
            f"| {r['world']} | {r['attack']} | {r['target']} | {r['detector']} ({r['found_target']}) | "
            f"{pct(r['inverted_before'])} -> {pct(r['inverted_after'])} | {pct(before.attack_success_rate)} -> "
            f"{pct(after.attack_success_rate)} | {100 * r['retention']:.1f}% | {pct(before.target_class_accuracy)} -> "
            f"{pct(after.target_class_accuracy)} | {'yes' if met else '**no**'} |"
        )
    return "\n".join(lines)


def write_calibrations(rows: list[dict], thresholds: dict[str, float], record) -> None:
    """The thresholds and the rates measured per world, for hf_tbar.detection.calibration."""
    worlds = {}
    for world in sorted({r["world"] for r in rows}):
        subset = [r for r in rows if r["world"] == world]
        entry = {}
        for name in DETECTORS:
            measured = rates(
                subset,
                lambda r, n=name: flagged(r, n, thresholds),
                lambda r, n=name: r["findings"][n]["target"],
            )
            entry[name] = {
                **({"threshold": thresholds[name]} if name in thresholds else {}),
                "true_positive_rate": measured["tpr"],
                "false_positive_rate": measured["fpr"],
                "backdoored_models": measured["backdoored"],
                "clean_models": measured["clean"],
                "parts": sorted({r["part"] for r in subset}),
            }
        worlds[world] = entry
    payload = {
        "source": record.command,
        "results": f"results/{record.name}.json",
        "worlds": worlds,
    }
    CALIBRATION_FILE.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"calibrations: {CALIBRATION_FILE}", flush=True)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--worlds",
        nargs="+",
        default=["digits", "captions", "glyphs"],
        choices=["digits", "captions", "glyphs"],
    )
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument(
        "--tuning_seeds", nargs="*", type=int, default=[0], help="Digits seeds of the tuning part."
    )
    parser.add_argument("--tuning_targets", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--held_out_seeds", nargs="*", type=int, default=[1], help="Digits seeds of the held-out part."
    )
    parser.add_argument("--held_out_targets", nargs="+", type=int, default=[4, 7])
    parser.add_argument(
        "--extra_clean_seeds",
        nargs="*",
        type=int,
        default=[2],
        help="More clean digits models (tuning part).",
    )
    parser.add_argument("--caption_attacks", nargs="*", default=["badnets", "blended"])
    parser.add_argument(
        "--glyph_seeds",
        nargs="*",
        type=int,
        default=[0, 1],
        help="Seeds of the clean glyph models (held-out part); the backdoored ones are of seed 0.",
    )
    parser.add_argument(
        "--glyph_targets", nargs="+", type=int, default=[0], help="Targets in the glyph world."
    )
    parser.add_argument("--detection_images", type=int, default=128)
    parser.add_argument("--no_removal", action="store_true", help="Skip the removal part.")
    parser.add_argument("--no_calibration_file", action="store_true", help="Do not write calibrations.json.")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    return results.add_results_arguments(parser)


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    record = results.start(__file__, parser, args, argv, ignore=("threads", "no_calibration_file"))
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Recalibrate from scratch: the verdicts use the detectors' own defaults, never the calibrations an earlier
    # run wrote (which the zoo is about to replace), so every run is the same.
    config = DetectionConfig(detection_images=args.detection_images, packaged_calibration=False)
    rows, removals, pending = [], [], []
    for part, build in zoo(args):
        entry = build()
        row, verdict, unlearner = judge(entry, config)
        rows.append(row)
        print(
            f"{entry.name} ({part}): CA {pct(row['clean_accuracy'])} ASR {pct(row['attack_success_rate'])} -> "
            f"{row['verdict']} ({row['winner']}, class {row['found_target']}), "
            + ", ".join(
                f"{n} {f['value'] if f['value'] is None else round(f['value'], 4)}"
                for n, f in row["findings"].items()
            )
            + f", {row['seconds']:.0f} s",
            flush=True,
        )
        if not args.no_removal and entry.attack is not None:
            pending.append((build, verdict))
        del entry, unlearner  # the removal rebuilds them from the cache: the zoo's images are not all kept
    class_detectors = [name for name in DETECTORS if name.startswith("class-")]
    thresholds = choose_thresholds([r for r in rows if r["part"] == "tuning"], class_detectors)
    # The removal follows the verdict a user of these worlds gets: the index thresholds chosen on the tuning
    # part (what calibrations.json ships), not the detectors' uncalibrated defaults the models were judged with.
    for build, verdict in pending:
        entry = build()
        unlearner = BackdoorUnlearner(entry.path, task=entry.task)
        removals.append(removal(entry, recalibrated(verdict, thresholds), unlearner))
        print(removal_table(removals[-1:]).splitlines()[-1], flush=True)
    detection = detection_table(rows, thresholds)
    attacks = per_attack_table(rows, thresholds)
    sizes = size_table(rows)
    print(detection, attacks, sizes, sep="\n\n")
    record.table(
        "detection",
        results.table_from_markdown(
            detection,
            notes=f"{args.detection_images} clean validation images per model. Thresholds of the anomaly index "
            f"chosen on the tuning part (digits, pretraining seeds {listed(args.tuning_seeds)} toward classes "
            f"{listed(args.tuning_targets)}, and clean models of seeds {listed(args.extra_clean_seeds)}); the "
            f"held-out part is the digits of seeds {listed(args.held_out_seeds)} toward classes "
            f"{listed(args.held_out_targets)}, the captioned world and the glyph world (64 px, its backdoors of "
            "seed 0, clean models of seeds 0 and 1). TPR over backdoored models whose backdoor implanted (real ASR >= 50%); "
            "FPR over clean models; target found: share of flagged models whose class is the attack's target.",
        ),
    )
    record.table(
        "attacks",
        results.table_from_markdown(
            attacks,
            notes="Combined verdict per attack and world, and on every clean model (a flag is a false positive).",
        ),
    )
    record.table(
        "sizes",
        results.table_from_markdown(
            sizes,
            notes="RMS in [0, 1] pixel units: what the real trigger adds to clean validation images, against the "
            "smallest universal perturbation the class-perturbation inversion found toward the attack's target, "
            "toward the median class and toward the easiest class. A size-based detector can single out a class "
            "only when its trigger is smaller than its peers'.",
        ),
    )
    if removals:
        table = removal_table(removals)
        print(table)
        record.table(
            "removal",
            results.table_from_markdown(
                table,
                notes="TBAR with the trigger and class of the verdict at the thresholds chosen on the tuning part, default configuration (repair-preserving, "
                "fine-tuning until the loss plateaus); real ASR and CA retention on the test split.",
            ),
        )
    record.raw.update(rows=rows, removals=removals, thresholds=thresholds)
    path = record.write()
    if record.canonical and not args.no_calibration_file:
        write_calibrations(rows, thresholds, record)
    del path


if __name__ == "__main__":
    main()
