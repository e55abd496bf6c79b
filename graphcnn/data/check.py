"""``graphcnn data``: read a dataset exactly as training would, and report on it.

:func:`check_data` loads the data with :func:`~graphcnn.data.sources.load_dataset` (the
same walk, scan and split as ``graphcnn train``) and keeps the dataset or the
:class:`~graphcnn.data.dataset.DataError` that lists every problem; :func:`report_text` is
the report (source, classes with counts and imbalance, image sizes and modes, every bad or
converted file with its reason, split sizes, the verdict), and :func:`sample_grid` a PNG
grid of samples, a row per class, as the model sees them.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from graphcnn.config import Config
from graphcnn.data import scan
from graphcnn.data.dataset import MIN_EVALUATION_IMAGES, DataError, Dataset, Split, accuracy_margin, message_lines
from graphcnn.data.sources import detect_source, load_dataset
from graphcnn.terminal import columns, ljust

IMBALANCE_RATIO = 3.0  # largest / smallest class above this is flagged
SAMPLE_SIDE = 128  # tiles of larger model inputs are shown scaled down to this many px


@dataclass(frozen=True)
class DataCheck:
    """What :func:`check_data` found: the dataset, or the error listing every problem."""

    config: Config
    source: str  # the source that reads the data ("" when even that could not be told)
    dataset: Dataset | None
    error: DataError | None  # None: the data can train


def check_data(config: Config) -> DataCheck:
    """Load ``config.data`` as training would (warnings are not logged: the report holds them)."""
    cfg = config.data
    try:
        source = cfg.source if cfg.source != "auto" else detect_source(cfg.path)
    except DataError:
        source = ""
    try:
        dataset = load_dataset(cfg, config.model.channels, log_warnings=False)
    except DataError as err:
        return DataCheck(config, source, None, err)
    return DataCheck(config, source, dataset, None)


# --------------------------------------------------------------------------- the report


def report_text(check: DataCheck, every_file: bool = True) -> str:
    """The data report: what ``graphcnn data`` writes to ``data_report.txt`` and prints
    (with ``every_file=False``: the RGB <-> gray conversion, a choice of the model rather
    than something wrong with a file, is then summed up, not listed file by file)."""
    config, ds, err = check.config, check.dataset, check.error
    cfg, m = config.data, config.model
    lines = ["graphcnn data report", ""]
    origin = ("data.source" if cfg.source != "auto" else "detected from the path" if cfg.path
              else "no data.path: the embedded digits")
    where = ds.name if ds is not None else (cfg.path or "the embedded digits")
    lines.append(f"data: {where}")
    lines.append(f"source: {check.source or 'unknown'} ({origin})")
    lines.append(f"model input: {m.input_width}x{m.input_height} {'RGB' if m.channels == 3 else 'gray'} "
                 f"(width x height; preset {config.preset}): every image is resized and converted to it")
    lines.append("")
    warnings = ds.warnings if ds is not None else (err.warnings if err is not None else ())
    info = ds.scan if ds is not None else (err.scan if err is not None else None)
    lines += _class_section(ds, err)
    lines += _image_section(ds, info)
    lines += _split_section(ds, cfg)
    lines += _warning_section(warnings, info, m.channels, every_file)
    if err is None:
        lines.append("verdict: the data can train" + (f" ({len(warnings)} warning(s) above)" if warnings else ""))
    else:
        lines.append(f"verdict: the data cannot train: {len(err.errors)} problem(s)")
        for problem in err.errors:
            lines += message_lines(problem, "  ")
    return "\n".join(lines) + "\n"


def _class_section(ds: Dataset | None, err: DataError | None) -> list[str]:
    if ds is not None:
        k = len(ds.class_names)
        per_split = [np.bincount(s.labels, minlength=k) for s in (ds.train, ds.validation, ds.test)]
        counts = dict(zip(ds.class_names, (sum(c[i] for c in per_split) for i in range(k))))
    elif err is not None and err.class_counts:
        per_split, counts = None, err.class_counts
    else:
        return []
    width = max(5, *(columns(n) for n in counts))
    lines = [f"classes: {len(counts)}"]
    if per_split is not None:
        lines.append(f"  {'class':<{width}}  {'images':>7}  {'train':>7}  {'validation':>10}  {'test':>7}")
        for i, (name, n) in enumerate(counts.items()):
            lines.append(f"  {ljust(name, width)}  {n:7d}  {per_split[0][i]:7d}  {per_split[1][i]:10d}  "
                         f"{per_split[2][i]:7d}")
    else:
        lines.append(f"  {'class':<{width}}  readable images")
        lines += [f"  {ljust(name, width)}  {n:7d}" for name, n in counts.items()]
    nonzero = {n: c for n, c in counts.items() if c > 0}
    if len(nonzero) >= 2:
        big = max(nonzero, key=nonzero.get)
        small = min(nonzero, key=nonzero.get)
        ratio = nonzero[big] / nonzero[small]
        if ratio > IMBALANCE_RATIO:
            lines.append(f"  imbalanced: the largest class ({big}, {nonzero[big]} images) has {ratio:.1f}x the images "
                         f"of the smallest ({small}, {nonzero[small]}), more than {IMBALANCE_RATIO:g}x: accuracy "
                         "favours the large classes; look at per-class recall (graphcnn evaluate), or balance them")
    return lines + [""]


def _image_section(ds: Dataset | None, info: scan.ScanResult | None) -> list[str]:
    if info is not None:
        images = info.images
        lines = [f"images: {len(images) + len(info.bad)} files, {len(images)} readable, {len(info.bad)} cannot be "
                 "decoded (from the scan that decodes every file)"]
        if images:
            sizes = Counter((i.width, i.height) for i in images.values())
            shown = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sizes.most_common(10))
            more = f", and {len(sizes) - 10} other sizes" if len(sizes) > 10 else ""
            areas = sorted(sizes, key=lambda s: s[0] * s[1])
            lines.append(f"  sizes (width x height: files): {shown}{more}")
            if len(sizes) > 1:
                lines.append(f"  smallest {areas[0][0]}x{areas[0][1]}, largest {areas[-1][0]}x{areas[-1][1]}")
            modes = Counter(scan.mode_name(i) for i in images.values())
            lines.append("  modes: " + ", ".join(f"{mode}: {n}" for mode, n in modes.most_common()))
        return lines + [""]
    if ds is not None:
        split = next((s for s in (ds.train, ds.validation, ds.test) if len(s)), None)
        if split is not None and split.images is not None:
            n = len(ds.train) + len(ds.validation) + len(ds.test)
            _, h, w, c = split.images.shape
            return [f"images: {n} in memory, {w}x{h} {scan.MODE_NAMES[c]} (uint8 arrays)", ""]
    return []


def _split_section(ds: Dataset | None, cfg) -> list[str]:
    if ds is None:
        return []
    test_how = "the source's own test set" if ds.own_test_split else f"data.test_fraction={cfg.test_fraction:g}"
    lines = [f"splits: train {len(ds.train)}, validation {len(ds.validation)}, test {len(ds.test)} "
             f"(data.validation_fraction={cfg.validation_fraction:g}, test: {test_how}, data.seed={cfg.seed})"]
    for name, split in (("validation", ds.validation), ("test", ds.test)):
        if len(split):
            flag = "; too small, see the warning below" if len(split) < MIN_EVALUATION_IMAGES else ""
            lines.append(f"  an accuracy on the {name} split is known to +/-{accuracy_margin(len(split)):.1f} points "
                         f"at worst (95% interval){flag}")
    return lines + [""]


def _warning_section(warnings, info: scan.ScanResult | None, channels: int, every_file: bool) -> list[str]:
    if not warnings:
        return ["warnings: none", ""]
    lines = [f"warnings: {len(warnings)} (bad files are left out of training; conversions happen as it reads)"]
    color = []
    if info is not None:  # the RGB <-> gray warning names a few examples: under it, every file
        color = sorted(p for p, i in info.images.items() if (i.channels >= 3) != (channels >= 3))
    for w in warnings:
        lines += message_lines(w, "- ")
        if len(color) > 5 and w.startswith(f"{len(color)} ") and " image(s) will be converted to " in w:
            lines += ([f"  all {len(color)}:"] + [f"    {p}" for p in color] if every_file
                      else [f"  all {len(color)} are listed in data_report.txt"])
    return lines + [""]


# --------------------------------------------------------------------------- the sample grid


def sample_grid(dataset: Dataset, config: Config, per_class: int = 8) -> np.ndarray:
    """uint8 [H, W, 3]: a row per class labelled with its full name, ``per_class`` samples
    each (drawn with ``data.seed`` from all splits), at the model's input size and channels
    (larger inputs scaled down to SAMPLE_SIDE px)."""
    from graphcnn.viz.images import caption_image, labelled_grid

    per_class = max(1, per_class)
    pool = [(split, i) for split in (dataset.train, dataset.validation, dataset.test) for i in range(len(split))]
    labels = np.array([split.labels[i] for split, i in pool], np.int64)
    rng = np.random.default_rng(config.data.seed)
    chosen = []
    for c in range(len(dataset.class_names)):
        members = np.flatnonzero(labels == c)
        picked = np.sort(rng.choice(members, min(per_class, len(members)), replace=False)) if len(members) else []
        chosen.append([pool[j] for j in picked])
    tiles = _decode_samples([item for row in chosen for item in row], config)
    rows, start = [], 0
    counts = np.bincount(labels, minlength=len(dataset.class_names))
    for c, row in enumerate(chosen):
        images = tiles[start:start + len(row)]
        start += len(row)
        side = max(images.shape[1:3]) if len(images) else SAMPLE_SIDE
        # no captions under the tiles: labelled_grid draws them in its mistakes-grid red
        grid = labelled_grid(images, [""] * len(row), cols=per_class, min_side=max(96, side)) if len(row) else None
        label = f"{dataset.class_names[c]}  ({counts[c]} images)"
        rows.append(caption_image(grid if grid is not None else np.full((8, 8, 3), 255, np.uint8), label, min_side=1))
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, [(0, 6), (0, width - r.shape[1]), (0, 0)], constant_values=255) for r in rows]
    m = config.model
    side = max(tiles.shape[1:3])
    shown = f", shown at {side} px" if side < max(m.input_height, m.input_width) else ""
    most = max((len(row) for row in chosen), default=0)  # a class with fewer images shows them all
    title = (f"{dataset.name}: {f'up to {most}' if most < per_class else per_class} samples per class as the "
             "model sees them "
             f"({m.input_width}x{m.input_height} {'RGB' if m.channels == 3 else 'gray'}{shown})")
    return caption_image(np.concatenate(padded, axis=0), title, min_side=1)


def _decode_samples(items: list[tuple[Split, int]], config: Config) -> np.ndarray:
    """uint8 [N, h, w, C]: the images decoded (files) and fitted to the model's input as the
    training pipeline does, then scaled down to SAMPLE_SIDE px when larger."""
    import tensorflow as tf

    from graphcnn.data.pipeline import decode_file, fit_images

    m = config.model
    h, w, c = m.input_height, m.input_width, m.channels
    scale = min(1.0, SAMPLE_SIDE / max(h, w))
    out_h, out_w = max(1, round(h * scale)), max(1, round(w * scale))
    if not items:
        return np.zeros((0, out_h, out_w, c), np.uint8)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        if items[0][0].images is not None:  # a dataset holds arrays of one size, or files
            x = fit_images(tf.constant(np.stack([s.images[i] for s, i in items])), h, w, c)
        else:
            files = tf.data.Dataset.from_tensor_slices([os.fsencode(s.paths[i]) for s, i in items])
            x = tf.compat.v1.data.make_one_shot_iterator(
                files.map(lambda p: decode_file(p, h, w, c, config.data.exif_transpose),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(len(items))).get_next()
        if scale < 1.0:
            x = fit_images(x, out_h, out_w, c)
        return sess.run(x)
