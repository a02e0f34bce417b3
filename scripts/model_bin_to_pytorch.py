#!/usr/bin/env python3
"""Load a legacy llama2.c model.bin (what `llama2 train` writes) into llama2.c's model.py
Transformer, to continue in PyTorch (train.py, multi-GPU) where one machine is not enough.

    python3 scripts/model_bin_to_pytorch.py LLAMA2C_DIR model.bin [--ckpt ckpt.pt] [--export out.bin]

LLAMA2C_DIR is a checkout of https://github.com/karpathy/llama2.c (its model.py and export.py
are imported from there, not copied here). --ckpt writes a checkpoint in train.py's layout
(`model`, `model_args`, `iter_num`, `best_val_loss`): put it in an out_dir as ckpt.pt and run
train.py with init_from='resume'. --export writes the Transformer back out with llama2.c's own
legacy export, which `llama2` and run.c read.
"""
import argparse
import struct
import sys

import numpy as np
import torch


def read_legacy(path):
    """The header and the float32 tensors of a legacy llama2.c checkpoint."""
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack("7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    values = np.frombuffer(data, dtype="<f4", offset=28)
    header = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads,
                  n_kv_heads=n_kv_heads, vocab_size=vocab, max_seq_len=seq_len)
    return header, shared, values


def multiple_of_for(dim, hidden):
    """The largest multiple_of for which model.py's formula gives this feed-forward width
    (train.py rebuilds the model from multiple_of when it resumes), or None."""
    for m in (256, 128, 64, 32, 16, 8, 4, 2, 1):
        if m * ((int(2 * 4 * dim / 3) + m - 1) // m) == hidden:
            return m
    return None


def load(path, ModelArgs, Transformer):
    header, shared, values = read_legacy(path)
    args = ModelArgs(**header)
    model = Transformer(args)
    h = header
    dim, hidden, kv_dim = h["dim"], h["hidden_dim"], h["n_kv_heads"] * h["dim"] // h["n_heads"]
    offset = 0

    def take(*shape):
        nonlocal offset
        n = int(np.prod(shape))
        t = torch.from_numpy(values[offset:offset + n].copy()).view(*shape)
        offset += n
        return t

    layers = model.layers
    with torch.no_grad():
        model.tok_embeddings.weight.copy_(take(h["vocab_size"], dim))
        for name, shape in [("attention_norm", (dim,)), ("attention.wq", (dim, dim)),
                            ("attention.wk", (kv_dim, dim)), ("attention.wv", (kv_dim, dim)),
                            ("attention.wo", (dim, dim)), ("ffn_norm", (dim,)),
                            ("feed_forward.w1", (hidden, dim)), ("feed_forward.w2", (dim, hidden)),
                            ("feed_forward.w3", (hidden, dim))]:
            for layer in layers:
                module = layer
                for part in name.split("."):
                    module = getattr(module, part)
                module.weight.copy_(take(*shape))
        model.norm.weight.copy_(take(dim))
        offset += h["max_seq_len"] * (dim // h["n_heads"])  # the obsolete RoPE tables
        if not shared:
            # model.py ties the classifier to the embedding; this checkpoint has its own.
            model.output.weight = torch.nn.Parameter(take(h["vocab_size"], dim))
    if offset != len(values):
        sys.exit(f"{path}: {len(values) - offset} floats left over: not a legacy checkpoint")
    return model, header


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("llama2c_dir", help="a checkout of karpathy/llama2.c")
    parser.add_argument("model_bin", help="a legacy llama2.c checkpoint")
    parser.add_argument("--ckpt", help="write a train.py checkpoint here")
    parser.add_argument("--export", help="write the model back out with llama2.c's legacy export")
    args = parser.parse_args()
    sys.path.insert(0, args.llama2c_dir)
    from model import ModelArgs, Transformer
    from export import legacy_export

    model, header = load(args.model_bin, ModelArgs, Transformer)
    n = sum(p.numel() for p in model.parameters())
    print(f"loaded {args.model_bin}: {header}, {n} parameters")
    if args.ckpt:
        model_args = dict(header, multiple_of=multiple_of_for(header["dim"], header["hidden_dim"]))
        if model_args["multiple_of"] is None:
            print("note: no multiple_of gives this hidden_dim; train.py cannot resume it as is")
        torch.save({"model": model.state_dict(), "model_args": model_args, "iter_num": 0,
                    "best_val_loss": 1e9, "config": {}}, args.ckpt)
        print(f"wrote {args.ckpt}")
    if args.export:
        legacy_export(model, args.export)


if __name__ == "__main__":
    main()
