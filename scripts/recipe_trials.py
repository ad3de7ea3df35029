"""Short time-to-accuracy trials of a recipe change, in plain PyTorch on the template's data.

The default recipe (configs/model/cnn_small.yaml, trainer.max_epochs) was chosen with these
trials: each trains one net for a few epochs on Fashion-MNIST as the template holds it
(IdxDataModule, uint8 in memory, batches normalised on the fly, channels_last) and prints one
JSON line: the settings, training seconds, ms per step, and test/val accuracy (also with
flip test-time augmentation). One trial at a time on a quiet machine: the step times are only
comparable within one sitting. Results: benchmarks/results/recipe_trials_<cpu kind>.md.

    python scripts/recipe_trials.py --epochs 3                      # today's default recipe
    python scripts/recipe_trials.py --epochs 3 --order bnpool --widths 16,32,64 --no-whiten
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from myproject.idx_datamodule import IdxDataModule
from myproject.nets import SmallCNN


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="16,32,64,128", help="channels per block")
    p.add_argument(
        "--order",
        choices=["poolbn", "bnpool"],
        default="poolbn",
        help="poolbn: conv-pool-BN-ReLU (SmallCNN); bnpool: conv-BN-ReLU-pool",
    )
    p.add_argument(
        "--no-whiten",
        dest="whiten",
        action="store_false",
        help="He-initialised, trained first conv instead of the frozen whitening",
    )
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--bs", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--wd", type=float, default=1e-3)
    p.add_argument("--ls", type=float, default=0.1, help="label smoothing")
    p.add_argument("--pct", type=float, default=0.25, help="OneCycle warm-up share")
    p.add_argument("--flip", action="store_true", help="random flips of training batches")
    p.add_argument("--ema", type=float, default=0, help="EMA decay of the weights (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="data", help="cache_dir of the IdxDataModule")
    return p.parse_args()


def bnpool_net(widths: list[int], whiten: bool) -> nn.Module:
    """The previous SmallCNN block order, conv-BN-ReLU-pool, with SmallCNN's whitening."""
    net = SmallCNN(widths=widths, whiten=whiten)
    for block in net.features:  # conv, pool, BN, ReLU -> conv, BN, ReLU, pool
        conv, pool, bn, relu = list(block)
        block._modules.clear()
        for i, m in enumerate((conv, bn, relu, pool)):
            block.add_module(str(i), m)
    return net


def main() -> None:
    a = parse()
    torch.manual_seed(a.seed)
    dm = IdxDataModule(cache_dir=a.data, val_size=5000, batch_size=a.bs)
    dm.setup("fit")
    widths = [int(w) for w in a.widths.split(",")]
    net = (
        SmallCNN(widths=widths, whiten=a.whiten)
        if a.order == "poolbn"
        else bnpool_net(widths, a.whiten)
    )
    loader = dm.train_dataloader()
    net.fit_data(lambda: next(iter(loader))[0])
    net = net.to(memory_format=torch.channels_last)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=a.lr, momentum=0.9, nesterov=True, weight_decay=a.wd)
    steps = math.ceil(a.epochs * len(loader))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps, pct_start=a.pct)
    ema = None
    if a.ema:
        avg = torch.optim.swa_utils.get_ema_multi_avg_fn(a.ema)
        ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=avg, use_buffers=True)
    done, epoch, t0 = 0, 0, time.perf_counter()
    while done < steps:
        loader.sampler.set_epoch(epoch)
        epoch += 1
        for x, y in loader:
            if a.flip:
                x = torch.where((torch.rand(len(x)) < 0.5)[:, None, None, None], x.flip(3), x)
            x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(net(x), y, label_smoothing=a.ls)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(net)
            done += 1
            if done == steps:
                break
    train_s = time.perf_counter() - t0
    model = (ema.module if ema is not None else net).eval()
    out = {**vars(a), "train_s": round(train_s, 1), "ms_step": round(1000 * train_s / steps, 1)}
    for split in ("test", "val"):
        x_all, y_all = dm.tensors(split)
        plain = tta = 0
        with torch.inference_mode():
            for i in range(0, len(x_all), 256):
                x = x_all[i : i + 256].contiguous(memory_format=torch.channels_last)
                logits = model(x)
                plain += int((logits.argmax(1) == y_all[i : i + 256]).sum())
                both = logits.softmax(1) + model(x.flip(3)).softmax(1)
                tta += int((both.argmax(1) == y_all[i : i + 256]).sum())
        out[split], out[f"{split}_tta"] = plain / len(x_all), tta / len(x_all)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
