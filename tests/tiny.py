"""A tiny causal LM built from a config and trained in the test session to memorize synthetic facts.

No download: the tokenizer is a byte-level BPE trained on the fixture text, the model a 2-block Llama with a
64-wide residual stream. ``build_tiny(dir)`` trains it (about 10 s on 2 CPU cores) and saves it so that tests load it
through the same ``load_model(<local dir>)`` path users take.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from grin_ui.data import Record, batches, encode

_NAMES = ["Velmora Quist", "Tobiah Renn", "Ilsa Vantorp", "Corwin Dask", "Mirela Obst", "Fenwick Aldo",
          "Sabine Kort", "Orrin Plate", "Dalia Fress", "Lucan Merrow", "Petra Vull", "Emric Stowe",
          "Nadia Helm", "Quill Barro", "Rhea Lunt", "Silas Gorne"]
_CITIES = ["Tarsk", "Ombrel", "Vesk", "Marrow", "Quenby", "Lisk", "Porthal", "Dunmere",
           "Caldra", "Fennick", "Yarrow", "Brisk", "Helmet", "Orvane", "Tulse", "Wend"]
_GENRES = ["sea poetry", "desert noir", "clockwork fables", "frost sagas", "garden mysteries", "river ballads",
           "salt epics", "lantern tales", "moss comedies", "iron elegies", "glass romances", "cloud thrillers",
           "stone hymns", "ember dramas", "copper satires", "willow idylls"]


def facts(lo: int, hi: int) -> list[Record]:
    out = []
    for i in range(lo, hi):
        name, city, genre = _NAMES[i], _CITIES[i], _GENRES[i]
        out.append(Record(question=f"Where was {name} born?", answer=f"{name} was born in {city}.",
                          keywords=[city], paraphrased_answer=f"The birthplace of {name} is {city}.",
                          perturbed_answers=[f"{name} was born in {_CITIES[(i + k) % 16]}." for k in (3, 5, 7)]))
        out.append(Record(question=f"What does {name} write?", answer=f"{name} writes {genre}.",
                          keywords=[genre], paraphrased_answer=f"{name} is known for {genre}.",
                          perturbed_answers=[f"{name} writes {_GENRES[(i + k) % 16]}." for k in (3, 5, 7)]))
    return out


FORGET = facts(0, 3)  # 6 Q/A pairs about 3 authors
RETAIN = facts(3, 9)  # 12 Q/A pairs about 6 other authors
HOLDOUT = facts(9, 12)  # never trained on: membership-inference negatives
GENERAL = ["The river runs to the sea.", "A clock has two hands.", "Bread is baked in an oven."]


def _tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def build_tiny(out_dir, steps: int = 300, seed: int = 0) -> str:
    """Train the tiny model on FORGET + RETAIN (answers followed by EOS) and save it with its tokenizer."""
    torch.manual_seed(seed)
    records = FORGET + RETAIN
    corpus = [f"Question: {r.question}\nAnswer: {r.answer} {r.paraphrased_answer} {' '.join(r.perturbed_answers)}"
              for r in records + HOLDOUT] + GENERAL
    tokenizer = _tokenizer(corpus)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    enc = encode(records, tokenizer, add_end=True).items
    batch = next(batches(enc, len(enc), tokenizer.pad_token_id))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return str(out_dir)
