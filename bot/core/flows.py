"""Loads flows/*.yaml into typed state machines (the types and the loading; the checks
across flows and content are in ``flowcheck``).

The format is documented in flows/README.md. Loading never raises on a bad file by
itself: every problem is collected with its file and key, and the runtime turns a
non-empty list into one ContentError at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem

MENU = "main_menu.start"
ID_RE = re.compile(r"^[a-z0-9_]{1,40}$")
MAX_CALLBACK_BYTES = 64
MAX_LABEL_CHARS = 40
# "<seq>:<id>": seq is a counter per conversation; 10 digits is a generous bound.
SEQ_RESERVE = len("9999999999:")
ASK_TYPES = ("size_gb", "text", "email", "phone", "photos")
STEP_KEYS = {"say", "next", "buttons", "ask", "do", "branches", "end", "multi", "event", "risky", "passes"}
EVENTS = ("human_requested", "still_broken", "data_at_risk")
GATE_VAR = "gate_to"  # set by the button that enters the gate: which caller the gate returns to
GATE_RETURN = "gate_return"  # the action that leaves the gate (branches: one per caller, and "lost")
DEFAULT_GATE = "safe_copy"  # what ``risky: true`` requires
GATE_FLOW = "safe_copy"  # the one shared flow (flows/safe_copy.yaml) that may pass gates


@dataclass(frozen=True)
class ButtonSpec:
    id: str
    label: str  # content key
    goto: str  # resolved "flow.step"
    set: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class AskSpec:
    var: str
    type: str
    invalid: str  # content key
    next: str  # resolved "flow.step"


@dataclass(frozen=True)
class MultiSpec:
    """Several options may be chosen; ``done`` moves on (at least one chosen)."""

    var: str
    options: tuple[ButtonSpec, ...]
    done_label: str
    next: str
    invalid: str


@dataclass(frozen=True)
class Step:
    flow: str
    name: str
    say: tuple[str, ...] = ()
    next: str | None = None
    buttons: tuple[ButtonSpec, ...] = ()
    ask: AskSpec | None = None
    multi: MultiSpec | None = None
    do: str | None = None
    branches: tuple[tuple[str, str], ...] = ()
    end: bool = False
    event: str = ""  # an escalation event raised when the step is entered (see EVENTS)
    risky: tuple[str, ...] = ()  # gates that must lie on every path into this step
    passes: str = ""  # the gate this step completes (only in the one gate flow)

    @property
    def ref(self) -> str:
        return f"{self.flow}.{self.name}"

    @property
    def waits(self) -> bool:
        return bool(self.buttons or self.ask or self.multi)


@dataclass(frozen=True)
class Flow:
    id: str
    intents: tuple[str, ...]
    title: str
    file: str
    data_at_risk: bool = False
    steps: dict[str, Step] = field(default_factory=dict)


@dataclass(frozen=True)
class FlowSet:
    flows: dict[str, Flow]
    by_intent: dict[str, str]  # intent id -> flow id

    def step(self, ref: str) -> Step:
        flow, _, name = ref.partition(".")
        return self.flows[flow].steps[name]

    def has(self, ref: str) -> bool:
        flow, _, name = ref.partition(".")
        return flow in self.flows and name in self.flows[flow].steps

    def flow_for_intent(self, intent: str) -> Flow | None:
        fid = self.by_intent.get(intent)
        return self.flows.get(fid) if fid else None


def _resolve(target: Any, flow_id: str) -> str:
    t = str(target).strip()
    if t == "@menu":
        return MENU
    return t if "." in t else f"{flow_id}.{t}"


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        return ()
    return tuple((str(k), "" if v is None else str(v)) for k, v in value.items())


def _button(raw: Any, flow_id: str, where: str, file: str, problems: list[Problem]) -> ButtonSpec | None:
    if not isinstance(raw, dict) or "id" not in raw or "label" not in raw:
        problems.append(Problem(file, where, "a button needs id and label"))
        return None
    bid = str(raw["id"])
    if not ID_RE.match(bid):
        problems.append(Problem(file, where, f"button id {bid!r} must match [a-z0-9_]"))
    goto = raw.get("goto")
    return ButtonSpec(bid, str(raw["label"]), _resolve(goto, flow_id) if goto else "", _pairs(raw.get("set")))


def _parse_step(flow_id: str, name: str, raw: Any, file: str, problems: list[Problem]) -> Step | None:
    where = f"steps.{name}"
    if not isinstance(raw, dict):
        problems.append(Problem(file, where, "a step must be a mapping"))
        return None
    for key in raw:
        if key not in STEP_KEYS:
            problems.append(Problem(file, f"{where}.{key}", "unknown step key"))
    say_raw = raw.get("say") or ()
    say = (say_raw,) if isinstance(say_raw, str) else tuple(str(s) for s in say_raw)
    buttons: list[ButtonSpec] = []
    for i, b in enumerate(raw.get("buttons") or ()):
        spec = _button(b, flow_id, f"{where}.buttons[{i}]", file, problems)
        if spec:
            if not spec.goto:
                problems.append(Problem(file, f"{where}.buttons[{i}]", "a button needs goto"))
            buttons.append(spec)
    ask = None
    if "ask" in raw:
        a = raw["ask"]
        if not isinstance(a, dict) or not {"var", "type", "next"} <= set(a):
            problems.append(Problem(file, f"{where}.ask", "ask needs var, type and next"))
        else:
            if a["type"] not in ASK_TYPES:
                problems.append(Problem(file, f"{where}.ask.type", f"unknown type {a['type']!r}"))
            ask = AskSpec(str(a["var"]), str(a["type"]), str(a.get("invalid", "")),
                          _resolve(a["next"], flow_id))
            if a["type"] != "photos" and not a.get("invalid"):
                problems.append(Problem(file, f"{where}.ask.invalid", "a re-ask text is required"))
    multi = None
    if "multi" in raw:
        m = raw["multi"]
        if not isinstance(m, dict) or not {"var", "options", "done", "next", "invalid"} <= set(m):
            problems.append(Problem(file, f"{where}.multi", "multi needs var, options, done, next, invalid"))
        else:
            opts = []
            for i, o in enumerate(m["options"] or ()):
                spec = _button(o, flow_id, f"{where}.multi.options[{i}]", file, problems)
                if spec:
                    opts.append(spec)
            multi = MultiSpec(str(m["var"]), tuple(opts), str(m["done"]), _resolve(m["next"], flow_id),
                              str(m["invalid"]))
    branches = tuple((k, _resolve(v, flow_id)) for k, v in _pairs(raw.get("branches")))
    risky_raw = raw.get("risky")
    if risky_raw is True:
        risky: tuple[str, ...] = (DEFAULT_GATE,)
    elif isinstance(risky_raw, str):
        risky = (risky_raw,)
    elif isinstance(risky_raw, list) and all(isinstance(r, str) for r in risky_raw):
        risky = tuple(risky_raw)
    else:
        risky = ()
        if risky_raw not in (None, False):
            problems.append(Problem(file, f"{where}.risky", "risky is true, a gate name or a list of gate names"))
    step = Step(
        flow=flow_id,
        name=name,
        say=say,
        next=_resolve(raw["next"], flow_id) if raw.get("next") else None,
        buttons=tuple(buttons),
        ask=ask,
        multi=multi,
        do=str(raw["do"]) if raw.get("do") else None,
        branches=branches,
        end=bool(raw.get("end", False)),
        event=str(raw.get("event") or ""),
        risky=risky,
        passes=str(raw.get("passes") or ""),
    )
    if step.event and step.event not in EVENTS:
        problems.append(Problem(file, f"{where}.event", f"unknown event {step.event!r}; known: {', '.join(EVENTS)}"))
    ways = sum(
        [step.next is not None, bool(step.buttons) and not step.ask, step.ask is not None,
         step.do is not None, step.end, step.multi is not None]
    )
    if ways != 1:
        problems.append(Problem(file, where, "a step needs exactly one of next, buttons, ask, multi, do, end"))
    if step.do and not step.branches:
        problems.append(Problem(file, f"{where}.branches", "an action needs branches"))
    if not step.say and step.waits and not step.ask:
        problems.append(Problem(file, f"{where}.say", "a step that waits must say something"))
    return step


def _parse_flow(path: Path, problems: list[Problem]) -> Flow | None:
    file = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        problems.append(Problem(file, "-", f"cannot load: {exc}"))
        return None
    if not isinstance(raw, dict):
        problems.append(Problem(file, "-", "a flow must be a mapping"))
        return None
    fid = str(raw.get("id", ""))
    if fid != path.stem:
        problems.append(Problem(file, "id", f"id {fid!r} must equal the file name {path.stem!r}"))
        fid = path.stem
    if not isinstance(raw.get("steps"), dict) or not raw["steps"]:
        problems.append(Problem(file, "steps", "a flow needs steps"))
        return None
    intents = raw.get("intents") or []
    if not isinstance(intents, list):
        problems.append(Problem(file, "intents", "must be a list"))
        intents = []
    steps: dict[str, Step] = {}
    for name, body in raw["steps"].items():
        if not ID_RE.match(str(name)):
            problems.append(Problem(file, f"steps.{name}", "step names must match [a-z0-9_]"))
        step = _parse_step(fid, str(name), body, file, problems)
        if step:
            steps[str(name)] = step
    if "start" not in steps:
        problems.append(Problem(file, "steps.start", "every flow needs a step named start"))
    if not raw.get("title"):
        problems.append(Problem(file, "title", "a flow needs a title content key"))
    return Flow(fid, tuple(str(i) for i in intents), str(raw.get("title", "")), file,
                bool(raw.get("data_at_risk", False)), steps)


def load_flows(root: Path) -> tuple[FlowSet, list[Problem]]:
    problems: list[Problem] = []
    flows: dict[str, Flow] = {}
    by_intent: dict[str, str] = {}
    files = sorted(root.glob("*.yaml"))
    if not files:
        problems.append(Problem(str(root), "-", "no flows found"))
    for path in files:
        flow = _parse_flow(path, problems)
        if flow is None:
            continue
        flows[flow.id] = flow
        for intent in flow.intents:
            if intent in by_intent:
                problems.append(Problem(flow.file, "intents", f"{intent!r} is also opened by {by_intent[intent]}"))
            by_intent[intent] = flow.id
    return FlowSet(flows, by_intent), problems
