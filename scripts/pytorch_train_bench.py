#!/usr/bin/env python3
"""PyTorch's training speed on this CPU, for comparison with `make bench-train`.

Runs llama2.c's `model.py` (imported from a llama2.c checkout given by --llama2c DIR or the
LLAMA2C_DIR environment variable; nothing of llama2.c is part of this repository) the way
train.py trains on the CPU: fp32, eager, 2 threads by default, one micro-batch per step of
forward + backward + gradient clipping at 1.0 + AdamW (train.py's optimizer settings), on
random tokens, for the two shapes of benches/train.rs. Prints tokens/s of the fastest of the
timed steps (wall time), in the columns of the Rust benchmark.

    python3 scripts/pytorch_train_bench.py --llama2c ../llama2.c [--steps 3] [--models 260K,15M]
"""

import argparse
import os
import sys
import time

SHAPES = {
    # name: (ModelArgs fields, batch, seq_len) -- stories260K's recipe and train.py's defaults
    "260K": (dict(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, multiple_of=4), 32, 512),
    "15M": (dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=32000, multiple_of=32), 8, 256),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama2c", default=os.environ.get("LLAMA2C_DIR"),
                        help="folder holding llama2.c's model.py (default: $LLAMA2C_DIR)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per shape (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--models", default="260K,15M", help="shapes to run: 260K,15M")
    args = parser.parse_args()
    if not args.llama2c or not os.path.isfile(os.path.join(args.llama2c, "model.py")):
        sys.exit("--llama2c: give a folder holding llama2.c's model.py (or set LLAMA2C_DIR)")
    sys.path.insert(0, args.llama2c)
    import torch
    from model import ModelArgs, Transformer

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, fp32 eager, {cpu_name()}")
    print(f"{'model':<5} {'dtype':>8} {'B x T':>9} {'tok/s':>9}")
    for name in args.models.split(","):
        fields, batch, seq_len = SHAPES[name.strip()]
        model = Transformer(ModelArgs(max_seq_len=seq_len, dropout=0.0, **fields))
        model.train()
        optimizer = model.configure_optimizers(0.1, 5e-4, (0.9, 0.95), "cpu")
        tokens = torch.randint(0, fields["vocab_size"], (batch, seq_len + 1))
        x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
        fastest = float("inf")
        for step in range(args.steps + 1):
            start = time.perf_counter()
            model(x, y)
            model.last_loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step > 0:
                fastest = min(fastest, time.perf_counter() - start)
        print(f"{name:<5} {'float32':>8} {f'{batch}x{seq_len}':>9} {batch * seq_len / fastest:>9.0f}")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
