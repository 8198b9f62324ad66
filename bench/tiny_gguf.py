"""A tiny random llama GGUF with a real tokenizer, for checks that need a GGUF but not a good model (the GPU
check: SmolLM2's 94 MB do not travel to the lent GPU machine). The tokenizer, its merges and the chat template
are copied from a real GGUF; the weights are random (2 layers of width 64, f16): it writes nonsense, but under
the plan constraint every reply is still a valid plan, which is what the check is about.

    pip install gguf   # the gguf package of llama.cpp (pure Python)
    python -m bench.tiny_gguf model_store/smollm2-135m-instruct/model.gguf .gpu/tiny.gguf   # ~6.5 MB
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                  "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix", "tokenizer.chat_template")


def make(source: Path, out: Path, *, dim: int = 64, layers: int = 2, heads: int = 4, ff: int = 128,
         seed: int = 0) -> Path:
    """Write the tiny model to ``out``; returns it."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    fields = reader.fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(4096)
    writer.add_embedding_length(dim)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(dim // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for key in TOKENIZER_KEYS:
        if key not in fields:
            continue
        field = fields[key]
        value = field.contents()
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(key, value)
        elif kind == gguf.GGUFValueType.BOOL:
            writer.add_bool(key, bool(value))
        else:
            writer.add_uint32(key, int(value))
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float16)

    writer.add_tensor("token_embd.weight", weight(len(tokens), dim))
    writer.add_tensor("output_norm.weight", np.ones(dim, dtype=np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(dim, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(dim, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(dim, dim))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ff, dim))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ff, dim))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(dim, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a GGUF whose tokenizer to copy")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make(args.source, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
