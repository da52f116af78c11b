"""Loads flows/*.yaml into typed state machines and validates them against content.

The format is documented in flows/README.md. Loading never raises on a bad file by
itself: every problem is collected with its file and key, and ``load_flows_or_raise``
turns a non-empty list into one ContentError at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .content import Content
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


def _targets(step: Step) -> Iterable[tuple[str, str]]:
    """(key, target) pairs of a step, for reference checks."""
    where = f"steps.{step.name}"
    if step.next:
        yield f"{where}.next", step.next
    for i, b in enumerate(step.buttons):
        yield f"{where}.buttons[{i}].goto", b.goto
    if step.ask:
        yield f"{where}.ask.next", step.ask.next
    if step.multi:
        yield f"{where}.multi.next", step.multi.next
    for name, target in step.branches:
        yield f"{where}.branches.{name}", target


def validate_flows(
    fs: FlowSet,
    content: Content,
    intents: Iterable[str],
    actions: dict[str, tuple[str, ...]],
) -> list[Problem]:
    """Cross-checks: targets, content keys, intents, actions, reachability, Telegram limits."""
    problems: list[Problem] = []
    intents = tuple(intents)
    if "main_menu" not in fs.flows:
        problems.append(Problem("flows/main_menu.yaml", "-", "the main menu flow is missing"))
    for intent in intents:
        if intent not in fs.by_intent:
            problems.append(Problem("flows/", intent, "no flow opens this intent"))
    for flow in fs.flows.values():
        for intent in flow.intents:
            if intent not in intents:
                problems.append(Problem(flow.file, "intents", f"unknown intent {intent!r}"))
        if flow.title and not content.has(flow.title):
            problems.append(Problem(flow.file, "title", f"content key {flow.title!r} missing"))
        elif flow.title and len(content.raw(flow.title)) > MAX_LABEL_CHARS:
            problems.append(Problem(flow.file, "title", f"label longer than {MAX_LABEL_CHARS}"))
        for step in flow.steps.values():
            where = f"steps.{step.name}"
            keys = [(f"{where}.say", k) for k in step.say]
            keys += [(f"{where}.buttons.{b.id}.label", b.label) for b in step.buttons]
            if step.ask and step.ask.invalid:
                keys.append((f"{where}.ask.invalid", step.ask.invalid))
            if step.multi:
                keys += [(f"{where}.multi.{o.id}.label", o.label) for o in step.multi.options]
                keys += [(f"{where}.multi.done", step.multi.done_label),
                         (f"{where}.multi.invalid", step.multi.invalid)]
            for key, ckey in keys:
                if not content.has(ckey):
                    problems.append(Problem(flow.file, key, f"content key {ckey!r} missing"))
                elif key.endswith("label") or key.endswith("done"):
                    if len(content.raw(ckey)) > MAX_LABEL_CHARS:
                        problems.append(Problem(flow.file, key, f"label longer than {MAX_LABEL_CHARS}"))
            for key, target in _targets(step):
                if not fs.has(target):
                    problems.append(Problem(flow.file, key, f"target {target!r} does not exist"))
            ids = [b.id for b in step.buttons] + ([o.id for o in step.multi.options] if step.multi else [])
            if len(ids) != len(set(ids)):
                problems.append(Problem(flow.file, f"{where}.buttons", "button ids repeat"))
            for bid in ids:
                if SEQ_RESERVE + len(bid.encode()) + len("m:") > MAX_CALLBACK_BYTES:
                    problems.append(Problem(flow.file, f"{where}.buttons.{bid}", "callback data over 64 bytes"))
            if step.do:
                if step.do not in actions:
                    problems.append(Problem(flow.file, f"{where}.do", f"unknown action {step.do!r}"))
                else:
                    declared = set(actions[step.do]) - {"*"}  # "*": the flow names more branches
                    given = {b for b, _ in step.branches}
                    if "*" in actions[step.do]:
                        given &= declared
                    for missing in sorted(declared - given):
                        problems.append(Problem(flow.file, f"{where}.branches.{missing}", "branch not handled"))
                    for extra in sorted(given - declared):
                        problems.append(Problem(flow.file, f"{where}.branches.{extra}", "action has no such branch"))
    problems += _unreachable(fs)
    problems += check_gates(fs)
    problems += check_loops(fs)
    return problems


def _unreachable(fs: FlowSet) -> list[Problem]:
    # every flow's start: intents, the menu, deep links (/start <flow>) and code (the agents'
    # hand-back enters feedback.start) all begin there
    roots = [MENU] + [f"{fid}.start" for fid in fs.flows]
    seen: set[str] = set()
    todo = [r for r in roots if fs.has(r)]
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        for _, target in _targets(fs.step(ref)):
            if fs.has(target) and target not in seen:
                todo.append(target)
    out = []
    for flow in fs.flows.values():
        for step in flow.steps.values():
            if step.ref not in seen:
                out.append(Problem(flow.file, f"steps.{step.name}", "unreachable step"))
    return out


# -- the safe-copy gate and loops ---------------------------------------------------------
# A step marked ``risky`` can lose data or access (a network reset, signing out, an erase).
# The gate is one shared flow whose steps marked ``passes: <gate>`` are reached only once
# the person has a safe copy (or, for signing out, their password and a second factor).
# A caller enters the gate with a button that sets ``gate_to``; the gate's ``gate_return``
# steps branch on it back to the caller. The checks below prove, on the graph of all flows,
# that no path from any flow's start reaches a risky step without a step that passes each
# gate it needs, and that no cycle between flows sends someone back to a fix that failed.


def _roots(fs: FlowSet) -> list[str]:
    roots = [MENU] + [f"{fid}.start" for fid in fs.flows]  # any flow can be opened by a deep link
    return [r for r in roots if fs.has(r)]


def _gate_flow(fs: FlowSet) -> str | None:
    return GATE_FLOW if GATE_FLOW in fs.flows else None


def _gate_exits(fs: FlowSet, entry: str, key: str) -> tuple[list[str], list[Step]]:
    """Where a trip into the gate at ``entry`` with ``gate_to`` = ``key`` can come out.

    Returns the targets outside the gate flow, and the gate_return steps on the way that
    have no branch for ``key`` (a content bug: the gate would not know the way back).
    """
    flow = entry.partition(".")[0]
    seen: set[str] = set()
    todo, exits, missing = [entry], [], []
    while todo:
        ref = todo.pop()
        if ref in seen or not fs.has(ref):
            continue
        if not ref.startswith(flow + "."):
            exits.append(ref)
            continue
        seen.add(ref)
        step = fs.step(ref)
        if step.do == GATE_RETURN:
            target = dict(step.branches).get(key)
            if target is None:
                missing.append(step)
            else:
                todo.append(target)
            continue
        todo += [t for _, t in _targets(step)]
    return exits, missing


def _path(parent: dict[str, str | None], ref: str) -> str:
    out = [ref]
    while parent.get(out[-1]):
        out.append(parent[out[-1]])  # type: ignore[arg-type]
    return " → ".join(reversed(out))


def check_gates(fs: FlowSet) -> list[Problem]:
    """Every risky step lies behind the gates it names, on every path into it."""
    problems: list[Problem] = []
    gate_flow = _gate_flow(fs)
    gates: set[str] = set()
    for flow in fs.flows.values():
        for step in flow.steps.values():
            if step.passes:
                gates.add(step.passes)
                if flow.id != gate_flow:
                    problems.append(Problem(flow.file, f"steps.{step.name}.passes",
                                            f"the gate is one shared flow ({gate_flow}); no copy per flow"))
    for flow in fs.flows.values():
        for step in flow.steps.values():
            for gate in step.risky:
                if gate not in gates:
                    problems.append(Problem(flow.file, f"steps.{step.name}.risky",
                                            f"no step passes the gate {gate!r}"))
            if gate_flow is None or flow.id == gate_flow:
                continue
            # entering the gate: the button names the caller, and the gate knows the way back
            for i, b in enumerate(step.buttons):
                if not b.goto.startswith(gate_flow + "."):
                    continue
                key = dict(b.set).get(GATE_VAR, "")
                where = f"steps.{step.name}.buttons[{i}]"
                if not key:
                    problems.append(Problem(flow.file, f"{where}.set", f"a button into the gate sets {GATE_VAR}"))
                    continue
                for ret in _gate_exits(fs, b.goto, key)[1]:
                    problems.append(Problem(flow.file, f"{where}.set.{GATE_VAR}",
                                            f"{ret.ref} has no branch {key!r} back to the caller"))
            for key, target in _targets(step):
                if gate_flow and target.startswith(gate_flow + ".") and ".buttons[" not in key:
                    problems.append(Problem(flow.file, key, f"only a button (setting {GATE_VAR}) enters the gate"))
    for gate in sorted(gates):
        parent: dict[str, str | None] = {}
        todo: list[tuple[str, str | None]] = [(r, None) for r in _roots(fs)]
        while todo:
            ref, via = todo.pop(0)
            if ref in parent or not fs.has(ref):
                continue
            step = fs.step(ref)
            if step.passes == gate:
                continue
            parent[ref] = via
            if gate in step.risky:
                flow = fs.flows[step.flow]
                problems.append(Problem(flow.file, f"steps.{step.name}.risky",
                                        f"reachable without the {gate!r} gate: {_path(parent, ref)}"))
                continue
            todo += [(t, ref) for _, t in _targets(step)]
    return problems


def _loop_edges(fs: FlowSet, gate_flow: str | None) -> dict[str, list[tuple[str, bool]]]:
    """Edges (target, is a "still not working" answer) between the steps that can loop.

    Left out, because each is progress: the main menu (starting over), steps that collect a
    value and buttons that record one (new information), and "yes, it works" answers (the
    problem is solved). A trip through the gate is one edge from the caller to where the
    gate returns it.
    """
    edges: dict[str, list[tuple[str, bool]]] = {}

    def keep(ref: str) -> bool:
        if not fs.has(ref):
            return False
        step = fs.step(ref)
        return step.flow not in ("main_menu", gate_flow) and not step.ask and not step.multi

    for flow in fs.flows.values():
        for step in flow.steps.values():
            if not keep(step.ref):
                continue
            out: list[tuple[str, bool]] = []
            for b in step.buttons:
                if gate_flow and b.goto.startswith(gate_flow + "."):
                    key = dict(b.set).get(GATE_VAR, "")
                    out += [(t, b.id == "no") for t in _gate_exits(fs, b.goto, key)[0]]
                elif b.id != "yes" and not any(k != GATE_VAR for k, _ in b.set):
                    out.append((b.goto, b.id == "no"))
            out += [(t, False) for k, t in _targets(step) if ".buttons[" not in k]
            edges[step.ref] = [(t, no) for t, no in out if keep(t)]
    return edges


def _sccs(edges: dict[str, list[tuple[str, bool]]]) -> list[set[str]]:
    """Strongly connected components (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on.add(node)
            succ = edges.get(node, [])
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i][0]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == node:
                        break
                out.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def check_loops(fs: FlowSet) -> list[Problem]:
    """A cycle between flows that sends someone back to a fix they said failed is flagged.

    "No progress": the cycle crosses flows, contains a "still not working" answer (a ``no``
    button), and collects no new value and does not pass the main menu on the way round.
    """
    problems: list[Problem] = []
    edges = _loop_edges(fs, _gate_flow(fs))
    for comp in _sccs(edges):
        flows = sorted({ref.partition(".")[0] for ref in comp})
        if len(flows) < 2:
            continue
        for ref in sorted(comp):
            step = fs.step(ref)
            no = next((i for i, b in enumerate(step.buttons) if b.id == "no"), None)
            if no is not None and any(t in comp and n for t, n in edges[ref]):
                flow = fs.flows[step.flow]
                cycle = ", ".join(sorted(comp))
                problems.append(Problem(flow.file, f"steps.{step.name}.buttons[{no}].goto",
                                        f"a loop between flows {', '.join(flows)} with no progress: "
                                        f"'still not working' comes back round to the same fixes ({cycle})"))
                break
    return problems
