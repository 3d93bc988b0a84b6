"""The embedded default data set: small, deterministic, written for this project.

Fictional companies and people in financial-news-like prose; nothing is copied from a
public data set. `python -m finpipe.synth data/embedded` rewrites the shipped files
byte for byte (a test checks that), and `corpus_documents` also feeds the scale benchmark.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

COMPANIES = [
    "Norvik Holdings",
    "Castellan Bank",
    "Aurelia Mining",
    "Brightwater Energy",
    "Kestrel Logistics",
    "Halden Pharma",
    "Meridian Retail Group",
    "Solvane Chemicals",
    "Tamsin Capital",
    "Oriel Telecom",
    "Fenwick Steel",
    "Larchmont Insurance",
    "Quillon Software",
    "Redcliff Airways",
    "Sableport Shipping",
    "Veridian Foods",
    "Ashgrove Properties",
    "Corvallis Motors",
    "Delmore Utilities",
    "Elstree Media",
    "Galloway Semiconductors",
    "Harwick Brewing",
    "Ivorgate Asset Management",
    "Juniper Rail",
    "Kilbride Textiles",
]
PEOPLE = [
    "Maria Lindqvist",
    "David Okafor",
    "Chen Wei",
    "Sofia Marchetti",
    "James Whitfield",
    "Anika Rao",
    "Lars Holm",
    "Fatima Haddad",
    "Tomasz Nowak",
    "Elena Petrova",
    "Kenji Sato",
    "Grace Mensah",
    "Oliver Brandt",
    "Priya Natarajan",
    "Lucas Ferreira",
    "Hannah Kowalski",
    "Samuel Adeyemi",
    "Ingrid Dahl",
]
PLACES = [
    "London",
    "Frankfurt",
    "Singapore",
    "Toronto",
    "Sao Paulo",
    "Oslo",
    "Mumbai",
    "Chicago",
    "Zurich",
    "Sydney",
    "Johannesburg",
    "Seoul",
    "Madrid",
    "Dublin",
    "Houston",
    "Jakarta",
    "Warsaw",
    "Nairobi",
]
ROLES = ["chief executive", "chief financial officer", "chairman", "head of investor relations", "chief economist"]
PRODUCTS = ["copper", "jet fuel", "steel coil", "container freight", "wheat", "natural gas", "memory chips", "cement"]
QUARTERS = ["first-quarter", "second-quarter", "third-quarter", "fourth-quarter", "half-year", "full-year"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _money(rng: random.Random) -> str:
    return f"{rng.choice(['$', 'EUR ', 'GBP '])}{rng.randint(2, 950)}{rng.choice(['', '.5', '.2', '.8'])} {rng.choice(['million', 'billion'])}"


def _pct(rng: random.Random) -> str:
    return f"{rng.randint(1, 40)}.{rng.randint(0, 9)} percent"


def _document(rng: random.Random, n: int) -> dict[str, str]:
    co, other = rng.sample(COMPANIES, 2)
    person, analyst = rng.sample(PEOPLE, 2)
    place = rng.choice(PLACES)
    product = rng.choice(PRODUCTS)
    quarter = rng.choice(QUARTERS)
    up = rng.random() < 0.5
    move = "rose" if up else "fell"
    title = rng.choice(
        [
            f"{co} {'lifts' if up else 'cuts'} outlook after {quarter} results",
            f"{co} {move} as {product} prices {'firm' if up else 'slide'}",
            f"{co} in talks to {'buy' if up else 'sell'} unit to {other}",
            f"{co} shares {'climb' if up else 'drop'} in {place} trading",
        ]
    )
    opening = rng.choice(
        [
            f"{co} said on {rng.choice(MONTHS)} {rng.randint(1, 28)} that {quarter} net profit {move} {_pct(rng)} to {_money(rng)}.",
            f"{co}, the {place}-based group, reported {quarter} revenue of {_money(rng)}, {'ahead of' if up else 'short of'} forecasts.",
            f"Shares in {co} {move} {_pct(rng)} in early trading in {place} after the company updated its guidance.",
        ]
    )
    middle = [
        f"The company said demand for {product} {'strengthened' if up else 'weakened'} through the quarter.",
        f"Operating margin {'widened' if up else 'narrowed'} to {rng.randint(4, 31)}.{rng.randint(0, 9)} percent from {rng.randint(4, 31)}.{rng.randint(0, 9)} percent a year earlier.",
        f'"We {"saw solid" if up else "faced difficult"} conditions in our core markets," {person}, {rng.choice(ROLES)} of {co}, told reporters.',
        f"{co} {'raised' if up else 'lowered'} its dividend to {rng.randint(5, 95)} cents per share.",
        f"Net debt stood at {_money(rng)} at the end of {rng.choice(MONTHS)}.",
        f"The group also agreed to {'acquire' if up else 'divest'} a stake in {other} for {_money(rng)}.",
        f"{analyst}, an analyst at {rng.choice(COMPANIES)}, said the figures were {'better' if up else 'worse'} than the market had expected.",
        f"Sales in the U.S. {move} {_pct(rng)}, while Europe was {'broadly flat' if rng.random() < 0.5 else 'slightly weaker'}.",
        f"The company plans to {'hire' if up else 'cut'} about {rng.randint(2, 40) * 50} jobs over the next {rng.randint(2, 5)} years.",
        f"Capital spending is expected to reach {_money(rng)} this year, the company said.",
    ]
    rng.shuffle(middle)
    closing = rng.choice(
        [
            f"{co} will publish its next results in {rng.choice(MONTHS)}.",
            f"The stock has {'gained' if up else 'lost'} {_pct(rng)} since the start of the year.",
            f"{co} employs about {rng.randint(1, 90) * 1000} people in {rng.randint(3, 40)} countries.",
        ]
    )
    body = " ".join([opening, *middle[: rng.randint(2, 7)], closing])
    return {"id": f"N{n:05d}", "date": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", "title": title, "text": body}


def corpus_documents(n: int, seed: int = 7) -> Iterator[dict[str, str]]:
    """n synthetic news documents (4-10 sentences each); used by the benchmark too."""
    rng = random.Random(seed)
    for i in range(n):
        yield _document(rng, i)


_BRIEF = [
    "{co} named {person} as its new {role}. The appointment takes effect in {month}.",
    "{co} opened a regional office in {place}. The office will serve clients across the region. About {n} staff will work there.",
    "Trading in {co} shares was halted in {place} pending an announcement. The company said a statement would follow.",
]


def _blocks(rng: random.Random, templates: list[str], n: int, fields: dict[str, Callable[[random.Random], object]]) -> str:
    """n blank-line-separated documents: a template each, its fields drawn in the given order."""
    blocks = [rng.choice(templates).format(**{k: draw(rng) for k, draw in fields.items()}) for _ in range(n)]
    return "\n\n".join(blocks) + "\n"


def briefs(rng: random.Random, n: int) -> str:
    fields = {
        "co": lambda r: r.choice(COMPANIES),
        "person": lambda r: r.choice(PEOPLE),
        "role": lambda r: r.choice(ROLES),
        "month": lambda r: r.choice(MONTHS),
        "place": lambda r: r.choice(PLACES),
        "n": lambda r: r.randint(2, 60) * 10,
    }
    return _blocks(rng, _BRIEF, n, fields)


# General-domain prose (no finance): the replay text of continued pretraining (pretrain.data.
# replay_sources), standing in for the general corpus a base model was trained on
_GENERAL = [
    "The {team} won their home match {n} to {m} after a late goal. Fans stayed long after the final whistle.",
    "Heavy rain is expected across {region} this weekend. Forecasters advise travellers to allow extra time.",
    "The museum in {town} opened a new exhibition of {art}. It runs until the end of {month}.",
    "To bake the bread, mix the flour with warm water and leave the dough to rise for {n} minutes.",
    "A new hiking trail now links {town} with the lakes of {region}. The walk takes about {n} hours.",
    "The school choir from {town} sang at the spring festival. Parents filled every seat in the hall.",
    "Volunteers planted {n}0 trees along the river in {town} on Saturday morning.",
    "The library in {town} will stay open late on Thursdays. Children's reading hours start at {n}.",
    "Scientists observed a rare bird in the wetlands of {region}. It was last seen there {n} years ago.",
    "The {team} coach praised the young players after a difficult season.",
]
_TEAMS = ["Riverside Rovers", "Hillcrest United", "the Harbour Hawks", "Northfield Athletic"]
_REGIONS = ["the northern valleys", "the coast", "the highlands", "the eastern plains"]
_TOWNS = ["Ashby", "Brookmere", "Calder", "Dunmore", "Elmstead", "Fairlight"]
_ART = ["watercolour landscapes", "medieval maps", "early photographs", "folk costumes"]


def general_text(rng: random.Random, n: int) -> str:
    """n blank-line-separated general-domain documents."""
    fields = {
        "team": lambda r: r.choice(_TEAMS),
        "region": lambda r: r.choice(_REGIONS),
        "town": lambda r: r.choice(_TOWNS),
        "art": lambda r: r.choice(_ART),
        "month": lambda r: r.choice(MONTHS),
        "n": lambda r: r.randint(2, 9),
        "m": lambda r: r.randint(0, 1),
    }
    return _blocks(rng, _GENERAL, n, fields)


# (low, high) score ranges and event phrases; classes follow the default thresholds
_EVENTS = {
    (0.6, 0.95): [
        "posts record quarterly profit",
        "raises full-year guidance sharply",
        "beats profit forecasts by a wide margin",
        "shares surge after upbeat outlook",
        "wins its largest contract ever",
        "doubles its dividend",
    ],
    (0.12, 0.45): [
        "reports modest rise in sales",
        "nudges up its revenue forecast",
        "wins small supply contract",
        "sees slight improvement in margins",
        "edges ahead of market expectations",
        "adds a few new customers",
    ],
    (-0.04, 0.04): [
        "to publish results on Thursday",
        "appoints new chief financial officer",
        "holds annual meeting",
        "completes previously announced share buyback",
        "moves headquarters within the city",
        "confirms board composition",
    ],
    (-0.45, -0.12): [
        "reports small dip in sales",
        "trims its outlook slightly",
        "faces minor delays at plant",
        "misses forecasts by a narrow margin",
        "sees margins ease a little",
        "loses a small customer",
    ],
    (-0.95, -0.6): [
        "swings to heavy loss",
        "cuts guidance as demand collapses",
        "shares plunge after profit warning",
        "announces thousands of job cuts",
        "suspends its dividend",
        "faces fraud investigation",
    ],
}
_TAILS = [
    "",
    " in {place}",
    " amid weak {product} market",
    " as {product} prices shift",
    " in {quarter} update",
    " despite currency swings",
]


def sentiment_rows(rng: random.Random, n: int) -> list[dict[str, str]]:
    rows, seen = [], set()
    ranges = list(_EVENTS)
    while len(rows) < n:
        lo, hi = rng.choice(ranges)
        text = f"{rng.choice(COMPANIES)} {rng.choice(_EVENTS[(lo, hi)])}" + rng.choice(_TAILS).format(
            place=rng.choice(PLACES), product=rng.choice(PRODUCTS), quarter=rng.choice(QUARTERS)
        )
        if text in seen:
            continue
        seen.add(text)
        rows.append({"id": f"S{len(rows):04d}", "text": text, "score": f"{rng.uniform(lo, hi):.3f}"})
    return rows


_NER_TEMPLATES = [
    "{PER} , {role} of {ORG} , said the company would expand in {LOC} .",
    "{ORG} agreed to buy a stake in {ORG} for {money} .",
    "Shares of {ORG} rose in {LOC} after {PER} outlined the new strategy .",
    "{PER} will replace {PER} as {role} of {ORG} in {month} .",
    "The {LOC} office of {ORG} reported higher fees .",
    "Regulators in {LOC} fined {ORG} over disclosure failures .",
    "{ORG} opened a plant near {LOC} employing about {n} people .",
    "Analysts at {ORG} said {PER} had little room to raise prices .",
    "Demand for {product} in {LOC} slowed during the {quarter} period .",
    "{PER} told investors in {LOC} that {ORG} expects stable margins .",
]


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+(?:[.'-]\w+)*|[^\w\s]", text)


def ner_sentences(rng: random.Random, n_docs: int) -> list[list[tuple[str, str]]]:
    docs = []
    seen: set[tuple[str, ...]] = set()
    for _ in range(n_docs):
        sents = []
        for _ in range(rng.randint(5, 12)):
            tagged: list[tuple[str, str]] = []
            for piece in rng.choice(_NER_TEMPLATES).split(" "):
                etype = piece[1:-1] if piece in ("{PER}", "{ORG}", "{LOC}") else None
                if etype:
                    name = rng.choice({"PER": PEOPLE, "ORG": COMPANIES, "LOC": PLACES}[etype])
                    for j, tok in enumerate(_tokens(name)):
                        tagged.append((tok, f"{'B' if j == 0 else 'I'}-{etype}"))
                else:
                    filled = piece.format(
                        role=rng.choice(ROLES),
                        money=_money(rng),
                        month=rng.choice(MONTHS),
                        n=rng.randint(2, 90) * 100,
                        product=rng.choice(PRODUCTS),
                        quarter=rng.choice(QUARTERS),
                    )
                    tagged.extend((tok, "O") for tok in _tokens(filled))
            key = tuple(tok for tok, _ in tagged)
            if key not in seen:  # a repeated sentence would leak across splits
                seen.add(key)
                sents.append(tagged)
        docs.append(sents)
    return docs


def write_embedded(out: Path, seed: int = 2026) -> None:
    rng = random.Random(seed)
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    (out / "sentiment").mkdir(parents=True, exist_ok=True)
    (out / "ner").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus" / "news.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for doc in corpus_documents(320, seed=seed):
            fh.write(json.dumps({**doc, "source": "newswire"}, ensure_ascii=False) + "\n")
    (out / "corpus" / "briefs.txt").write_text(briefs(rng, 60), encoding="utf-8", newline="\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["id", "text", "score"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(sentiment_rows(rng, 900))
    (out / "sentiment" / "headlines.csv").write_text(buf.getvalue(), encoding="utf-8", newline="\n")
    lines = []
    for doc in ner_sentences(rng, 70):
        lines += ["-DOCSTART- O", ""]
        for sent in doc:
            lines += [f"{tok} {tag}" for tok, tag in sent] + [""]
    (out / "ner" / "news.conll").write_text("\n".join(lines), encoding="utf-8", newline="\n")
    # its own generator: the files above stay as they were before it existed
    general = general_text(random.Random(seed + 1), 80)
    (out / "corpus" / "general.txt").write_text(general, encoding="utf-8", newline="\n")


if __name__ == "__main__":
    write_embedded(Path(sys.argv[1] if len(sys.argv) > 1 else "data/embedded"))
