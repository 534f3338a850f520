"""Device check for the GJS strong view (issue 13): CUDA views equal PIL, no sync, cost.

    python benchmarks/gjs_device_check.py
"""
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from lci.augment import OPS, Augmenter


def ildoonet(img, name, v):
    A = Image.Transform.AFFINE
    if name in ("autocontrast", "equalize", "invert"):
        return getattr(ImageOps, name)(img)
    if name == "rotate":
        return img.rotate(v)
    if name == "posterize":
        return ImageOps.posterize(img, max(1, int(v)))
    if name == "solarize":
        return ImageOps.solarize(img, v)
    if name == "solarize_add":
        a = np.clip(np.asarray(img).astype(np.int64) + v, 0, 255).astype(np.uint8)
        return ImageOps.solarize(Image.fromarray(a), 128)
    if name in ("color", "contrast", "brightness", "sharpness"):
        return getattr(ImageEnhance, name.capitalize())(img).enhance(v)
    m = {"shear_x": (1, v, 0, 0, 1, 0), "shear_y": (1, 0, 0, v, 1, 0),
         "translate_x": (1, 0, v, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, v)}[name]
    return img.transform(img.size, A, m)


def main():
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    a = Augmenter((0.49, 0.48, 0.45), (0.2, 0.2, 0.2), pad=4, hflip=True, mode="strong",
                  generator=torch.Generator(device=dev).manual_seed(0))
    bad = 0
    with torch.autocast("cuda", dtype=torch.bfloat16):  # as in the engine
        for i, name in enumerate(OPS):
            if name == "cutout_abs":
                continue
            for sgn in (1.0, -1.0):
                out = a._rand_augment(x.to(dev).float(), op=torch.full((64,), i, device=dev),
                                      sign=torch.full((64,), sgn, device=dev)).cpu()
                v = a._ra_value(name) * (sgn if name in ("rotate", "shear_x", "shear_y",
                                                          "translate_x", "translate_y") else 1)
                for b in range(64):
                    ref = np.array(ildoonet(Image.fromarray(x[b].permute(1, 2, 0).numpy()), name, v))
                    n = int((torch.from_numpy(ref).permute(2, 0, 1).float() != out[b]).sum())
                    if n:
                        bad += 1
                        print("MISMATCH", name, sgn, b, n)
    print("cuda vs PIL: mismatching (op, sign, image) triples:", bad)
    xb = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8, device=dev)
    for mode in ("weak", "strong"):
        aug = Augmenter((0.49, 0.48, 0.45), (0.2, 0.2, 0.2), pad=4, hflip=True, mode=mode,
                        generator=torch.Generator(device=dev).manual_seed(0))
        for _ in range(5):
            aug(xb)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        t = time.perf_counter()
        for _ in range(100):
            aug(xb)
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        print(f"{mode}: {(time.perf_counter() - t) * 10:.3f} ms per 128-image view (no sync)")

    # one lci training step (preact_resnet34, batch 128, bf16) with weak vs strong views
    from lci.config import TrainConfig
    from lci.engine import Engine
    from lci.models import create_model

    y = torch.randint(0, 10, (128,), device=dev)
    for mode in ("weak", "strong"):
        cfg = TrainConfig(dataset="cifar10", method="lci", augment=mode, device="cuda").resolved()
        aug = Augmenter((0.49, 0.48, 0.45), (0.2, 0.2, 0.2), pad=4, hflip=True, mode=mode,
                        generator=torch.Generator(device=dev).manual_seed(0))
        eng = Engine(cfg, lambda: create_model("preact_resnet34", 10, in_channels=3, image_size=32),
                     10, aug, dev, total_steps=1000)
        eng.train()
        for _ in range(10):
            eng.step(xb, y)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(50):
            eng.step(xb, y)
        torch.cuda.synchronize()
        print(f"lci step, {mode} views: {(time.perf_counter() - t) * 20:.2f} ms")


if __name__ == "__main__":
    main()
