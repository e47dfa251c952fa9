"""The heuristic layer of the injection detector: weighted phrases that attacks use, in several languages.

Each rule has a weight in [0, 1]; a text's score is the noisy-OR of the weights of the rules it
matches (two independent signals make a stronger one). The rules cover overriding instructions
("ignore the previous instructions", "vergiss alles"), extracting the system prompt, persona and
"no restrictions" jailbreaks, and fake task boundaries ("new instructions follow").
"""

from __future__ import annotations

import re

from aiestack.types import Finding

_I = re.IGNORECASE
_PREVIOUS = r"(?:previous|prior|above|earlier|preceding|initial|original|system|old|all|any|your|the|my|these|those)"
_INSTRUCTIONS = (
    r"(?:instructions?|prompts?|rules|directions|directives|context|commands?|messages|information|tasks?|guidelines"
    r"|constraints|programming|restrictions)"
)
_RULES: tuple[tuple[str, float, re.Pattern[str]], ...] = (
    ("override", 0.9, re.compile(
        rf"\b(?:ignor(?:e|ing)|disregard(?:ing)?|forget(?:ting)?|skip|override|bypass|abandon|drop|neglect)\s+(?:about\s+)?(?:{_PREVIOUS}\s+){{0,3}}{_INSTRUCTIONS}\b", _I)),
    ("override", 0.85, re.compile(
        r"\b(?:forget|ignore|disregard)\s+(?:about\s+)?(?:everything|all\s+(?:of\s+)?that|all\s+(?:of\s+)?the\s+above|what\s+(?:i|we|you)\s+(?:said|told|discussed))", _I)),
    ("override", 0.85, re.compile(
        r"\b(?:ignor\w*|vergiss|vergessen|missacht\w*|beachte\s+nicht|lass\w*)\s+(?:sie\s+)?(?:alle\w*\s+|alles\s+|die\s+|deine\w*\s+|ihre\w*\s+|diese\w*\s+){0,3}"
        r"(?:vorherig\w*|bisherig\w*|obig\w*|vorangegangen\w*|vorigen|früher\w*|oben)?\s*"
        r"(?:anweisung\w*|instruktion\w*|informationen|aufgaben?|befehl\w*|regeln|ausführungen|vorgaben)", _I)),
    ("override", 0.85, re.compile(r"\b(?:vergiss|vergessen\s+sie)\s+(?:alles|das|all\w*)\b", _I)),
    ("override", 0.85, re.compile(
        r"\b(?:obig|vorherig|bisherig|vorangegangen|vorig)\w*\s+(?:ausführungen|anweisungen|instruktionen|informationen|aufgaben|befehle|regeln)"
        r"\s+(?:\w+\s+){0,2}(?:ignorier|vergess|missacht|überseh)\w*", _I)),
    ("override", 0.85, re.compile(r"(?:забудь|забудьте|игнорируй|игнорируйте)\w*\s+(?:все\s+|всё\s+)?(?:предыдущие\s+)?(?:инструкци|указани|правила)", _I)),
    ("override", 0.8, re.compile(r"\b(?:alle|die)\s+(?:bisherig|vorherig|vorangegangen|obig)\w*\s+(?:informationen|anweisungen|aufgaben)", _I)),
    ("override", 0.85, re.compile(r"\b(?:oubliez|ignorez|oublie|ignore)\s+(?:toutes\s+)?(?:les\s+)?(?:instructions|consignes|règles)", _I)),
    ("override", 0.85, re.compile(r"\b(?:ignora|olvida|olvide)\s+(?:todas?\s+)?(?:las\s+|los\s+)?(?:instrucciones|reglas|anteriores)", _I)),
    ("prompt_leak", 0.85, re.compile(
        r"\b(?:reveal|show|print|output|repeat|display|tell\s+me|leak|give\s+me|what\s+(?:is|are|was|were))\s+(?:me\s+)?(?:all\s+)?(?:your|the)\s+"
        r"(?:system\s+|initial\s+|original\s+|hidden\s+|secret\s+|full\s+|first\s+)*(?:prompt|instructions)(?:\s+texts?)?\b"
        # "what are the instructions for taking ...", "what is the system prompt in the API": a question about them
        r"(?!\s+(?:for|on|to|of|in|about|when|if)\b)", _I)),
    ("prompt_leak", 0.8, re.compile(r"\b(?:zeig\w*|gib|nenn\w*|verrat\w*)\s+(?:mir\s+)?(?:sie\s+)?(?:deine\w*|ihre\w*|den|die|alle)\s+(?:system)?(?:prompt\w*|anweisungen)", _I)),
    ("prompt_leak", 0.6, re.compile(r"\b(?:repeat|print)\s+(?:the\s+)?(?:text|words)\s+above\b|\bwhat\s+was\s+written\s+above\b", _I)),
    ("jailbreak", 0.8, re.compile(r"\b(?:DAN|STAN|DUDE|AIM|UCAR)\b.{0,80}\b(?:do\s+anything\s+now|stands\s+for|mode|jailbr)", _I | re.S)),
    ("jailbreak", 0.75, re.compile(r"\b(?:do\s+anything\s+now|jailbroken|evil\s+(?:mode|confidant|assistant))\b", _I)),
    # "developer mode" and "jailbreak" are ordinary words for phones and browsers: strong only in a jailbreak's phrasing
    ("jailbreak", 0.75, re.compile(
        r"\b(?:developer|god)\s*mode\s+(?:enabled|activated|output|response)|\b(?:chatgpt|gpt|ai|assistant|model|you)\s+(?:with|in)\s+(?:developer|god)\s*mode\b", _I)),
    ("jailbreak", 0.3, re.compile(r"\b(?:developer\s+mode|jailbreak|god\s*mode)\b", _I)),
    ("jailbreak", 0.65, re.compile(
        r"\b(?:no|without|free\s+(?:of|from))\s+(?:any\s+)?(?:moral|ethical|content)?\s*(?:restrictions|limitations|filters|filtering|censorship"
        r"|guidelines|boundaries|rules|policies|morals|ethics)\b", _I)),
    ("jailbreak", 0.6, re.compile(
        r"\b(?:openai|anthropic|content)\s*(?:'s)?\s+(?:policy|policies|guidelines)\b.{0,60}\b(?:ignore|not\s+apply|don'?t\s+apply|no\s+longer|bypass)", _I | re.S)),
    ("jailbreak", 0.55, re.compile(r"\b(?:never|not|don'?t|won'?t)\s+(?:refuse|decline|say\s+(?:no|that\s+you\s+can'?t)|apologi[sz]e|warn)", _I)),
    ("persona", 0.45, re.compile(r"\b(?:you\s+are\s+now|from\s+now\s+on,?\s+you|you\s+will\s+now\s+act|du\s+bist\s+(?:jetzt|nun|ab\s+sofort)|ab\s+(?:jetzt|sofort)\s+bist\s+du)\b", _I)),
    ("persona", 0.35, re.compile(r"\b(?:pretend|imagine)\s+(?:that\s+)?(?:you\s+are|to\s+be|you're)\b|\b(?:stay|remain)\s+in\s+character\b|\bstell\s+dir\s+vor,?\s+du\s+bist\b", _I)),
    ("boundary", 0.7, re.compile(
        r"\b(?:new|further|additional|next)\s+(?:tasks?|instructions?)\s+(?:follows?|are\s+coming|:)|\bnow\s+(?:new|further)\s+tasks\s+follow"
        r"|\b(?:nun|jetzt)\s+(?:folgen|kommen)\s+(?:\w+\s+)?(?:weitere|neue)\s+(?:aufgaben|anweisungen)|\bneue\s+aufgabe\b", _I)),
    ("boundary", 0.55, re.compile(r"(?:^|[\s.!?\"'])(?:stop|stopp|halt|achtung)\s*[:!-]+\s*(?:write|say|print|schreib\w*|sag\w*)", _I)),
    ("boundary", 0.5, re.compile(r"\b(?:that\s+is\s+enough|genug\s+(?:davon|jetzt)|das\s+reicht)\b", _I)),
    ("boundary", 0.5, re.compile(r"(?:^|\n)\s*(?:#{2,}|={3,}|-{3,})?\s*(?:system|admin|developer)\s*(?:prompt|message|override|instruction)?\s*:", _I)),
    ("exfiltration", 0.6, re.compile(r"!\[[^\]]*\]\(https?://[^)]*\?[^)]*=", _I)),
)


#: Per rule, lower-case substrings of which at least one must occur for the rule to be tried: a rule's
#: regex runs only on texts that could match it (most texts skip most rules).
_TRIGGERS: tuple[tuple[str, ...], ...] = (
    ("ignor", "disregard", "forget", "skip", "overrid", "bypass", "abandon", "drop", "neglect"),
    ("forget", "ignor", "disregard"),
    ("ignor", "vergiss", "vergessen", "missacht", "beachte", "lass"),
    ("vergiss", "vergessen"),
    ("obig", "vorherig", "bisherig", "vorangegangen", "vorig"),
    ("забуд", "игнор"),
    ("bisherig", "vorherig", "vorangegangen", "obig"),
    ("oubli", "ignor"),
    ("ignora", "olvid"),
    ("prompt", "instruction"),
    ("prompt", "anweisung"),
    ("above",),
    ("dan", "stan", "dude", "aim", "ucar"),
    ("anything", "jailbr", "evil"),
    ("developer", "god"),
    ("developer", "jailbr", "god"),
    ("restriction", "limitation", "filter", "censorship", "guideline", "boundar", "rules", "polic", "moral", "ethic"),
    ("polic", "guideline"),
    ("refuse", "decline", "say", "apologi", "warn"),
    ("now", "du", "sofort"),
    ("pretend", "imagine", "character", "stell"),
    ("task", "instruction", "aufgabe", "anweisung"),
    ("stop", "halt", "achtung"),
    ("enough", "genug", "reicht"),
    ("system", "admin", "developer"),
    ("![",),
)
assert len(_TRIGGERS) == len(_RULES)


def heuristic_findings(text: str) -> list[Finding]:
    """One finding per matching rule (the rule's kind, span and weight)."""
    found = []
    lower = text.lower()
    for (kind, weight, pattern), triggers in zip(_RULES, _TRIGGERS, strict=True):
        for t in triggers:  # a plain loop: any() over a generator cost ~0.7 µs a rule, on every new prompt
            if t in lower:
                break
        else:
            continue
        m = pattern.search(text)
        if m is not None:
            found.append(Finding(kind=f"injection.{kind}", start=m.start(), end=m.end(), score=weight, label=kind))
    return found


def heuristic_score(findings: list[Finding]) -> float:
    """The noisy-OR of the matched rules' weights (0 when none matched)."""
    miss = 1.0
    for f in findings:
        miss *= 1.0 - (f.score or 0.0)
    return 1.0 - miss
