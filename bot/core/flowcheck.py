"""Checks of loaded flows (``flows.FlowSet``) against each other and the content, run once at
start-up and by ``python -m bot check``: every target and content key exists, intents and
actions are known, every step is reachable, button data fits Telegram's limits, the safe-copy
gate is passed before a risky step, and no loop runs without the user's input. Each problem
names its file and key.
"""

from __future__ import annotations

from collections.abc import Iterable

from .content import Content
from .errors import Problem
from .flows import (
    GATE_FLOW,
    GATE_RETURN,
    GATE_VAR,
    MAX_CALLBACK_BYTES,
    MAX_LABEL_CHARS,
    MENU,
    SEQ_RESERVE,
    FlowSet,
    Step,
)


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
