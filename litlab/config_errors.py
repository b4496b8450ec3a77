"""jsonargparse's reports of a bad option, as one line a user can act on.

jsonargparse explains a refused value with a nested report (the union it tried, each member's error, the value
given); `explain` reads the part that matters: the flag, the value and what the option accepts, e.g.
`--trainer.max_epochs=abc: expected int or None`, `--data.batch_size=0: must be > 0 (PositiveInt, XorData)`,
`--model.hiden: XorMLP takes no argument 'hiden'; did you mean 'hidden'?`, and a `None` given for YAML's `null` says
so. Anything else keeps its first lines.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re


def explain(err: BaseException) -> str:
    """One line for jsonargparse's error (an `ArgumentError`)."""
    message = str(err)
    explained = (read(message) for read in (_out_of_domain, _unknown_class, _wrong_type, _not_accepted))
    line = next(filter(None, explained), None) or one_line(err)
    if "=None: " in line:  # Python's spelling: jsonargparse reads values as YAML, where None is the text "None"
        line += "; write None as null"
    return line


def one_line(err: BaseException) -> str:
    """The first lines of an error, or for jsonargparse's nested report on a class, the line that matters."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("- Problem with given class_path"):
            detail = []
            for following in lines[i + 1 :]:
                if following.startswith("- "):
                    break
                detail.append(following)
            return f"{lines[0].rstrip(':')}, {line[2:].rstrip(':')}: {' '.join(detail)}"[:400]
    return " ".join(lines[:3])[:400] if lines else type(err).__name__


def _flag(message: str) -> str:
    """The command-line flag of the key a jsonargparse report is about (`--model.optimizer.lr`)."""
    return "--" + ".".join(re.findall(r'Parser key "([\w.]+)"', message))


_RESTRICTION = re.compile(
    r"Not of type (?P<type>\w+): (?P<value>\S+) does not conform to restriction (?P<rule>.+?)(?:\. Got value|$)", re.M
)
_RULES = {"v>0": "> 0", "v>=0": ">= 0", "v>=0 and v<=1": "in [0, 1]", "v>0 and v<1": "in (0, 1)"}


def _out_of_domain(message: str) -> str | None:
    """jsonargparse's report of a number outside its type's domain, as `--data.batch_size=0: must be > 0 (...)`."""
    match = _RESTRICTION.search(message)
    if match is None:
        return None
    owner = [f", {name.rsplit('.', 1)[-1]}" for name in re.findall(r"class_path[ =]'([\w.]+)'", message)][-1:]
    rule = _RULES.get(match["rule"].strip(), match["rule"].strip())
    return f"{_flag(message)}={match['value']}: must be {rule} ({match['type']}{''.join(owner)})"


_GIVEN = re.compile(r"^\s*Given value: (.*?)(?:\. Got value|$)", re.M)
_SUBTYPES = re.compile(r"^\s*Subtypes: \[(.*)\]$", re.M)
_ONE_TYPE = re.compile(  # `Expected a <class 'int'>. Got value: x`, `Not of type PositiveInt: invalid literal...`
    r"^\s*(?:Expected an? (?P<type>.+?)\. Got value: (?P<value>.*)|Not of type (?P<name>\w+): (?P<why>.*))$", re.M
)


def _type_name(text: str) -> str:
    """A type as jsonargparse prints it, as a user reads it: `<class 'int'>` int, `typing.Literal['a']` one of ['a']."""
    text = text.strip()
    if literal := re.fullmatch(r"typing\.Literal\[(.*)\]", text):
        return f"one of [{literal[1]}]"
    plain = re.fullmatch(r"<class '(?:[\w.]+\.)?(\w+)'>", text)
    name = plain[1] if plain else text.replace("typing.", "")
    return "None" if name == "NoneType" else name


def _top_level_items(text: str) -> list[str]:
    """`a, b[c, d], e` -> ['a', 'b[c, d]', 'e']: the commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[(") - (char in "])")
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return [*items, text[start:]]


def _wrong_type(message: str) -> str | None:
    """jsonargparse's report of a value of the wrong type, as `--trainer.max_epochs=abc: expected int or None`."""
    innermost = message[message.rfind("Parser key") :]  # the key the value was given for, and what it accepts
    given = _GIVEN.search(innermost)
    if given is None or given[1].startswith("NestedArg("):  # a class's argument of one type (no union), if any
        one = _ONE_TYPE.search(innermost)
        if one is None:
            return None
        if one["name"]:  # what the type's own check said, e.g. invalid literal for int() with base 10: 'x'
            return f"{_flag(message)}: expected {one['name']} ({one['why']})"
        return f"{_flag(message)}={one['value']}: expected {_type_name(one['type'])}"
    subtypes = _SUBTYPES.search(innermost[: given.start()])  # jsonargparse reports a given value only for a union
    if subtypes is None:
        return None
    accepted = list(dict.fromkeys(_type_name(item) for item in _top_level_items(subtypes[1])))  # e.g. int, None
    listed = f"{', '.join(accepted[:-1])} or {accepted[-1]}" if len(accepted) > 1 else accepted[0]
    return f"{_flag(message)}={given[1]}: expected {listed}"


_NO_SUCH_CLASS = re.compile(
    r"Expected a dot import path string: (?P<name>\S+)|has no attribute '\w+'\. Got value: (?P<path>\S+)"
)


def _unknown_class(message: str) -> str | None:
    """A class_path naming no class of the kind wanted, as `--model=Foo: no Experiment class by that name or
    import path`."""
    match = _NO_SUCH_CLASS.search(message)
    if match is None:
        return None
    section = message[message.rfind("Parser key", 0, match.start()) : match.start()]  # the key the name was given to
    subtypes = _SUBTYPES.search(section)
    kinds = [_type_name(item) for item in _top_level_items(subtypes[1])] if subtypes else []
    if {"int", "float", "str", "bool"} & set(kinds):  # a value for a plain type too (a float or a Tensor): not a name
        return None
    kind = next((f"{k} class" for k in kinds if k != "None" and k.isidentifier()), "class")
    return f"{_flag(message)}={match['name'] or match['path']}: no {kind} by that name or import path"


_NOT_ACCEPTED = re.compile(r"Option '(?P<option>[\w.]+)' is not accepted")


def _not_accepted(message: str) -> str | None:
    """An argument the chosen class does not take, as `--model.hiden: XorMLP takes no argument 'hiden' (did you mean
    'hidden'?)`, the suggestion drawn from the arguments of the class and of the classes it extends."""
    match = _NOT_ACCEPTED.search(message)
    if match is None:
        return None
    # the class it was given to: named after it on its line (`Got value: Namespace(class_path=...`), or else before it
    after = re.search(r"class_path='([\w.]+)'", message[match.end() :].split("\n", 1)[0])
    before = re.findall(r"class_path '([\w.]+)'", message[: match.start()])
    if after is None and not before:
        return None
    module, name = (after[1] if after else before[-1]).rsplit(".", 1)
    try:
        chosen = getattr(importlib.import_module(module), name)
        parameters = [p for c in inspect.getmro(chosen) for p in inspect.signature(c.__init__).parameters.values()]
        known = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
    except (ImportError, AttributeError, TypeError, ValueError):
        known = set()
    close = difflib.get_close_matches(match["option"], sorted(known), n=1)
    suggestion = f"; did you mean '{close[0]}'?" if close else ""
    return f"{_flag(message)}.{match['option']}: {name} takes no argument '{match['option']}'{suggestion}"
