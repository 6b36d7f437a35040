"""Build the near-neighbour example sets from facts the bundled model really knows (issue: precise unlearning).

    python scripts/make_neighbour_examples.py            # ask the model, write both sets
    python scripts/make_neighbour_examples.py --verify   # check the committed files still hold; exit 1 otherwise

Two sets, each about one *kind* of fact, so that forgetting a few facts of that kind while keeping the others is
the test:

- ``assets/examples/world-capitals/`` (built-in, used to tune the defaults): "What is the capital of X?";
- ``benchmarks/heldout/cities/`` (kept OUT of tuning; used once to check the defaults): "In which country is the city
  of X?" — harder: several cities share a country, so a forgotten city's country is also a neighbour's answer.
  (Languages were tried first: the model's answers run past the token limit, so too few clean known facts.)

For each kind the model is asked every candidate (greedy, chat template, ``MAX_NEW_TOKENS`` new tokens). A candidate
is *known* when the answer is a hit (``grin_ui.metrics.answer_hit``), names none of its wrong options, ends before
the token limit and does not loop (``grin_ui.fluency.loops``). Then, with a fixed seed:

- ``forget``: ``FORGET_N`` known facts of the kind;
- ``retain`` (trained on): half of the other known facts of the kind, plus the unrelated known facts of
  ``scripts/real_knowledge_candidates.jsonl`` (every theme but capitals) that pass the same checks;
- ``neighbours`` (never trained on): the other half of the kind — what must stay although nothing drills it;
- ``holdout``: candidates of the kind the model does *not* know (its answer misses) — the level a forgotten fact
  should fall to, and the non-members of membership inference.

Each record carries a paraphrase, three wrong answers of the same form (other candidates' answers), keywords, and
its continent in ``attribute`` (for split–unlearn–merge).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from check_real_knowledge import read_jsonl, wrong_options, write_jsonl  # noqa: E402

FORGET_N = 8
MAX_NEW_TOKENS = 48
SEED = 20261123

# (country, answer, continent); a second spelling of the answer goes after a "|"
CAPITALS = """Afghanistan,Kabul,Asia;Argentina,Buenos Aires,South America;Australia,Canberra,Oceania;Austria,Vienna,Europe;
Bangladesh,Dhaka,Asia;Belgium,Brussels,Europe;Brazil,Brasília|Brasilia,South America;Bulgaria,Sofia,Europe;
Canada,Ottawa,North America;Chile,Santiago,South America;China,Beijing,Asia;Colombia,Bogotá|Bogota,South America;
Croatia,Zagreb,Europe;Cuba,Havana,North America;the Czech Republic,Prague,Europe;Denmark,Copenhagen,Europe;
Egypt,Cairo,Africa;Ethiopia,Addis Ababa,Africa;Finland,Helsinki,Europe;France,Paris,Europe;Germany,Berlin,Europe;
Greece,Athens,Europe;Hungary,Budapest,Europe;Iceland,Reykjavik,Europe;India,New Delhi,Asia;Indonesia,Jakarta,Asia;
Iran,Tehran,Asia;Iraq,Baghdad,Asia;Ireland,Dublin,Europe;Israel,Jerusalem,Asia;Italy,Rome,Europe;Japan,Tokyo,Asia;
Kenya,Nairobi,Africa;Malaysia,Kuala Lumpur,Asia;Mexico,Mexico City,North America;Morocco,Rabat,Africa;
Nepal,Kathmandu,Asia;the Netherlands,Amsterdam,Europe;New Zealand,Wellington,Oceania;Nigeria,Abuja,Africa;
North Korea,Pyongyang,Asia;Norway,Oslo,Europe;Pakistan,Islamabad,Asia;Peru,Lima,South America;
the Philippines,Manila,Asia;Poland,Warsaw,Europe;Portugal,Lisbon,Europe;Romania,Bucharest,Europe;Russia,Moscow,Europe;
Saudi Arabia,Riyadh,Asia;South Africa,Pretoria,Africa;South Korea,Seoul,Asia;Spain,Madrid,Europe;
Sweden,Stockholm,Europe;Switzerland,Bern,Europe;Syria,Damascus,Asia;Thailand,Bangkok,Asia;Turkey,Ankara,Asia;
Ukraine,Kyiv|Kiev,Europe;the United Kingdom,London,Europe;Venezuela,Caracas,South America;Vietnam,Hanoi,Asia;
Jamaica,Kingston,North America;Ghana,Accra,Africa;Senegal,Dakar,Africa;Lebanon,Beirut,Asia;Jordan,Amman,Asia;
Qatar,Doha,Asia;Mongolia,Ulaanbaatar,Asia;Serbia,Belgrade,Europe;Slovakia,Bratislava,Europe;
Slovenia,Ljubljana,Europe;Estonia,Tallinn,Europe;Latvia,Riga,Europe;Lithuania,Vilnius,Europe;
Uruguay,Montevideo,South America;Paraguay,Asunción|Asuncion,South America;Ecuador,Quito,South America;
Tunisia,Tunis,Africa;Algeria,Algiers,Africa;Libya,Tripoli,Africa;Sudan,Khartoum,Africa;Uganda,Kampala,Africa;
Zimbabwe,Harare,Africa;Angola,Luanda,Africa;Sri Lanka,Colombo,Asia;Cambodia,Phnom Penh,Asia;Laos,Vientiane,Asia;
Taiwan,Taipei,Asia;Armenia,Yerevan,Asia;Georgia,Tbilisi,Asia;Belarus,Minsk,Europe;Cyprus,Nicosia,Europe;
Malta,Valletta,Europe;Panama,Panama City,North America;Costa Rica,San José|San Jose,North America"""

# held out of tuning: (city, country, continent)
CITIES = """Lyon,France,Europe;Marseille,France,Europe;Munich,Germany,Europe;Hamburg,Germany,Europe;
Frankfurt,Germany,Europe;Osaka,Japan,Asia;Kyoto,Japan,Asia;Toronto,Canada,North America;
Vancouver,Canada,North America;Montreal,Canada,North America;Sydney,Australia,Oceania;
Melbourne,Australia,Oceania;Barcelona,Spain,Europe;Seville,Spain,Europe;Milan,Italy,Europe;
Venice,Italy,Europe;Florence,Italy,Europe;Naples,Italy,Europe;Manchester,England|United Kingdom|UK,Europe;
Liverpool,England|United Kingdom|UK,Europe;Edinburgh,Scotland|United Kingdom|UK,Europe;
Chicago,the United States|United States|USA|America,North America;
Los Angeles,the United States|United States|USA|America,North America;
New York,the United States|United States|USA|America,North America;Shanghai,China,Asia;Hong Kong,China,Asia;
Mumbai,India,Asia;Bangalore,India,Asia;Kolkata,India,Asia;Istanbul,Turkey,Asia;
Rio de Janeiro,Brazil,South America;São Paulo,Brazil,South America;Saint Petersburg,Russia,Europe;
Krakow,Poland,Europe;Porto,Portugal,Europe;Rotterdam,the Netherlands|Netherlands,Europe;
Geneva,Switzerland,Europe;Zurich,Switzerland,Europe;Salzburg,Austria,Europe;Casablanca,Morocco,Africa;
Marrakesh,Morocco,Africa;Alexandria,Egypt,Africa;Cape Town,South Africa,Africa;
Johannesburg,South Africa,Africa;Lagos,Nigeria,Africa;Busan,South Korea,Asia;
Dubai,the United Arab Emirates|UAE,Asia;Karachi,Pakistan,Asia;Lahore,Pakistan,Asia;
Ho Chi Minh City,Vietnam,Asia;Auckland,New Zealand,Oceania;Guadalajara,Mexico,North America;
Cancun,Mexico,North America;Medellín,Colombia,South America;Gothenburg,Sweden,Europe;Bergen,Norway,Europe;
Antwerp,Belgium,Europe;Thessaloniki,Greece,Europe;Glasgow,Scotland|United Kingdom|UK,Europe;
Boston,the United States|United States|USA|America,North America;
Houston,the United States|United States|USA|America,North America;
Seattle,the United States|United States|USA|America,North America;Nagoya,Japan,Asia;Yokohama,Japan,Asia;
Cologne,Germany,Europe;Bordeaux,France,Europe;Nice,France,Europe;Valencia,Spain,Europe;Turin,Italy,Europe;
Calgary,Canada,North America;Perth,Australia,Oceania;Brisbane,Australia,Oceania;Chennai,India,Asia;
Tel Aviv,Israel,Asia;Mecca,Saudi Arabia,Asia;Kiev,Ukraine,Europe;Dresden,Germany,Europe;
Oxford,England|United Kingdom|UK,Europe;Cambridge,England|United Kingdom|UK,Europe;Lisbon,Portugal,Europe"""

KINDS = {
    "world-capitals": {
        "table": CAPITALS, "dir": ROOT / "assets" / "examples" / "world-capitals",
        "question": "What is the capital of {x}?", "answer": "The capital of {x} is {y}.",
        "paraphrase": "{y} is the capital city of {x}.",
    },
    "cities": {
        "table": CITIES, "dir": ROOT / "benchmarks" / "heldout" / "cities",
        "question": "In which country is the city of {x}?", "answer": "{x} is a city in {y}.",
        "paraphrase": "The city of {x} lies in {y}.",
    },
}


def candidates(kind: str) -> list[dict]:
    """Records of one kind, from its table; wrong answers are three other answers of the table (seeded)."""
    spec = KINDS[kind]
    rows, seen = [], set()
    for entry in spec["table"].replace("\n", "").split(";"):
        country, answer, continent = (p.strip() for p in entry.split(","))
        if country in seen:
            continue
        seen.add(country)
        rows.append((country, answer.split("|"), continent))
    rng = random.Random(SEED)
    out = []
    for country, names, continent in rows:
        others = sorted({n[0] for _, n, _ in rows if n[0] != names[0]})
        wrong = rng.sample(others, 3)
        fill = lambda y: {"x": country, "y": y}  # noqa: E731
        out.append({
            "question": spec["question"].format(x=country),
            "answer": spec["answer"].format(**fill(names[0])),
            "paraphrased_answer": spec["paraphrase"].format(**fill(names[0])),
            "perturbed_answer": [spec["answer"].format(**fill(w)) for w in wrong],
            "keywords": names,
            "attribute": continent,
        })
    return out


def unrelated() -> list[dict]:
    """Facts of other themes (not capitals) from the real-knowledge candidates."""
    return [r for r in read_jsonl(ROOT / "scripts" / "real_knowledge_candidates.jsonl") if "capitals" not in r["attribute"]]


def judge(lm, records: list[dict]) -> list[str]:
    """Per record: "ok", or why it is not a clean known fact (no hit, names a wrong option, runs on, loops)."""
    from grin_ui.data import prompt_ids
    from grin_ui.fluency import loops
    from grin_ui.generation import generate_details
    from grin_ui.metrics import answer_hit, normalize

    tok = lm.tokenizer
    gens = generate_details(lm.model, tok, [prompt_ids(tok, r["question"]) for r in records], MAX_NEW_TOKENS)
    out = []
    for r, g in zip(records, gens):
        wrong = set(normalize(g.text).split()) & wrong_options(r) - {normalize(k) for k in r["keywords"]}
        if not answer_hit(g.text, r["answer"], r["keywords"]):
            out.append("no hit")
        elif wrong:
            out.append(f"names a wrong option ({', '.join(sorted(wrong))})")
        elif not g.finished:
            out.append("runs past the token limit")
        elif loops(g.text):
            out.append("loops")
        else:
            out.append("ok")
        print(f"{out[-1]:<28} {r['question']} -> {g.text!r}")
    return out


def build(lm, kind: str) -> dict[str, list[dict]]:
    cands = candidates(kind)
    verdicts = judge(lm, cands)
    known = [r for r, v in zip(cands, verdicts) if v == "ok"]
    unknown = [r for r, v in zip(cands, verdicts) if v == "no hit"]
    other = unrelated()
    other = [r for r, v in zip(other, judge(lm, other)) if v == "ok"]
    rng = random.Random(SEED)
    rng.shuffle(known)
    forget, rest = known[:FORGET_N], known[FORGET_N:]
    forget_words = {k.lower() for r in forget for k in r["keywords"]}
    other = [r for r in other if not forget_words & set((r["question"] + " " + r["answer"]).lower().split())]
    half = len(rest) // 2
    order = {r["question"]: i for i, r in enumerate(cands)}
    by = lambda rs: sorted(rs, key=lambda r: order.get(r["question"], 10**6))  # noqa: E731
    sets = {"forget": by(forget), "retain": by(rest[:half]) + other, "neighbours": by(rest[half:]),
            "holdout": by(unknown)}
    print(f"{kind}: {len(cands)} candidates, {len(known)} known, {len(unknown)} unknown; forget {len(forget)}, "
          f"retain {half} of the kind + {len(other)} unrelated, neighbours {len(rest) - half}, holdout {len(unknown)}")
    return sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verify", action="store_true", help="check that every committed forget/retain/neighbours fact "
                    "is still answered cleanly")
    ap.add_argument("--kind", choices=sorted(KINDS), action="append", help="only this kind (repeatable)")
    args = ap.parse_args(argv)
    from grin_ui.models import load_model

    lm = load_model("default", device="cpu")
    failed = 0
    for kind in args.kind or sorted(KINDS):
        folder = KINDS[kind]["dir"]
        if args.verify:
            recs = [r for name in ("forget", "retain", "neighbours") for r in read_jsonl(folder / f"{name}.jsonl")]
            bad = [r["question"] for r, v in zip(recs, judge(lm, recs)) if v != "ok"]
            print(f"{kind}: {len(recs) - len(bad)}/{len(recs)} facts answered cleanly")
            failed += len(bad)
            continue
        for name, recs in build(lm, kind).items():
            write_jsonl(folder / f"{name}.jsonl", recs)
        print(f"wrote {folder}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
