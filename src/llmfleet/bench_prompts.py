"""Prompts for `llmfleet bench`: distinct on every request, of an exact number of tokens.

A fixed prompt measures llama-server's prompt cache, not the model: the second request
finds the whole prompt in the slot's cache and its TTFT is one token's time. So each
request gets its own text: words drawn from `WORDS` by ``random.Random("llmfleet-bench:
<seed>:<index>")`` (string seeds are hashed with SHA-512, so the text is the same on every
machine and Python version that keeps `random`'s documented reproducibility), and cut to
exactly the asked number of tokens by the server's own tokenizer (``POST /tokenize``).

`exact_prompt` is pure but for the tokenizer it is given, a function from text to the
text of each token (llama-server's ``with_pieces``). The count is the user message's own
tokens, without special tokens; the chat template adds its tokens around it (the response's
``usage.prompt_tokens`` says how many in all).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

#: Common English words; ASCII, so every token piece is valid UTF-8 on its own.
_WORDS_TEXT = """
    able about above across act add after again against age ago agree air all almost alone
    along already also always among amount and animal answer any appear apply area argue arm
    around arrive art ask attack author away back bad ball bank base bear beat beautiful bed
    before begin behind believe best better between big bill bird black blood blue board
    body book born both box boy break bring brother build building business buy call camera
    card care carry case catch cause cell center central century certain chair chance change
    charge check child choice choose church city claim class clear close coach cold color
    come common community company compare computer concern condition consider contain
    continue control cost could country couple course court cover create crime cultural cup
    current customer cut dark data daughter day dead deal death debate decade decide deep
    defense degree describe design detail develop device die difference dinner direction
    discover discuss disease doctor door down draw dream drive drop during each early east
    easy eat economy edge effect effort eight either election else employee end energy enjoy
    enough enter entire environment evening event every evidence exactly example expect
    experience expert explain face fact factor fail fall family far fast father fear federal
    feel field fight figure fill film final find fine finger finish fire firm first fish five
    floor fly focus follow food foot force forget form forward four free friend front full
    fund future game garden gas general generation girl give glass goal good green ground
    group grow growth guess gun hair half hand hang happen happy hard head health hear heart
    heat heavy help here high history hold home hope hospital hot hotel hour house however
    huge human hundred husband idea image imagine impact include increase indeed industry
    inside instead interest interview into investment island issue item itself job join
    just keep key kid kind kitchen know land language large last late later laugh law lawyer
    lay lead leader learn least leave left leg legal less letter level lie life light like
    line list listen little live local long look lose loss lot love low machine magazine
    main maintain major make manage manager many market marriage material matter may maybe
    measure media medical meet meeting member memory mention message method middle might
    military million mind minute miss mission model modern moment money month more morning
    most mother mouth move movie much music must myself name nation natural nature near
    nearly necessary need network never news newspaper next nice night none north note
    nothing notice number occur offer office officer often oil old once only open operation
    option order organization other outside owner page pain painting paper parent part
    party pass past patient pattern pay peace people perform period person phone physical
    pick picture piece place plan plant play player point police policy political poor
    popular position positive power practice prepare present pressure pretty prevent price
    private probably problem process produce product program project property protect prove
    provide public pull purpose push quality question quickly quite race radio raise range
    rate rather reach read ready real reason receive recent record red reduce region remain
    remember report represent require research resource respond rest result return reveal
    rich right rise risk river road rock role room rule run safe same save scene school
    science score sea season seat second section security seek sell send sense series
    serious serve service seven several shake share shoot short shoulder show side sign
    simple since sing single sister sit site situation six size skill skin small smile
    social society soldier some song soon sort sound source south space speak special
    specific speech spend sport spring staff stage stand standard star start state station
    stay step still stock stop store story strategy street strong student study stuff style
    subject success suddenly summer support sure surface system table take talk task tax
    teach teacher team technology television tell ten tend term test thank theory thing
    think third thousand three through throw time today together tonight total tough toward
    town trade traditional training travel treat tree trial trip trouble true truth try turn
    type under understand unit until upon use usually value various very victim view visit
    voice vote wait walk wall want watch water wave weapon wear weather week weight west
    western whatever whole wide wife will win window wish within without woman wonder word
    work worker world worry write writer wrong yard yeah year young yourself
"""
WORDS = tuple(_WORDS_TEXT.split())
#: How many times `exact_prompt` re-tokenizes one cut, and how many texts it draws.
ATTEMPTS = 8
DRAWS = 4

Tokenizer = Callable[[str], Sequence[str]]


class PromptError(Exception):
    """No text of exactly the asked number of tokens could be made."""


def word_text(seed: int, index: int, words: int, draw: int = 0) -> str:
    """`words` words drawn for request `index` of a run with `seed`: the same every time.
    `draw` > 0 draws another text for the same request (when a cut cannot be exact)."""
    rng = random.Random(f"llmfleet-bench:{seed}:{index}" + (f":{draw}" if draw else ""))
    return " ".join(rng.choice(WORDS) for _ in range(words))


def exact_prompt(tokenize: Tokenizer, seed: int, index: int, tokens: int) -> str:
    """The text of request `index`, cut to exactly `tokens` tokens of `tokenize`.

    Draws at least `tokens` words (each word is a token or more), keeps the text of the
    first `tokens` token pieces, and tokenizes that again: a cut inside a word can tokenize
    differently, so the number of pieces kept moves by the difference until the count is
    exact (at most `ATTEMPTS` tries). When no cut of that text is exact, another text is
    drawn for the request (at most `DRAWS` in all), then PromptError.
    """
    if tokens < 1:
        raise ValueError(f"a prompt needs 1 token or more, not {tokens}")
    found: list[str] = []
    for draw in range(DRAWS):
        words = tokens
        pieces = list(tokenize(word_text(seed, index, words, draw)))
        while len(pieces) < tokens:  # a tokenizer that merges words: draw more of them
            words *= 2
            pieces = list(tokenize(word_text(seed, index, words, draw)))
        text, seen = _cut(tokenize, pieces, tokens)
        if text is not None:
            return text
        found.extend(f"{count} from {kept} pieces" for kept, count in sorted(seen.items()))
    raise PromptError(
        f"could not cut prompt {index} (seed {seed}) to exactly {tokens} tokens in "
        f"{DRAWS} texts (the server's tokenizer gave {', '.join(found)}); "
        "try another --input-tokens or --seed"
    )


def _cut(
    tokenize: Tokenizer, pieces: Sequence[str], tokens: int
) -> tuple[str | None, dict[int, int]]:
    """The text of the first pieces that tokenizes to exactly `tokens`, or None, and the
    counts seen per number of pieces kept."""
    keep = tokens
    seen: dict[int, int] = {}
    for _ in range(ATTEMPTS):
        text = "".join(pieces[:keep]).lstrip()
        count = len(tokenize(text))
        if count == tokens:
            return text, seen
        seen[keep] = count
        keep = min(max(keep + tokens - count, 1), len(pieces))
        if keep in seen:  # back and forth between two cuts
            break
    return None, seen
