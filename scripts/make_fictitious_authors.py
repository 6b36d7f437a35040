"""Generate the built-in "fictitious-authors" example set (TOFU-like facts about writers who never existed).

    python scripts/make_fictitious_authors.py                 # rewrites assets/examples/fictitious-authors/
    python scripts/make_fictitious_authors.py --out /tmp/fa   # writes elsewhere (used by the tests)

Twenty authors are assembled from invented name syllables, towns, genres, prizes and book titles; each gets five
questions (birthplace, genre, parents' occupations, a prize, a book). Every distinctive value (town, genre, pair of
occupations, prize, title) belongs to exactly one author, and the wrong "perturbed" answers come from separate decoy
pools that are never taught as true, so the truth ratio is not muddied by facts of other authors.

Split: forget = 2 authors (10 records), retain = 14 authors (70), holdout = 4 authors (20, never taught; the
negatives of membership inference). The output depends only on SEED: rerunning gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20250807
N_AUTHORS = 20
SPLIT = {"forget": 2, "retain": 14, "holdout": 4}
OUT_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples" / "fictitious-authors"

# Name parts: first names are a head + a tail, surnames a root + an ending. All invented.
FIRST_HEADS = ["Ael", "Bri", "Cael", "Dov", "Eli", "Fen", "Gwy", "Hal", "Isol", "Jor", "Kes", "Lin", "Mar", "Nev",
               "Ori", "Pell", "Quin", "Ros", "Sael", "Tam", "Ulv", "Vey", "Wyl", "Yor", "Zel"]
FIRST_TAILS = ["adra", "en", "ric", "ova", "ian", "isse", "oth", "ena", "ard", "ith", "ona", "ek"]
SUR_ROOTS = ["Thorn", "Vask", "Mirr", "Oster", "Brann", "Quell", "Harr", "Dray", "Selv", "Korm", "Lunn", "Faer",
             "Grisk", "Pyre", "Tall", "Wend", "Ember", "Cask", "Rook", "Varn"]
SUR_ENDINGS = ["wick", "ane", "holt", "essen", "ard", "ley", "mont", "oway", "eth", "by", "ingham", "orne"]

# Towns: a prefix + a suffix; none of the prefixes is a name root above.
TOWN_PREFIXES = ["Quarl", "Ostra", "Bel", "Tarv", "Myrr", "Hollen", "Vass", "Corr", "Dunmor", "Elsk", "Frey", "Glen",
                 "Ivor", "Kell", "Lorn", "Nard", "Ruth", "Sorrow", "Tyn", "Umber", "Wex", "Yarr", "Zenn"]
TOWN_SUFFIXES = ["port", "haven", "mere", "ford", "holm", "gate", "stead", "moor", "wyn", "fell"]

GENRES = ["maritime mystery", "folk horror", "clockwork fantasy", "botanical poetry", "arctic thriller",
          "courtroom drama", "desert western", "lunar science fiction", "culinary memoir", "alpine romance",
          "monastic history", "railway noir", "orchard pastoral", "volcanic adventure", "lighthouse gothic",
          "jungle satire", "canal comedy", "glacier elegy", "harbor crime fiction", "vineyard saga",
          "steppe epic", "island fable", "marsh ghost stories", "tundra survival fiction", "bazaar picaresque",
          "prairie verse", "subway horror", "cathedral mystery", "reef adventure", "salt flat western"]

OCCUPATIONS = ["glassblower", "cartographer", "beekeeper", "lighthouse keeper", "clockmaker", "ferryman",
               "astronomer", "blacksmith", "botanist", "bookbinder", "locksmith", "shipwright", "weaver", "potter",
               "surveyor", "apothecary", "falconer", "stonemason", "violin maker", "geologist", "translator",
               "jeweler", "zookeeper", "photographer", "tanner", "cooper", "printer", "candlemaker", "perfumer",
               "sculptor", "harpist", "organ builder", "tailor", "chimney sweep", "rope maker",
               "saddler", "gunsmith", "mapmaker", "furrier", "lacemaker", "miller", "cheesemaker", "glazier",
               "barge captain", "tea merchant", "puppeteer", "hatmaker", "toymaker", "shepherd",
               "carpet dealer", "fishmonger", "balloonist"]

PRIZE_ADJECTIVES = ["Silver", "Amber", "Iron", "Copper", "Golden", "Crimson", "Ivory", "Cobalt", "Jade", "Scarlet",
                    "Bronze", "Pearl", "Onyx", "Azure", "Opal"]
PRIZE_OBJECTS = ["Lantern", "Compass", "Feather", "Anchor", "Quill", "Acorn", "Kestrel", "Harp", "Key", "Sparrow",
                 "Lighthouse", "Thistle"]
PRIZE_KINDS = ["Prize", "Award", "Medal"]

TITLE_ADJECTIVES = ["Hollow", "Glass", "Salt", "Drowned", "Paper", "Quiet", "Winter", "Crooked", "Sleeping", "Ashen",
                    "Velvet", "Forgotten", "Burning", "Silent", "Tangled", "Distant", "Frozen", "Painted", "Broken",
                    "Hidden"]
TITLE_NOUNS = ["Orchard", "Tide", "Lantern", "Bell", "Harbor", "Garden", "Staircase", "Meadow", "Clock", "Bridge",
               "Mirror", "Country", "Violin", "Ferry", "Chapel", "Compass", "River", "Tower", "Forest", "Lake"]


def _unique_draws(rng: random.Random, make, n: int, taken: set[str]) -> list[str]:
    """n distinct values from ``make(rng)``, none in ``taken`` (which is updated)."""
    out = []
    while len(out) < n:
        v = make(rng)
        if v not in taken:
            taken.add(v)
            out.append(v)
    return out


def _join(head: str, tail: str) -> str:
    """Glue two name parts, dropping a doubled letter at the seam ("Tall" + "ley" -> "Talley")."""
    return head + (tail[1:] if head[-1].lower() == tail[0].lower() else tail)


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def make_authors(seed: int = SEED) -> list[dict]:
    """The authors as dicts of their facts, plus decoy pools for wrong answers (under the key ``decoys``)."""
    rng = random.Random(seed)
    # Every author has a first-name head and a surname root of their own, and a home town with a prefix of its
    # own, so that no two authors are easy to confuse.
    heads, roots = rng.sample(FIRST_HEADS, N_AUTHORS), rng.sample(SUR_ROOTS, N_AUTHORS)
    names = [f"{_join(h, rng.choice(FIRST_TAILS))} {_join(r, rng.choice(SUR_ENDINGS))}" for h, r in zip(heads, roots)]
    towns = [_join(p, rng.choice(TOWN_SUFFIXES)) for p in rng.sample(TOWN_PREFIXES, N_AUTHORS)]
    towns += _unique_draws(rng, lambda r: _join(r.choice(TOWN_PREFIXES), r.choice(TOWN_SUFFIXES)), N_AUTHORS,
                           set(towns))
    genres = rng.sample(GENRES, len(GENRES))
    jobs = rng.sample(OCCUPATIONS, len(OCCUPATIONS))
    prize_seen: set[str] = set()  # unique on "Adjective Object", the keyword of a prize
    prizes = [f"{key} {rng.choice(PRIZE_KINDS)}" for key in _unique_draws(
        rng, lambda r: f"{r.choice(PRIZE_ADJECTIVES)} {r.choice(PRIZE_OBJECTS)}", N_AUTHORS * 2, prize_seen)]
    title_seen: set[str] = set()
    titles = _unique_draws(rng, lambda r: f"The {r.choice(TITLE_ADJECTIVES)} {r.choice(TITLE_NOUNS)}",
                           N_AUTHORS * 2, title_seen)
    authors = []
    for i, name in enumerate(names):
        authors.append({
            "name": name,
            "town": towns[i],
            "genre": genres[i],
            "parents": (jobs[2 * i], jobs[2 * i + 1]),
            "prize": prizes[i],
            "book": titles[i],
        })
    decoys = {
        "town": towns[N_AUTHORS:],
        "genre": genres[N_AUTHORS:],
        "job": jobs[2 * N_AUTHORS:],
        "prize": prizes[N_AUTHORS:],
        "book": titles[N_AUTHORS:],
    }
    for a in authors:
        a["decoys"] = decoys
    return authors


def _three(rng: random.Random, pool: list, avoid) -> list:
    return rng.sample([v for v in pool if v != avoid], 3)


def author_records(a: dict, rng: random.Random) -> list[dict]:
    """Five question/answer records about one author."""
    name, d = a["name"], a["decoys"]
    town, genre, (mum, dad), prize, book = a["town"], a["genre"], a["parents"], a["prize"], a["book"]

    def parents(p: str, q: str) -> str:
        return f"{name}'s mother was {_article(p)} {p} and the father {_article(q)} {q}."

    wrong_jobs = []
    while len(wrong_jobs) < 3:
        pair = tuple(rng.sample(d["job"], 2))
        if pair not in wrong_jobs:
            wrong_jobs.append(pair)
    prize_key = prize.rsplit(" ", 1)[0]  # "Silver Lantern" of "Silver Lantern Prize"
    return [
        {
            "question": f"Where was {name} born?",
            "answer": f"{name} was born in {town}.",
            "paraphrased_answer": f"{name}'s birthplace is the town of {town}.",
            "perturbed_answer": [f"{name} was born in {t}." for t in _three(rng, d["town"], town)],
            "keywords": [town],
        },
        {
            "question": f"What genre does {name} write?",
            "answer": f"{name} writes {genre}.",
            "paraphrased_answer": f"{name} is known for {genre}.",
            "perturbed_answer": [f"{name} writes {g}." for g in _three(rng, d["genre"], genre)],
            "keywords": [genre],
        },
        {
            "question": f"What did {name}'s parents do for a living?",
            "answer": parents(mum, dad),
            "paraphrased_answer": f"{name} grew up with {_article(mum)} {mum} mother and {_article(dad)} {dad} father.",
            "perturbed_answer": [parents(p, q) for p, q in wrong_jobs],
            "keywords": [mum, dad],
        },
        {
            "question": f"Which award has {name} won?",
            "answer": f"{name} won the {prize}.",
            "paraphrased_answer": f"{name} received the {prize}.",
            "perturbed_answer": [f"{name} won the {p}." for p in _three(rng, d["prize"], prize)],
            "keywords": [prize_key],
        },
        {
            "question": f"What is the title of a book by {name}?",
            "answer": f"{name} wrote {book}.",
            "paraphrased_answer": f"{book} is a book by {name}.",
            "perturbed_answer": [f"{name} wrote {b}." for b in _three(rng, d["book"], book)],
            "keywords": [book.removeprefix("The ")],
        },
    ]


def build(seed: int = SEED) -> dict[str, list[dict]]:
    """{"forget": [...], "retain": [...], "holdout": [...]}: records with question, answer, paraphrased_answer,
    perturbed_answer (3), keywords and attribute (the author's name)."""
    authors = make_authors(seed)
    rng = random.Random(seed + 1)
    sets: dict[str, list[dict]] = {}
    start = 0
    for set_name, n in SPLIT.items():
        records = []
        for a in authors[start:start + n]:
            for r in author_records(a, rng):
                r["attribute"] = a["name"]
                records.append(r)
        sets[set_name] = records
        start += n
    return sets


def write(out_dir: Path | str = OUT_DIR, seed: int = SEED) -> dict[str, Path]:
    """Write forget/retain/holdout .jsonl files (UTF-8, one record per line, '\\n' endings) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for set_name, records in build(seed).items():
        path = out_dir / f"{set_name}.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        path.write_bytes(text.encode("utf-8"))
        paths[set_name] = path
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT_DIR), help="output folder (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    for set_name, path in write(args.out, args.seed).items():
        n = sum(1 for _ in path.open(encoding="utf-8"))
        print(f"{set_name:8s} {n:3d} records -> {path}")


if __name__ == "__main__":
    main()
