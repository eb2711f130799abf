"""``spp-detect eval``: score detections against a split's ground truth.

Prints the per-class AP table and the mAP; ``--json-out`` also writes them as
``{"metric", "mAP", "ap", "n_images", ...}``. Detections are a folder of devkit
``comp4_det_<split>_<class>.txt`` files or a COCO results ``.json``; without ``--detections``
the run folder's ``detections/<split>.json`` (what ``spp-detect detect`` writes) is used, and
the JSON then defaults to ``RUN/eval/<split>.json``. ``--diagnose`` adds where the detector loses
(:mod:`spp_detect.evaluation.diagnosis`): mAP by object size and the kinds of its top false
positives.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..artifacts.layout import detections_path, eval_path
from .options import dataset_options, overwrite_option, run_option, with_config

METRIC_CHOICES = ("voc07", "voc10", "coco")


@click.command("eval")
@dataset_options()
@click.option(
    "--detections",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="A folder of comp4_det_<split>_<class>.txt files or a COCO results .json. "
    "Default: RUN/detections/<split>.json.",
)
@click.option(
    "--metric",
    type=click.Choice(METRIC_CHOICES),
    default=None,
    help="voc07 (11-point AP), voc10 (area under the precision envelope) or coco "
    "(pycocotools, AP at IoU 0.5:0.95). Default: the pipeline's eval.metric.",
)
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the AP table as JSON here. Default with --run or run-folder detections: "
    "RUN/eval/<split>.json.",
)
@click.option(
    "--diagnose",
    is_flag=True,
    help="Also print mAP by object size and what each class's top detections are (hits, localization "
    "errors, confusions with other classes, background); VOC metrics only.",
)
@click.option(
    "--size-edges",
    default=None,
    help="With --diagnose: size ranges as edges in pixels (square root of the box area), e.g. 0,32,96,inf "
    "(COCO's). Default: the split's terciles.",
)
@run_option
@with_config
@overwrite_option
def eval_cmd(dataset, split, data_root, image_dir, skip_bad, detections, metric, diagnose, size_edges, json_out,
             run_dir, config_path, overrides, overwrite):
    """Evaluate detections on a split: per-class AP table and mAP."""
    from ..artifacts.files import atomic_write_json, check_overwrite
    from ..datasets.stage import open_split
    from ..errors import ConfigError, DataError
    from ..evaluation import evaluate, format_table, read_detections, result_to_json
    from .common import resolve_config

    cfg, run = resolve_config(config_path, overrides, run_dir, skip_bad)
    metric = metric or cfg.eval.metric
    if metric not in METRIC_CHOICES:
        raise ConfigError(f"eval.metric: unknown metric {metric!r}; choose one of {', '.join(METRIC_CHOICES)}")
    split_name = split or cfg.data.test_split
    edges = _size_edges(size_edges) if size_edges is not None else None
    from ..evaluation.voc_ap import VOC_METRICS

    if (diagnose or edges is not None) and metric not in VOC_METRICS:
        raise click.UsageError(f"--diagnose uses VOC's AP (--metric voc07 or voc10), not {metric}; "
                               "coco's APs, APm and APl are in its own summary")
    if edges is not None and not diagnose:
        raise click.UsageError("--size-edges goes with --diagnose")

    from_run = detections is None
    if from_run:
        detections = detections_path(run, split_name)
        if not detections.is_file():
            raise DataError(
                detections,
                "no detections for this split in the run folder; run 'spp-detect detect' first or pass --detections",
                "split",
                split_name,
            )
    if json_out is None and (from_run or run_dir is not None):
        json_out = eval_path(run, split_name)
    if json_out is not None:
        check_overwrite(json_out, overwrite)  # before the work, not after it

    ds = open_split(cfg, dataset, split_name, data_root, image_dir, skip_bad)
    dets = read_detections(detections, ds)
    result = evaluate(ds, dets, metric)
    click.echo(f"{ds.name} {ds.split}: {detections}")
    click.echo(format_table(result))
    if diagnose:
        from ..evaluation.diagnosis import diagnose as run_diagnosis
        from ..evaluation.diagnosis import diagnosis_to_json, format_diagnosis

        found = run_diagnosis(ds, dets, metric, edges)
        click.echo(format_diagnosis(found))
    if json_out is not None:
        doc = result_to_json(result)
        if diagnose:
            doc["diagnosis"] = diagnosis_to_json(found)
        doc.update({"dataset": ds.name, "split": ds.split, "detections": str(detections)})
        if from_run:
            # what 'spp-detect run' compares to decide the eval stage is current
            import json

            from ..artifacts.layout import detections_stamp_path

            stamp_path = detections_stamp_path(run, split_name)
            doc["detections_stamp"] = json.loads(stamp_path.read_text())["stamp"] if stamp_path.is_file() else None
        atomic_write_json(json_out, doc)
        click.echo(f"wrote {json_out}")


def _size_edges(text: str) -> list[float]:
    """``"0,32,96,inf"`` -> increasing edges; a bad list is a usage error naming the value."""
    from ..evaluation.diagnosis import check_edges

    try:
        return check_edges(text.split(","))
    except ValueError as e:
        raise click.BadParameter(f"{text!r}: {e}", param_hint="--size-edges") from None
