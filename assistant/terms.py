"""Search terms: how a text becomes the words that keyword search (BM25) and evidence selection
match on. One definition for both, so a sentence picked as evidence matches the question the
same way its chunk did."""

from __future__ import annotations

import re

# Small English stop list: BM25's idf already discounts common words, but dropping these keeps
# "what is the ..." from matching every chunk a little.
STOPWORDS = frozenset(
    """
a an and are as at be been but by can could did do does doing for from had has have how i if in
into is it its me my of on or our please should so than that the their them then there these
they this to was we were what when where which who whom why will with would you your yours
""".split()
)

_TOKEN = re.compile(r"[\w€$£]+(?:[.,'’-]\w+)*", re.UNICODE)


def _stem(word: str) -> str:
    """A very light plural/possessive folding ("tyres" -> "tyre", "bike's" -> "bike"), enough
    for questions and documents that use the other number; no full stemmer needed."""
    for suffix in ("'s", "’s"):
        if word.endswith(suffix):
            word = word[: -len(suffix)]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    out = []
    for tok in _TOKEN.findall(text.lower()):
        tok = tok.strip("'’-.,€$£")
        if not tok or tok in STOPWORDS:
            continue
        out.append(_stem(tok))
        # "€1,349" / "14.6" / "lb-w1": also index the plain parts so "1349" or "w1" match
        if re.search(r"[.,'’€$£-]", tok):
            out += [_stem(p) for p in re.split(r"[.,'’€$£-]+", tok) if p and p not in STOPWORDS]
    return out
