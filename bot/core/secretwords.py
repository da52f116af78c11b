"""The words the redaction gate (``redact``) works with: password, passcode and PIN words, the
words that link a keyword to its secret, and the contexts that make a number not a secret
(error codes, devices, units, years) — English and German, plus the common Spanish and French
forms. All lower case; the cases they must and must not catch are in tests/data/secrets.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vocabulary:
    """The words the gate works with; all lower case."""

    # password-like words: a separator or a secret-looking token after them marks a secret
    strong: frozenset[str]
    # the same, recognised with one typo (long words only) and at the end of compounds
    fuzzy: frozenset[str]
    # keywords of several words, joined with one space
    phrases: frozenset[str]
    # "pass": a keyword only with a separator or a secret-looking token after it
    weak: frozenset[str]
    # code / PIN words: like ``strong``, and digit codes near them are secrets
    code: frozenset[str]
    # compounds ending in one of these are code words ("Entsperrcode", "SIM-PIN")
    code_suffixes: tuple[str, ...]
    # compounds that end like a code word but are not ("Fehlercode", "barcode")
    not_code: frozenset[str]
    # verbs: digit codes near them are secrets ("I unlock it with 5566")
    unlock: frozenset[str]
    # words that look like a keyword with a typo but are not
    not_keywords: frozenset[str]
    separators: frozenset[str]
    separator_pairs: frozenset[tuple[str, str]]
    # may stand between a keyword and its separator ("the password *for my apple id* is")
    linkers: frozenset[str]
    # may stand between a separator and the secret ("is *probably* X")
    hedges: frozenset[str]
    # a first word after the separator that makes it a description, not a secret
    not_secret: frozenset[str]
    # a word among the first two after the separator that makes it a description ("6 digits")
    describes: frozenset[str]
    # words that end a clause (a secret of several words stops before them)
    clause_words: frozenset[str]
    # after one of these, a number is not a code ("error 4013", "iPhone 13", "in 2023")
    number_context: frozenset[str]
    year_context: frozenset[str]
    # before "code": an error message, not a secret ("error code 4013", "restore fails with code 9")
    error_context: frozenset[str]
    # right before "code": not a secret's code ("country code", "zip code", "promo code")
    other_codes: frozenset[str]
    # after a number: units and currencies ("50 GB", "20 euros")
    units: frozenset[str]
    # "X is my password": the words between X and the keyword
    backward_verbs: frozenset[str]
    backward_owners: frozenset[str]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


VOCABULARY = Vocabulary(
    strong=_words(
        "password passwords passwort passwörter kennwort passcode passcodes passwd pwd pw pword psw "
        "contraseña contrasena contraseñas clave mdp passe-partout motdepasse codesecret"
    ),
    fuzzy=_words("password passwort kennwort passcode contraseña contrasena"),
    phrases=frozenset({"mot de passe", "pass word", "pass code", "pass wort", "code secret", "code pin",
                       "unlock code", "screen code", "pin code"}),
    weak=_words("pass"),
    code=_words(
        "code codes pin pins pincode pin-code pinnummer entsperrcode sperrcode gerätecode geraetecode "
        "bildschirmcode zugangscode iphone-code handycode código codigo clave code-pin"
    ),
    code_suffixes=("code", "pin", "passwort", "password", "kennwort", "passcode"),
    not_code=_words(
        "fehlercode errorcode barcode qrcode qr-code unicode opcode encode decode postcode zipcode "
        "promocode gutscheincode rabattcode aktionscode ländercode laendercode sourcecode quellcode "
        "statuscode"
    ),
    unlock=_words(
        "unlock unlocks unlocked unlocking entsperren entsperre entsperrt desbloquear desbloqueo "
        "déverrouiller deverrouiller déverrouille"
    ),
    not_keywords=_words("passport passports passwords? passworded passer passé passed passes"),
    separators=_words(
        "is was ist war lautet lautete heißt heisst es era est était etait c'est = : - – — -> => "
        "'s ’s is: was: ist: es:"
    ),
    separator_pairs=frozenset({
        ("would", "be"), ("should", "be"), ("used", "to"), ("is", "now"), ("ist", "jetzt"),
        ("sería", "es"),
    }),
    linkers=_words(
        "i i'm ive i've we that which for of on to at my the this our me "
        "apple id apple-id appleid icloud account konto phone iphone ipad mac old new current "
        "use used using have had set chose picked typed entered made "
        "für fuer von vom zu zum meine meinem meiner meines mein den das die der ich benutze nutze "
        "verwende habe hatte alte alten neue neuen "
        "de del mi mis la el que uso tengo puse "
        "du pour mon ma mes le j'utilise utilise compte"
    ),
    hedges=_words(
        "now probably maybe perhaps actually just still either like literally "
        "jetzt vielleicht wahrscheinlich eigentlich einfach immer noch "
        "ahora quizás quizas creo "
        "peut-être peut-etre sûrement surement maintenant"
    ),
    not_secret=_words(
        "wrong incorrect correct right not no nicht kein keine nein never nie forgotten forgot lost "
        "locked blocked required needed asked requested rejected invalid expired changed sent shown "
        "displayed the my a an same different ok okay fine too also still disabled unknown gone "
        "missing working accepted saved and but it that this so very really just always is was for "
        "in on of to with correctly set reset being what which where how asking keeps doesnt does "
        "isnt wasnt didnt dont not? unchanged new old long short weak strong secure simple easy hard "
        "false true case there here now being there's "
        "falsch richtig korrekt vergessen gesperrt abgelaufen geändert geaendert zu auch noch der die "
        "das mein meine ein eine weg ungültig ungueltig und aber gleich anders neu alt leer "
        "incorrecta incorrecto correcta correcto olvidada olvidado mi la el un una muy bloqueado "
        "bloqueada nueva nuevo igual "
        "faux fausse oublié oublie bloqué bloque pas mon ma le un une trop nouveau nouvelle même "
        "[redacted]"
    ),
    describes=_words(
        "digits digit characters character chars letters letter numbers long "
        "stellig stellen ziffern zeichen buchstaben lang "
        "dígitos digitos caracteres letras chiffres caractères lettres"
    ),
    clause_words=_words(
        "and but or because since so then when while which although though "
        "und aber oder weil denn dann wenn als obwohl "
        "y pero o porque cuando pues "
        "et mais ou parce car quand donc"
    ),
    number_context=_words(
        "error errors err fehler erreur ios ipados macos watchos iphone ipad ipod mac macbook watch "
        "model modell modelo modèle version v build a no. nr nr. number nummer número numero "
        "$ € £ usd eur chf"
    ),
    year_context=_words("in since seit im en depuis year jahr año an from until bis hasta jusqu'en"),
    error_context=_words(
        "error errors err fehler fehlermeldung erreur failed fails fail failing failure fehlgeschlagen "
        "message meldung says said shows showed zeigt displays itunes finder"
    ),
    other_codes=_words(
        "country area zip postal post promo discount gift coupon voucher qr bar source status region "
        "dialling dialing calling telephone phone landes vorwahl postleit país pais pays postal"
    ),
    units=_words(
        "gb mb tb kb gig gigs gigabytes megabytes terabytes % percent prozent € $ euro euros eur usd "
        "dollar dollars chf pounds minutes minute min mins hours hour stunden tage days day times "
        "mal photos fotos pictures bilder apps files dateien messages nachrichten mah"
    ),
    backward_verbs=_words("is was ist war es era est était"),
    backward_owners=_words("my the our mein meine der die das unser mi la el nuestra mon ma le notre"),
)
