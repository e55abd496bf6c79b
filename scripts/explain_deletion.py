#!/usr/bin/env python
"""Which class-activation map points at what the network uses: Grad-CAM against LayerCAM.

    python scripts/explain_deletion.py RUN [--images 500] [--fractions 0.05,0.1,0.2]

For each test image of RUN's own data (split as training split it), each method's map of the
predicted class ranks the pixels; the top fraction of them is blacked out (set to what a black
pixel becomes after preprocessing) and the predicted class's probability computed again. The
larger the mean fall, the more the map shows pixels the network relies on (the "deletion" test
of Petsiuk et al., 2018); the same count of random pixels is the baseline. Also printed: the share
of maps with no positive evidence (all zero), and for gray images the share of each map's mass on
the object's pixels (brighter than 30% of white) against the share of the image they cover.
"""

from __future__ import annotations

import argparse

import numpy as np

from graphcnn import runtime
from graphcnn.config import from_json_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a graphcnn run directory")
    parser.add_argument("--images", type=int, default=500, help="test images to use (the first N)")
    parser.add_argument("--fractions", default="0.05,0.1,0.2", help="shares of the pixels to black out")
    args = parser.parse_args()
    runtime.configure()  # TensorFlow's environment, before it is imported (not for --help)
    from graphcnn.data.sources import load_dataset
    from graphcnn.explain import Explainer

    cfg = from_json_file(f"{args.run}/config.json")
    images = load_dataset(cfg.data, cfg.model.channels).test.images[:args.images]
    n = len(images)
    rng = np.random.default_rng(0)
    maps: dict[str, np.ndarray] = {}
    with Explainer(args.run, method="gradcam") as ex:
        x = ex.fit_arrays(images)  # float32 [N, H, W, C], as the network sees them
        black = ex.fit_arrays(np.zeros_like(images[:1]))[0].reshape(-1, x.shape[-1])
        maps["gradcam"], probabilities, classes = ex.gradcam(x)
    with Explainer(args.run, method="layercam") as ex:
        maps["layercam"] = ex.gradcam(x)[0]
        maps["random"] = rng.uniform(size=maps["gradcam"].shape).astype(np.float32)
        before = probabilities[np.arange(n), classes]
        print(f"{args.run}: {n} test images, layer {ex.layer}")
        for name in ("gradcam", "layercam"):
            print(f"  {name}: maps with no positive evidence {np.mean(maps[name].max(axis=(1, 2)) == 0):.1%}")
        if x.shape[-1] == 1:
            seen = (x[..., 0] - black[0, 0]) / max(float(x.max() - black[0, 0]), 1e-12)  # 0 black .. 1 white
            objects = seen > 0.3
            for name in ("gradcam", "layercam"):
                cam = maps[name]
                mass = cam.sum(axis=(1, 2))
                share = (cam * objects).sum(axis=(1, 2))[mass > 0] / mass[mass > 0]
                median = f"{np.median(share):.1%}" if len(share) else "- (every map empty)"
                print(f"  {name}: median share of the map on the object {median} "
                      f"(the object covers {objects.mean():.1%} of the image)")
        for fraction in (float(f) for f in args.fractions.split(",")):
            falls = []
            for name, cam in maps.items():
                ranks = cam.reshape(n, -1) + rng.uniform(0, 1e-6, (n, cam[0].size))  # ties (empty maps) at random
                top = np.argsort(-ranks, axis=1)[:, :int(fraction * ranks.shape[1])]
                masked = x.reshape(n, -1, x.shape[-1]).copy()
                masked[np.arange(n)[:, None], top] = black[top]
                after = ex.gradcam(masked.reshape(x.shape), classes)[1][np.arange(n), classes]
                falls.append(f"{name} {np.mean(before - after):.3f}")
            print(f"  top {fraction:.0%} of the pixels blacked out, mean fall of the class's probability: "
                  + ", ".join(falls))


if __name__ == "__main__":
    main()
