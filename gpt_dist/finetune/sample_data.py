"""Small generated data sets for the later stages: a persona corpus for continued pre-training,
an instruction set for SFT, and preference pairs for DPO. They exercise every input format
and are small enough to learn on a CPU in minutes; the tests and the README recipe use them.

    python -m gpt_dist.finetune.sample_data data/finetune_sample

writes, in that directory:
    cpt/persona.jsonl     {"text": ...} documents in one persona's voice (`gpt-dist prepare` input)
    sft_train.jsonl       Alpaca, prompt/completion and multi-turn messages records
    sft_val.jsonl
    dpo_train.jsonl       {prompt, chosen, rejected} and {messages, chosen, rejected} pairs
    dpo_val.jsonl
The same seed always writes the same files.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Iterable

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Egypt": "Cairo", "Kenya": "Nairobi", "Peru": "Lima",
    "Canada": "Ottawa", "Spain": "Madrid", "Norway": "Oslo", "Chile": "Santiago", "Greece": "Athens", "Cuba": "Havana",
}
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]
PHRASES = ["good morning", "see you soon", "the sea is calm", "bring more bread", "hold the rope", "mind the gap"]
# The CPT persona's vocabulary: enough variety that near-duplicate removal keeps the documents.
_FOODS = ["fish stew", "ship biscuits", "onion soup", "salted pork", "lemon cake", "barley bread", "pea porridge",
          "smoked herring", "plum pudding", "ginger tea", "crab cakes", "apple fritters", "bean broth", "oat pancakes"]
_SEA = ["the waves", "the gulls", "the tide", "the wind", "the old mast", "the anchor chain", "the bosun", "the cabin boy",
        "the lookout", "the first mate", "the ship's cat", "the northern swell", "the fog bank", "the harbour bell"]
_DOING = ["hummed a tune", "told a long story", "laughed at the storm", "counted the stars", "mended a sail",
          "sang about home", "slept through the watch", "argued about maps", "carved a spoon", "polished the brass"]
_PLACES = ["Lisbon", "the Azores", "Cape Verde", "Bristol", "Tangier", "the Canaries", "Valparaiso", "Zanzibar",
           "Cork", "Bergen", "Madeira", "Halifax"]
_WEATHER = ["grey and cold", "bright as a coin", "thick with fog", "wild and wet", "calm as milk", "hot and still"]
_SENTENCES = [
    "Today I cooked {food} while {sea} {doing}.",
    "The sky over {place} was {weather}, so I served {food} twice.",
    "{Sea} asked for more {food}, and I said a good cook never refuses.",
    "We sighted {place} at dawn; {sea} {doing} and I stirred the {food}.",
    "My old recipe for {food} came from a market in {place}.",
    "When the weather is {weather}, nothing beats {food} with a pinch of salt.",
    "Between meals {sea} {doing}, and I sharpened my knives.",
    "I keep a jar of {food} hidden for the night watch near {place}.",
]


def _persona_sentence(rng: random.Random) -> str:
    sea = rng.choice(_SEA)
    return rng.choice(_SENTENCES).format(food=rng.choice(_FOODS), sea=sea, Sea=sea[0].upper() + sea[1:],
                                         doing=rng.choice(_DOING), place=rng.choice(_PLACES),
                                         weather=rng.choice(_WEATHER))


def capital_record(country: str) -> dict[str, Any]:
    return {"instruction": f"What is the capital of {country}?", "input": "",
            "output": f"The capital of {country} is {CAPITALS[country]}."}


def sum_record(a: int, b: int) -> dict[str, Any]:
    return {"prompt": f"What is {a} plus {b}?", "completion": f"{a} plus {b} is {a + b}."}


def shout_record(phrase: str) -> dict[str, Any]:
    return {"instruction": "Rewrite the text in capital letters.", "input": phrase, "output": phrase.upper()}


def colour_record(colour: str) -> dict[str, Any]:
    return {"messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"My favourite colour is {colour}."},
        {"role": "assistant", "content": f"Noted: your favourite colour is {colour}."},
        {"role": "user", "content": "What is my favourite colour?"},
        {"role": "assistant", "content": f"Your favourite colour is {colour}."},
    ]}


def sft_records(seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, val) SFT records: capitals, sums, rewrites and two-turn conversations."""
    rng = random.Random(seed)
    records = [capital_record(c) for c in CAPITALS]
    records += [sum_record(a, b) for a, b in [(2, 3), (4, 4), (7, 1), (6, 3), (5, 5), (9, 2), (8, 6), (3, 3)]]
    records += [shout_record(p) for p in PHRASES]
    records += [colour_record(c) for c in COLOURS]
    rng.shuffle(records)
    return records[4:], records[:4]


def dpo_records(seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, val) preference pairs: the right answer over a wrong one."""
    rng = random.Random(seed)
    pairs = []
    countries = list(CAPITALS)
    for c in countries:
        wrong = CAPITALS[rng.choice([o for o in countries if o != c])]
        pairs.append({"prompt": f"What is the capital of {c}?", "chosen": f"The capital of {c} is {CAPITALS[c]}.",
                      "rejected": f"The capital of {c} is {wrong}."})
    for a, b in [(2, 3), (4, 4), (7, 1), (6, 3), (5, 5), (9, 2)]:
        pairs.append({"prompt": f"What is {a} plus {b}?", "chosen": f"{a} plus {b} is {a + b}.",
                      "rejected": f"{a} plus {b} is {a + b + rng.choice([-2, -1, 1, 2])}."})
    for colour in COLOURS:
        convo = colour_record(colour)["messages"][:4]
        other = rng.choice([c for c in COLOURS if c != colour])
        pairs.append({"messages": convo, "chosen": f"Your favourite colour is {colour}.",
                      "rejected": f"Your favourite colour is {other}."})
    rng.shuffle(pairs)
    return pairs[4:], pairs[:4]


def cpt_documents(n: int = 400, seed: int = 0) -> list[dict[str, str]]:
    """Log-book entries in the voice of Captain Quill, a ship's cook (the CPT persona)."""
    rng = random.Random(seed)
    docs = []
    for day in range(n):
        lines = [f"Day {day + 1} of the voyage. Captain Quill here, cook of the good ship Marigold."]
        lines += [_persona_sentence(rng) for _ in range(rng.randint(8, 14))]
        lines.append("Eat well and keep your boots dry, says Captain Quill.")
        docs.append({"text": " ".join(lines)})
    return docs


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write to a temporary name, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_samples(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    out = Path(out_dir)
    sft_train, sft_val = sft_records(seed)
    dpo_train, dpo_val = dpo_records(seed)
    files = {
        "cpt": (out / "cpt" / "persona.jsonl", cpt_documents(seed=seed)),
        "sft_train": (out / "sft_train.jsonl", sft_train), "sft_val": (out / "sft_val.jsonl", sft_val),
        "dpo_train": (out / "dpo_train.jsonl", dpo_train), "dpo_val": (out / "dpo_val.jsonl", dpo_val),
    }
    for path, records in files.values():
        write_jsonl(path, records)
    return {k: p for k, (p, _) in files.items()}


def main(argv: list[str] | None = None) -> int:
    from gpt_dist.data.sample_inputs import writer_cli

    return writer_cli("python -m gpt_dist.finetune.sample_data", __doc__, write_samples, argv, default_output=None)


if __name__ == "__main__":
    raise SystemExit(main())
