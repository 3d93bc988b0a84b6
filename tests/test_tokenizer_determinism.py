"""A scratch WordPiece tokenizer is the same for the same corpus in every process: stages that
train one in separate workspaces (concurrent stages) or on separate machines must agree, and
DVC's run-cache assumes a stage's outputs follow from its inputs. `tokenizers` alone numbers
`##x` tokens in per-process hash order (huggingface/tokenizers#1794): four trainings in four
processes gave four vocabularies before the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = """
import hashlib, sys
from finpipe.pretrain.base import train_wordpiece
texts = [b for b in open(sys.argv[1], encoding="utf-8").read().split("\\n\\n") if b.strip()]
tok = train_wordpiece(texts, 1500, True)
print(hashlib.md5(tok.backend_tokenizer.to_str().encode()).hexdigest())
"""


def test_scratch_tokenizer_is_the_same_in_every_process():
    corpus = ROOT / "data" / "embedded" / "corpus" / "briefs.txt"
    digests = {
        subprocess.run([sys.executable, "-c", TRAIN, str(corpus)], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        for _ in range(4)
    }
    assert len(digests) == 1, f"{len(digests)} different vocabularies from 4 trainings"


def test_scratch_tokenizer_keeps_subword_pieces_as_ordinary_tokens():
    from finpipe.pretrain.base import train_wordpiece

    texts = [b for b in (ROOT / "data/embedded/corpus/briefs.txt").read_text().split("\n\n") if b.strip()]
    tok = train_wordpiece(texts, 1500, True)
    assert tok.all_special_tokens and all(not t.startswith("##") for t in tok.all_special_tokens)
    ids = tok("Quarterly revenue rose sharply")["input_ids"]
    assert any(tok.convert_ids_to_tokens(i).startswith("##") for i in ids)  # split into pieces
    assert tok.decode(ids, skip_special_tokens=True) == "quarterly revenue rose sharply"
