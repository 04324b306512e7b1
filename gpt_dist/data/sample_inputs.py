"""Tiny inputs for the README's data and evaluation commands, made offline from the text every
Python install ships (pydoc's help topics, as `gpt-dist prepare --sample` uses):

    python -m gpt_dist.data.sample_inputs .

writes, under the given directory:
    corpus.txt              plain text, one paragraph per blank-line block (`gpt-dist train-tokenizer
                            --input corpus.txt`, `gpt-dist prepare --input corpus.txt --txt-unit paragraph`)
    data/raw/web/*.jsonl.gz {"text": ...} lines, gzip   } the three sources of configs/data/example.yaml:
    data/raw/wiki/*.parquet a "text" column             } generated English prose, with a German
    data/raw/books/*.txt    blank-line paragraphs       } document, an exact copy and a listed word
                                                          for the filters to drop
    hellaswag_val.jsonl     HellaSwag-format items {ctx, endings, label}: a help-topic passage and its
                            real continuation among three taken from other topics (`gpt-dist eval --mc`)
The same seed always writes the same files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from pathlib import Path

from gpt_dist.data.readers import sample_topics

# For the example config's filters to show what they drop: a language it does not keep and a
# word from its placeholder word list.
GERMAN = ("Die Bundesregierung hat am Dienstag einen neuen Gesetzentwurf vorgelegt, der den Ausbau der "
          "erneuerbaren Energien beschleunigen soll. Die Opposition kritisierte den Entwurf als unzureichend.")
LISTED_WORD = "xyzzyspam"


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 8]


_NOUNS = ("river", "library", "farmer", "engine", "garden", "teacher", "market", "harbour", "village", "painter",
          "bridge", "forest", "doctor", "kitchen", "letter", "mountain", "student", "window", "council", "orchard",
          "lantern", "museum", "sailor", "baker", "station", "meadow", "workshop", "journal", "valley", "tower",
          "festival", "merchant", "island", "school", "theatre", "colony", "archive", "vineyard", "railway", "clock")
_VERBS = ("visited", "repaired", "described", "painted", "measured", "crossed", "guarded", "opened", "studied",
          "praised", "followed", "carried", "finished", "watched", "protected", "welcomed", "planned", "moved",
          "collected", "mapped", "restored", "questioned", "supplied", "photographed", "celebrated")
_ADJECTIVES = ("old", "quiet", "busy", "narrow", "famous", "wooden", "distant", "bright", "small", "ancient",
               "crowded", "gentle", "northern", "empty", "careful", "golden", "modest", "broad", "hidden", "local")
_PLACES = ("near the", "behind the", "beside the", "across the", "under the", "above the", "inside the", "beyond the")
_TIMES = ("In the morning", "Every spring", "Last winter", "After the storm", "Before dawn", "During the fair",
          "On Sunday", "Years ago", "At noon", "Later that week")


def _sentence(rng: random.Random) -> str:
    a, b, c = (rng.choice(_NOUNS) for _ in range(3))
    x, y = rng.choice(_ADJECTIVES), rng.choice(_ADJECTIVES)
    shape = rng.randrange(3)
    if shape == 0:
        return f"The {x} {a} {rng.choice(_VERBS)} the {b} {rng.choice(_PLACES)} {y} {c}."
    if shape == 1:
        return f"{rng.choice(_TIMES)}, a {x} {a} {rng.choice(_VERBS)} the {y} {b} and then {rng.choice(_VERBS)} the {c}."
    return f"People say that the {a} of the {x} {b} was {rng.choice(_VERBS)} by a {y} {c}."


def prose_documents(n: int, seed: int, sentences: tuple[int, int] = (8, 16)) -> list[str]:
    """`n` short English documents of generated sentences (plain prose that passes web-text
    quality rules; any two share few 5-grams, so near-duplicate removal keeps them)."""
    rng = random.Random(seed)
    return [" ".join(_sentence(rng) for _ in range(rng.randint(*sentences))) for _ in range(n)]


def write_corpus(path: Path) -> int:
    """Every help-topic paragraph, blank-line separated; returns the paragraph count."""
    paragraphs = [p for _, text in sample_topics() for p in _paragraphs(text)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return len(paragraphs)


def write_example_sources(root: Path, seed: int = 0) -> dict[str, int]:
    """The inputs of configs/data/example.yaml under root/data/raw; returns documents per source."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    web, wiki, books = prose_documents(300, seed), prose_documents(80, seed + 1), prose_documents(40, seed + 2)
    web = web + [web[0], GERMAN]  # an exact copy and a language the config does not keep
    wiki = wiki + [wiki[0].replace(".", f" {LISTED_WORD}.", 1)]
    half = len(web) // 2
    for name, part in (("a", web[:half]), ("b", web[half:])):
        out = root / "data/raw/web" / f"{name}.jsonl.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(out, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in part)
    (root / "data/raw/wiki").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": wiki}), root / "data/raw/wiki/part-0.parquet")
    (root / "data/raw/books").mkdir(parents=True, exist_ok=True)
    # txt_unit: paragraph makes each blank-line block a document.
    (root / "data/raw/books/one.txt").write_text("\n\n".join(books) + "\n", encoding="utf-8")
    return {"web": len(web), "wiki": len(wiki), "books": len(books)}


def mc_items(n: int = 40, seed: int = 0) -> list[dict]:
    """HellaSwag-format items: the first words of a paragraph, its next words as the right
    ending, and the same span of three other paragraphs as the wrong ones."""
    rng = random.Random(seed)
    spans = []
    for p in (p for _, text in sample_topics() for p in _paragraphs(text)):
        words = p.split()
        if len(words) >= 28:
            spans.append((" ".join(words[:16]), " ".join(words[16:28])))
    picked = rng.sample(range(len(spans)), min(n, len(spans)))
    items = []
    for i in picked:
        ctx, right = spans[i]
        wrong = [spans[j][1] for j in rng.sample([k for k in range(len(spans)) if k != i], 3)]
        label = rng.randrange(4)
        endings = wrong[:label] + [right] + wrong[label:]
        items.append({"ctx": ctx, "endings": endings, "label": label})
    return items


def write_samples(root: str | Path, seed: int = 0) -> dict[str, Path]:
    root = Path(root)
    write_corpus(root / "corpus.txt")
    write_example_sources(root, seed)
    mc = root / "hellaswag_val.jsonl"
    mc.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in mc_items(seed=seed)), encoding="utf-8")
    return {"corpus": root / "corpus.txt", "example sources": root / "data/raw", "multiple choice": mc}


def writer_cli(prog: str, doc: str, write, argv: list[str] | None, default_output: str | None) -> int:
    """`python -m PROG [OUTPUT] [--seed N]`: call write(output, seed) -> {name: path} and list what it wrote.
    OUTPUT is required when `default_output` is None."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    if default_output is None:
        ap.add_argument("output", help="directory to write the sample files into")
    else:
        ap.add_argument("output", nargs="?", default=default_output,
                        help=f"directory to write into (default: {default_output})")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name, path in write(args.output, args.seed).items():
        print(f"{name}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return writer_cli("python -m gpt_dist.data.sample_inputs", __doc__, write_samples, argv, default_output=".")


if __name__ == "__main__":
    raise SystemExit(main())
