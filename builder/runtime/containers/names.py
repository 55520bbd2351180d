"""Container IDs (64 hex digits, 12 shown) and Docker-style random names (``adjective_surname``).

Pure functions: the caller checks uniqueness under the containers lock.
"""

from __future__ import annotations

import os
import re

ADJECTIVES = (
    "admiring", "adoring", "affectionate", "agitated", "amazing", "angry", "awesome", "beautiful",
    "blissful", "bold", "boring", "brave", "busy", "charming", "clever", "compassionate",
    "competent", "condescending", "confident", "cool", "cranky", "crazy", "dazzling", "determined",
    "distracted", "dreamy", "eager", "ecstatic", "elastic", "elated", "elegant", "eloquent",
    "epic", "exciting", "fervent", "festive", "flamboyant", "focused", "friendly", "frosty",
    "funny", "gallant", "gifted", "goofy", "gracious", "great", "happy", "hardcore", "heuristic",
    "hopeful", "hungry", "infallible", "inspiring", "intelligent", "interesting", "jolly",
    "jovial", "keen", "kind", "laughing", "loving", "lucid", "magical", "modest", "musing",
    "mystifying", "naughty", "nervous", "nice", "nifty", "nostalgic", "objective", "optimistic",
    "peaceful", "pedantic", "pensive", "practical", "priceless", "quirky", "quizzical",
    "recursing", "relaxed", "reverent", "romantic", "sad", "serene", "sharp", "silly", "sleepy",
    "stoic", "strange", "stupefied", "suspicious", "sweet", "tender", "thirsty", "trusting",
    "unruffled", "upbeat", "vibrant", "vigilant", "vigorous", "wizardly", "wonderful",
    "xenodochial", "youthful", "zealous", "zen",
)

# Scientists, engineers and mathematicians, as Docker's generator uses.
SURNAMES = (
    "agnesi", "albattani", "allen", "archimedes", "babbage", "banach", "bardeen", "bartik",
    "bell", "bhabha", "blackwell", "bohr", "booth", "borg", "bose", "boyd", "brahmagupta",
    "brattain", "brown", "burnell", "cannon", "carson", "cartwright", "cerf", "chandrasekhar",
    "chatelet", "clarke", "cohen", "curie", "darwin", "davinci", "diffie", "dijkstra", "dirac",
    "driscoll", "dubinsky", "easley", "einstein", "elbakyan", "elion", "engelbart", "euclid",
    "euler", "faraday", "fermat", "fermi", "feynman", "franklin", "galileo", "gates", "goldberg",
    "goldstine", "goldwasser", "goodall", "hamilton", "hawking", "heisenberg", "hellman",
    "hermann", "hertz", "hodgkin", "hofstadter", "hopper", "hypatia", "jackson", "jang",
    "jennings", "johnson", "joliot", "kalam", "kepler", "khorana", "kilby", "knuth", "kowalevski",
    "lalande", "lamarr", "lamport", "leakey", "leavitt", "lehmann", "lewin", "lichterman",
    "liskov", "lovelace", "lumiere", "mahavira", "margulis", "matsumoto", "maxwell", "mayer",
    "mccarthy", "mcclintock", "meitner", "mendel", "mendeleev", "merkle", "mirzakhani", "moore",
    "morse", "napier", "nash", "neumann", "newton", "nobel", "noether", "noyce", "ohm", "pascal",
    "pasteur", "payne", "perlman", "pike", "poincare", "ptolemy", "raman", "ramanujan", "ride",
    "ritchie", "rosalind", "saha", "sammet", "shannon", "shockley", "sinoussi", "snyder",
    "spence", "stonebraker", "swanson", "swirles", "tesla", "thompson", "torvalds", "turing",
    "varahamihira", "villani", "volhard", "wescoff", "wiles", "williams", "wilson", "wing",
    "wozniak", "wright", "yalow", "yonath",
)

#: Docker's rule for user-given names: ``[a-zA-Z0-9][a-zA-Z0-9_.-]+`` (compiled on first use, by
#: re's cache: ``ps`` checks no name)
NAME_RE = r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$"
_HEX = "0123456789abcdef"


def _below(n: int) -> int:
    # os.urandom rather than `secrets`: the latter pulls hashlib/openssl into every `run`
    return int.from_bytes(os.urandom(4), "big") % n


def new_id() -> str:
    """A random 64-hex ID whose 12-char short form is not all digits (Docker avoids those too)."""
    while True:
        cid = os.urandom(32).hex()
        if not cid[:12].isdigit():
            return cid


def random_name(attempt: int = 0) -> str:
    """``adjective_surname``; after a collision, Docker appends a digit: ``adjective_surname3``."""
    name = f"{ADJECTIVES[_below(len(ADJECTIVES))]}_{SURNAMES[_below(len(SURNAMES))]}"
    # "boring_wozniak" is not boring: Docker avoids it, and so do we
    if name == "boring_wozniak":
        return random_name(attempt)
    return f"{name}{_below(10)}" if attempt else name


def valid_name(name: str) -> bool:
    return re.match(NAME_RE, name) is not None


def is_id(text: str) -> bool:
    """64 lowercase hex digits: a container ID (the containers directory's records)."""
    return len(text) == 64 and not text.strip(_HEX)


def short_id(cid: str) -> str:
    return cid[:12]
