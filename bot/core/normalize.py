"""Text normalisation for the matcher (core, no I/O).

Both the example library (once, at load) and every user message go through
:func:`normalize`, so scorers can run with no processor. Steps:

1. cap the input (only the first :data:`MAX_CHARS` characters are looked at),
   Unicode NFKC, lower case, control characters removed;
2. joins and protected phrases: "back up" -> "backup", "i cloud" -> "icloud",
   "wi-fi" -> "wifi", "apple id" -> "appleid", "dr.fone" -> "drfone",
   "iphone 12 pro max" -> "iphone", "ios 17.4" -> "ios", sizes ("5GB", "5 gigs"
   -> "5 gb"), "50%" -> "50 %";
3. apostrophes dropped ("won't" -> "wont"), other punctuation -> spaces (``%`` kept);
4. per token: explicit misspelling fixes ("icoud", "bakup"...), synonyms
   (phone/ipad -> iphone, pics -> photos, laptop/pc/mac -> computer,
   pin/code -> passcode), and a fuzzy fix towards a small DOMAIN vocabulary only
   (never towards general English: that turned "black" into "back").

Never raises on any ``str``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

from rapidfuzz import process
from rapidfuzz.distance import OSA

MAX_CHARS = 600  # only this much of a message is normalised and scored


def _table(text: str) -> dict[str, str]:
    """Parse ``target: variant variant ...`` lines into {variant: target} ("_" = space)."""
    out: dict[str, str] = {}
    for line in text.strip().splitlines():
        target, _, variants = line.partition(":")
        for variant in variants.split():
            out[variant] = target.strip().replace("_", " ")
    return out


# Words the fuzzy fixer may correct towards (already normalised forms).
DOMAIN_TERMS: frozenset[str] = frozenset(
    """
    icloud backup iphone restore restoring restored storage passcode password
    settings itunes estimating remaining frozen failed failing deleted recover
    recovery photos messages whatsapp contacts verification authentication
    appleid unavailable disabled lockout computer encrypted encryption
    subscription professional representative notification automatic
    automatically manually network connection internet cellular damaged
    transfer transferring overwritten recently software icloud
    """.split()
)

# Correct, common words that must never be "fixed" (close to a domain term).
_COMMON: frozenset[str] = frozenset(
    """
    restart restarts restarted reset resets resort stored store stores storing
    story clouds cloud black back lack pack packed fail fails faile backs
    stick struck stock stack truck luck back block lock locks looked looking
    lost last list cost post most host phone photo photon person persons
    prison present recent decent remains remain remained remember reminder
    account accounts count counts complete compete computed compute
    deleted delete deletes plan plane planes plans planet price prize pride
    enough though through rough tough water later letter latter wafer
    screen scream screens green damage manage managed manager message massage
    passcode passed past paste pasta password passwords passport
    upgrade upgrades upgraded grade update updates dated date
    human humor agent urgent agents event person prison persons
    server served serve severe service services setting sitting settle
    broken brokers spoken token taken woken frozen dozen chosen
    failed filed fixed faded mailed nailed sailed
    finder finger find kinder binder detected depleted connecting connected
    cracked charged checked backed arent isnt wasnt werent dont doesnt didnt cant
    wont wouldnt couldnt shouldnt havent hasnt hadnt youre theyre thats whats
    photon photog network networks internal interest restored restores
    """.split()
)

_MISSPELLINGS: dict[str, str] = _table(
    """
    icloud: icoud iclod iclould icluod icould iclpud iclous icloude icoloud iclaud icl icloid
    icloud: icliud iclouds iclo icloudd
    backup: bakup backp bakcup backuo bacup backuup backkup baclup bckup bkup backupp backups
    backup: bakups backupd backuped backupped bacups backuping
    iphone: iphnoe ipohne iphon ipone iphoen iphne iphonr ihpone iphoe ifone iphones phone
    iphone: phones fone cellphone smartphone ipad ipads ipod iphone's phon pone phnoe hpone
    restore: restor resotre restroe retsore restoe resore
    restoring: restoreing resoring restring restorng
    storage: storge storgae stroage sotrage storag strorage
    full: ful fulll fuul
    space: spcae spase
    passcode: pin pincode passcodes pascode passocde passcod
    password: pw pwd pasword passowrd passwrd passward pssword
    photos: pics pic pix pictures picture photo foto fotos images image phots photoes
    videos: vids video vid
    computer: laptop laptops pc pcs mac macbook macbooks imac desktop computers notebook compter
    computer: comupter computor
    itunes: itune i-tunes itunez
    wifi: wify wlan wfi wif wiif
    ios: ipados ios's
    app: apps application applications
    messages: texts sms imessages msgs
    message: msg
    settings: settigns setings setting
    gb: gigs gig gigabytes gigabyte gbs
    tb: terabytes terabyte tbs
    mb: megabytes megabyte mbs
    kb: kilobytes kilobyte kbs
    0: zero
    %: percent pct
    cant: cannot couldnt unable
    wont: wouldnt wont't
    please: pls plz pleas
    you: u
    your: ur
    are: r
    because: cuz coz bc becuase becasue
    thanks: thx thanx ty tnx thnx
    deleted: deleated delted deletd
    recover: recovr receover
    recovered: recoverd
    stuck: stcuk stuk
    failed: faild faled
    fails: failes
    verification: verfication verifcation
    authentication: autentication authentification
    doesnt: doesent doesn
    didnt: didn
    isnt: isn
    hasnt: hasn
    havent: haven
    wasnt: wasn
    arent: aren
    shouldnt: shouldn
    the: teh
    anymore: anymroe amymore
    now: noe nw
    """
)

STOPWORDS: frozenset[str] = frozenset(
    """
    i me my mine myself we us our ours you your yours he him his she her they them
    their it its a an the and or but so to of in on at for with from by about as
    into is are was were be been being am do does did doing have has had having
    this that these those there here just very really also too then than
    im ive id ill youre thats theres whats its it's hey hi hello please pls thanks
    thank guys help ugh lol omg wtf hmm ok okay yeah yes well oh any some
    """.split()
)

_CONTROL = re.compile(r"[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`\u00b4]")
_NON_WORD = re.compile(r"[^\w%]+")
_UNDERSCORE = re.compile(r"_+")

# (pattern, replacement) applied in order on the lower-cased text, before punctuation.
_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"\bdr\.?\s*-?\s*fone\b", " drfone "),
        (r"\bi\s*-?\s*cloud\s*\+", " icloud plus "),
        (r"\bi\s*-\s*cloud\b|\bi\s+cloud\b", " icloud "),
        (r"\bi\s*-?\s*tunes\b", " itunes "),
        (r"\bi\s*-\s*phone\b|\bi\s+phone\b", " iphone "),
        (r"\bi\s*-\s*pad\b|\bi\s+pad\b", " ipad "),
        (r"\bwi\s*-?\s*fi\b", " wifi "),
        (r"\bapple\s*-?\s*ids?\b", " appleid "),
        (r"\bface\s*-?\s*id\b", " faceid "),
        (r"\btouch\s*-?\s*id\b", " touchid "),
        (r"\b(?:ios|ipados)\s*v?\d+(?:\.\d+)*\b", " ios "),
        (r"\b(?:back(?:ing|ed|s)?|bak|bac)\s*-?\s*up(?:s|ped|ping)?\b", " backup "),
        (
            r"\b(\d+(?:[.,]\d+)?)\s*(gb|gig|gigs|gbs|gigabytes?|tb|tbs|terabytes?|mb|mbs|"
            r"megabytes?|kb|kbs|kilobytes?|bytes?)\b",
            r" \1 \2 ",
        ),
        (r"(\d)\s*%", r"\1 % "),
        (r"\b3\s*-\s*2\s*-\s*1\b", " 321 "),
        (r"\b(?:2|two)\s*-?\s*(?:fa|factor|step)\b", " 2fa "),
        (r"\bverification\s+code", " verification vcode"),
        (
            r"\b(?:security|access|confirmation|login|sms|6 digit|six digit|text)\s+code",
            " verification vcode",
        ),
        (r"\berror\s+code", " error ecode"),
        (r"\bcan\s+not\b", " cant "),
    )
)

# A few other-language domain words (accents already stripped) -> English, so a
# German or Spanish complaint still hits the English anchors. Phrases first.
_FOREIGN_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(r"\b" + p + r"\b"), " " + r + " ")
    for p, r in (
        ("copias? de seguridad", "backup"),
        ("copias? de seguranca", "backup"),
        ("mot de passe", "password"),
        ("no (?:prende|enciende|arranca)", "wont turn on"),
        ("nao liga", "wont turn on"),
        ("ne s allume (?:pas|plus)", "wont turn on"),
        ("(?:geht|springt) nicht (?:mehr )?an", "wont turn on"),
        ("startet nicht", "wont start"),
        ("wie viel", "how much"),
        ("wieviel", "how much"),
        ("nicht genug", "not enough"),
        ("no hay suficiente", "not enough"),
        ("pas assez", "not enough"),
        ("quanto costa", "how much cost"),
        ("(?:cuanto|quanto) (?:cuesta|custa)", "how much cost"),
        ("combien coute", "how much cost"),
        ("geht nicht", "not working"),
        ("funktioniert nicht", "not working"),
        ("no funciona", "not working"),
        ("ne marche pas", "not working"),
        ("apple[- ]?id", "appleid"),
    )
)
_FOREIGN_ANY = re.compile("|".join(f"(?:{p.pattern})" for p, _ in _FOREIGN_PHRASES))
# cheap pre-check for ASCII text: a word that starts one of the phrases above
_FOREIGN_HINT = re.compile(
    r"\b(?:copia|mot|no|nao|ne|geht|springt|startet|wie|wieviel|nicht|pas|quanto|cuanto"
    r"|combien|funktioniert|apple)"
)


def _foreign_repl(m: re.Match[str]) -> str:
    found = m.group(0)
    for pattern, repl in _FOREIGN_PHRASES:
        if pattern.fullmatch(found):
            return repl
    return found  # pragma: no cover


_FOREIGN: dict[str, str] = _table(
    """
    backup: sicherung datensicherung gesichert sichern respaldo sauvegarde sauvegarder
    full: voll lleno llena plein pleine pieno cheio
    storage: speicher speicherplatz almacenamiento stockage archiviazione armazenamento
    space: espacio espace spazio espaco platz
    enough: genug suficiente
    failed: fehlgeschlagen fallo fallido fallida echoue echec fallito falhou
    error: fehler
    stuck: hangt atascado atascada congelado bloque bloquee bloccato travado
    %: prozent porciento
    restore: wiederherstellen wiederherstellung restaurar restaurer restauration ripristino
    restore: ripristinare
    recover: recuperar recuperer recuperare retten
    deleted: geloscht borradas borrados borrado borrada eliminadas eliminados eliminado supprime
    deleted: supprimees supprimes cancellate apagadas apagados
    delete: loschen
    iphone: handy telefono movil celular telephone
    water: wasser agua eau acqua
    broken: kaputt roto rota casse rotto quebrado
    photos: bilder
    dropped: gefallen cayo
    passcode: codigo
    password: passwort kennwort contrasena senha
    forgot: vergessen olvide olvidado oublie esqueci
    locked: gesperrt bloqueado verrouille
    disabled: deaktiviert desactivado desactive
    cost: kosten kostet cuesta costo cout costa custa
    price: preis precio prix
    quote: angebot kostenvoranschlag presupuesto devis preventivo orcamento
    data_recovery: datenrettung
    human: mensch humano
    agent: mitarbeiter
    person: persona personne
    weeks: wochen semanas semaines
    week: woche
    month: monat
    months: monaten monate meses mois
    automatic: automatisch automatica automatico automatique
    last: letzte ultima ultimo
    not: nicht
    no: kein keine
    how: wie como
    avoid: vermeiden evitar eviter
    data_loss: datenverlust
    slow: langsam lento
    network: netzwerk
    connection: verbindung conexion
    free: liberar liberer freigeben
    help: ayuda hilfe
    """
)

_MODEL_TOKENS = frozenset(
    "pro max mini plus air se xr xs x s c e 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17".split()
)
_MODEL_RE = re.compile(r"^(?:\d{1,2}(?:s|c|e|pro|max|plus|mini)?|x[rs]?|se\d?|pro|max|mini|plus)$")


def _strip_accents(text: str) -> str:
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _fold(text: str) -> str:
    """Cap, NFKC, lower case, strip controls, accents and apostrophes, apply phrase joins."""
    text = text[:MAX_CHARS]
    text = unicodedata.normalize("NFKC", text).lower()
    text = _CONTROL.sub(" ", text)
    text = _strip_accents(text)
    if not text.isascii() or _FOREIGN_HINT.search(text):
        text = _FOREIGN_ANY.sub(_foreign_repl, text)
    text = _APOSTROPHES.sub("", text)
    for pattern, repl in _PHRASES:
        text = pattern.sub(repl, text)
    text = _NON_WORD.sub(" ", text)
    return _UNDERSCORE.sub(" ", text)


@lru_cache(maxsize=20000)
def _fuzzy_fix(token: str) -> str:
    """Correct an unknown token towards a domain term, or return it unchanged."""
    n = len(token)
    if n < 5 or n > 20 or not token.isalpha() or not token.isascii():
        return token
    max_dist = 1 if n < 9 else 2
    hit = process.extractOne(token, DOMAIN_TERMS, scorer=OSA.distance, score_cutoff=max_dist)
    if hit is None:
        return token
    target = hit[0]
    if target[0] != token[0]:  # typos rarely hit the first letter; this avoids
        return token  # "cracked" -> "backed" style accidents
    return target


class Normalizer:
    """Normalises text; ``known`` words are never fuzzily corrected."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._known = set(_COMMON) | set(DOMAIN_TERMS) | set(STOPWORDS) | set(known)
        self._cache: dict[str, str] = {}

    def token(self, tok: str) -> str:
        """Normalise one already-folded token."""
        hit = self._cache.get(tok)
        if hit is not None:
            return hit
        out = _MISSPELLINGS.get(tok)
        if out is None:
            out = _FOREIGN.get(tok)
        if out is None:
            out = tok if tok in self._known else _fuzzy_fix(tok)
            out = _MISSPELLINGS.get(out, out)
        if len(self._cache) < 50000:
            self._cache[tok] = out
        return out

    def tokens(self, text: str) -> list[str]:
        """Normalised tokens of ``text`` (never raises)."""
        if not isinstance(text, str) or not text:
            return []
        try:
            raw = _fold(text).split()
        except Exception:  # pragma: no cover - defensive: regex/unicode oddities
            return []
        return self.map_tokens(raw)

    def map_tokens(self, raw: Iterable[str]) -> list[str]:
        """Spelling fixes, synonyms and model-number drops on :meth:`raw_tokens` output."""
        out: list[str] = []
        prev = ""
        for tok in raw:
            mapped = self.token(tok)
            for t in mapped.split() if " " in mapped else (mapped,):
                if prev == "iphone" and (t in _MODEL_TOKENS or _MODEL_RE.match(t)):
                    continue  # "iphone 12 pro max" -> "iphone"
                if t == "vcode" or t == "ecode":
                    t = "code"
                elif t == "code" or t == "codes":
                    t = "passcode"
                if t != prev:
                    out.append(t)
                    prev = t
        return out

    @staticmethod
    def raw_tokens(text: str) -> list[str]:
        """Folded tokens before any spelling fix or synonym (for building vocabularies)."""
        if not isinstance(text, str) or not text:
            return []
        return _fold(text).split()

    def normalize(self, text: str) -> str:
        """Normalised text: tokens joined by single spaces."""
        return " ".join(self.tokens(text))


_DEFAULT = Normalizer()


def normalize(text: str) -> str:
    """Normalise ``text`` with the default (library-independent) vocabulary."""
    return _DEFAULT.normalize(text)


def tokens(text: str) -> list[str]:
    """Tokens of :func:`normalize` (default vocabulary)."""
    return _DEFAULT.tokens(text)


def content_tokens(toks: Iterable[str]) -> list[str]:
    """Tokens without stop words (for similarity scores; keywords see all tokens)."""
    return [t for t in toks if t not in STOPWORDS]
