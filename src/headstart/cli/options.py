"""Command-line options generated from config dataclasses.

Every field of a config becomes one ``--flag`` whose help text, valid range and default
are read from the field (``headstart.config.option``), so the CLI cannot drift from the
configs. Where several owners (strategies, adaptation methods) share a field, one flag
serves them all: its help names each owner's meaning and each owner's default, and a
value the user leaves out stays None so every owner's own default applies.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

import typer
from rich.markup import escape

from ..adaptation.configs import ADAPTATION_CONFIGS, DEFAULT_STRATEGIES
from ..errors import ConfigError
from ..strategies.configs import STRATEGY_CONFIGS
from .app import COMPUTE, DATA, MODEL, OUTPUT, READING, STRATEGY

__all__ = ["ConfigOption", "config_options", "with_config_options", "given", "flags_of", "require_applicable",
           "default_panel", "default_of", "help_with_default", "shown_value", "strategy_owners", "strategy_names", "adaptation_owners",
           "adapted_strategy", "DATA", "READING", "MODEL", "STRATEGY", "COMPUTE", "OUTPUT",
           "text_column", "label_column", "model", "weights", "batch_size", "workers", "device", "cache_dir",
           "as_json", "seed", "test_share", "READ_OPTIONS", "with_read_options", "read_options"]


@dataclass(frozen=True)
class ConfigOption:
    """One generated option: a config field name shared by one or more owners' configs."""

    name: str                   # the field's name, and the command function's parameter
    flags: tuple[str, ...]      # ("--lr",), or ("--train-bn", "--no-train-bn") for a bool
    kind: type                  # int, float, str or bool: what the command line parses
    owners: tuple[str, ...]     # strategies (or methods) whose config has the field
    help: str
    shown_default: str | None   # None: the help says what leaving it out does
    panel: str

    def flag_for(self, value: Any) -> str:
        """The flag a user typed to give ``value`` (``--no-x`` for a bool given as False)."""
        return self.flags[1] if self.kind is bool and value is False and len(self.flags) > 1 else self.flags[0]

    def rich_help(self) -> str:
        """The help text and the default(s), as rich markup (typer would show a string
        default in parentheses, and None as no default at all)."""
        return escape(self.help) if self.shown_default is None else help_with_default(self.help, self.shown_default)

    def parameter(self, name: str | None = None) -> inspect.Parameter:
        """The keyword parameter (named ``name``, default the field's) typer turns into this
        option; its default None means: not given."""
        decls = ["/".join(self.flags)] if self.kind is bool else list(self.flags)
        info = typer.Option(None, *decls, help=self.rich_help(), show_default=False, rich_help_panel=self.panel)
        return inspect.Parameter(name or self.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                 annotation=Optional[self.kind])


def help_with_default(text: str, default: str) -> str:
    """Help text ending in ``[default: ...]`` as typer shows a default, as rich markup: for an option
    whose default is no plain value (``--val``: a share of the training split) or a config's."""
    return f"{escape(text)} [dim]{escape(f'[default: {default}]')}[/dim]"


# -- reading the configs ---------------------------------------------------------------------
# The built-in strategies' and adaptation methods' configs come from their packages' configs.py,
# which import no torch: building the command line and its help loads none.
def strategy_owners(names: Sequence[str] | None = None) -> dict[str, type]:
    """The strategies (or the named ones) and their config classes, in registration order."""
    return {name: STRATEGY_CONFIGS[name] for name in (names or STRATEGY_CONFIGS)}


def strategy_names() -> list[str]:
    """The strategies, in registration order."""
    return list(STRATEGY_CONFIGS)


def adaptation_owners() -> dict[str, type]:
    """The adaptation methods and their config classes."""
    return dict(ADAPTATION_CONFIGS)


def adapted_strategy(method: str) -> str:
    """The strategy an adaptation method adapts (the first it composes with)."""
    return DEFAULT_STRATEGIES[method]


def _kind(hint: Any) -> type:
    """What the command line parses for a field's type: bool, int, float, else a string."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else str
    if get_origin(hint) is Literal:
        values = get_args(hint)
        hint = type(values[0]) if values and all(type(v) is type(values[0]) for v in values) else str
    return hint if hint in (bool, int, float) else str


def _merged_kind(kinds: set[type]) -> type:
    if len(kinds) == 1:
        return next(iter(kinds))
    return float if kinds == {int, float} else str


def default_of(spec: Field) -> Any:
    """A dataclass field's default value (a fresh one from its factory)."""
    if spec.default is not MISSING:
        return spec.default
    return spec.default_factory() if spec.default_factory is not MISSING else None


def shown_value(value: Any) -> str:
    """A default as ``--help`` shows it: numbers as Python writes them, lists comma-separated."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return repr(value) if isinstance(value, float) else str(value)


def _help_of(spec: Field) -> str:
    return spec.metadata.get("help", "")


def _rule_of(spec: Field) -> str:
    check = spec.metadata.get("check")
    return getattr(check, "rule", "") if check is not None else ""


def _by_owner(values: Mapping[str, str], joiner: Callable[[str, list[str]], str]) -> str:
    """One text when every owner agrees, else each distinct text with the owners it is theirs."""
    groups: dict[str, list[str]] = {}
    for owner, text in values.items():
        groups.setdefault(text, []).append(owner)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(joiner(text, owners) for text, owners in groups.items())


def _flags(name: str, specs: Sequence[Field], kind: type, negatable: bool = True) -> tuple[str, ...]:
    custom = next((s.metadata.get("flag") for s in specs if s.metadata.get("flag")), None)
    text = custom or name.replace("_", "-")
    parts = [part.strip().lstrip("-") for part in text.split("/")]
    if kind is bool and len(parts) == 1 and negatable:
        parts.append(f"no-{parts[0]}")
    return tuple(f"--{part}" for part in parts)


def default_panel(owners: Sequence[str], every: Sequence[str], prefix: str = "Options of",
                  noun: str = "strategy") -> str:
    """``Options of finetune, lp-ft, scratch``, or ``Options of every strategy``."""
    return f"{prefix} every {noun}" if list(owners) == list(every) else f"{prefix} {', '.join(owners)}"


def config_options(owners: Mapping[str, type], *, panel: Callable[[tuple[str, ...]], str] | None = None,
                   negatable: bool = True) -> list[ConfigOption]:
    """One option per distinct field name of the owners' configs, grouped in help panels.

    ``owners`` maps a strategy (or method) name to its config class; ``panel(owners_of_field)``
    names the help panel of a field (default: by which owners have it). A bool field is a
    ``--x/--no-x`` pair (``--no-x`` overrides a config file's True) unless not ``negatable``.
    """
    every = tuple(owners)
    panel = panel or (lambda have: default_panel(have, every))
    found: dict[str, dict[str, tuple[Field, Any]]] = {}
    for owner, config_class in owners.items():
        hints = get_type_hints(config_class)
        for spec in fields(config_class):
            found.setdefault(spec.name, {})[owner] = (spec, hints.get(spec.name, str))
    options = [_option(name, per_owner, panel, negatable) for name, per_owner in found.items()]
    rank: dict[str, tuple[int, int]] = {}
    for option in options:  # panels in the owners' order, the one shared most widely first
        key = (min(every.index(owner) for owner in option.owners), -len(option.owners))
        rank[option.panel] = min(rank.get(option.panel, key), key)
    return sorted(options, key=lambda option: rank[option.panel])


def _option(name: str, per_owner: dict[str, tuple[Field, Any]], panel: Callable, negatable: bool) -> ConfigOption:
    specs = {owner: spec for owner, (spec, _) in per_owner.items()}
    kind = _merged_kind({_kind(hint) for _, hint in per_owner.values()})
    flags = _flags(name, list(specs.values()), kind, negatable)
    rules = {owner: _rule_of(spec) for owner, spec in specs.items()}
    if len(set(rules.values())) == 1:  # one valid range: said once, after the help
        rule = next(iter(rules.values()))
        help_text = _by_owner({o: _help_of(s) for o, s in specs.items()}, _owned) + (f" [{rule}]" if rule else "")
    else:
        help_text = _by_owner({o: _help_of(s) + (f" [{rules[o]}]" if rules[o] else "") for o, s in specs.items()},
                              _owned)
    shown = _by_owner({o: _shown_default(default_of(s), kind, flags) for o, s in specs.items()},
                      lambda text, owners: f"{text} ({', '.join(owners)})")
    defaults = [default_of(s) for s in specs.values()]
    if (all(d is None for d in defaults) and "default" in help_text) or (len(flags) == 1 and not any(defaults)
                                                                            and kind is bool):
        shown = None  # the help says what None does ("default: sniffed from the content"), or a flag left out
    return ConfigOption(name, flags, kind, tuple(specs), help_text, shown, panel(tuple(specs)))


def _owned(text: str, owners: list[str]) -> str:
    return f"{', '.join(owners)}: {text}"


def _shown_default(value: Any, kind: type, flags: tuple[str, ...]) -> str:
    """A bool default as the flag that gives it (as typer shows its own flags), else the value."""
    if kind is bool and isinstance(value, bool) and len(flags) > 1:
        return (flags[0] if value else flags[1]).lstrip("-")
    return shown_value(value)


# -- commands with generated options -----------------------------------------------------------
def _declared_flags(parameters: Sequence[inspect.Parameter]) -> set[str]:
    """The flags a command's own options use (typer's default: ``--`` + the name, dashed)."""
    taken = set()
    for parameter in parameters:
        decls = getattr(parameter.default, "param_decls", None) or ("--" + parameter.name.replace("_", "-"),)
        taken.update(flag for decl in decls for flag in str(decl).split("/") if flag.startswith("-"))
    return taken


def with_config_options(options: Sequence[ConfigOption], into: str = "options"):
    """Decorator: add one keyword option per generated option to a command function.

    The function declares its fixed options as usual and a parameter ``into``; it receives
    the generated options' values as one dict (field name -> value, None: not given).
    """
    def decorate(func: Callable) -> Callable:
        hints = get_type_hints(func)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(func).parameters.values() if p.name != into]
        clash = sorted({f for o in options for f in o.flags} & _declared_flags(own))
        if clash:
            raise RuntimeError(f"{func.__name__}: generated option(s) {', '.join(clash)} clash with its own; "
                               "give the config field a `flag=` of its own.")

        own_names = {p.name for p in own}  # a field named like an own option gets its parameter renamed
        names = {o.name: o.name if o.name not in own_names else f"{o.name}_config_option" for o in options}

        @functools.wraps(func)
        def command(**kwargs):
            values = {field: kwargs.pop(param, None) for field, param in names.items()}
            return func(**kwargs, **{into: values})

        parameters = own + [option.parameter(names[option.name]) for option in options]
        command.__signature__ = inspect.Signature(parameters)
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command
    return decorate


# -- what the user gave ----------------------------------------------------------------------
def given(values: Mapping[str, Any]) -> dict:
    """The options the user gave (those not None)."""
    return {name: value for name, value in values.items() if value is not None}


def flags_of(names: Sequence[str], values: Mapping[str, Any], options: Sequence[ConfigOption]) -> str:
    """The flags the user typed for these fields, e.g. ``--epochs, --no-train-bn``."""
    by_name = {option.name: option for option in options}
    return ", ".join(by_name[n].flag_for(values.get(n)) if n in by_name else "--" + n.replace("_", "-")
                     for n in names)


def require_applicable(values: Mapping[str, Any], config_class: type, options: Sequence[ConfigOption],
                       what: str) -> dict:
    """The given options, all of them fields of ``config_class``; else an error naming the
    flags the user typed that do not apply to ``what`` (e.g. ``the linear-probe strategy``)."""
    values = given(values)
    names = {spec.name for spec in fields(config_class)}
    foreign = [name for name in values if name not in names]
    if foreign:
        raise ConfigError(f"{flags_of(foreign, values, options)} {'does' if len(foreign) == 1 else 'do'} not apply "
                          f"to {what}.")
    return values


# -- fixed options many commands share ----------------------------------------------------------
# The groups of options (DATA, READING, MODEL, STRATEGY, OUTPUT, COMPUTE) come from app.py, which shows them
# in that order in every command's --help (``app.GroupedCommand``).


def text_column(help: str = "Text column of a table (with `--modality image`: its column of image paths, "  # noqa: A002
                            "default `image`).") -> Any:
    return typer.Option("text", help=help, rich_help_panel=DATA)


def label_column() -> Any:
    return typer.Option("label", help="Label column of a table.", rich_help_panel=DATA)


def test_share(help: str = "Share of the data held out for the test split.") -> Any:  # noqa: A002
    return typer.Option(0.2, "--test", help=help, rich_help_panel=DATA)


def _seed_range(value: int | None) -> int | None:
    if value is not None and value > SEED_MAX:  # checked here, not with max=: typer would print the range
        raise typer.BadParameter(f"{value} is not in the range 0<=x<={SEED_MAX}.")
    return value


SEED_MAX = 2**32 - 1  # numpy's and scikit-learn's seeds


def seed(default: int | None = 0, help: str = "Seed of the split and of training.") -> Any:  # noqa: A002
    return typer.Option(default, "--seed", help=help, rich_help_panel=STRATEGY, min=0, callback=_seed_range)


def model(help: str = "Backbone (default: efficientnet_lite0 for images, minilm for text).") -> Any:  # noqa: A002
    return typer.Option(None, "--model", "-m", help=help, rich_help_panel=MODEL)


def weights() -> Any:
    return typer.Option(None, "--weights", help="Local weights file (.safetensors or .pth) for the backbone.",
                        rich_help_panel=MODEL)


def batch_size() -> Any:
    return typer.Option(64, "--batch-size", help="Batch size of feature extraction and prediction.",
                        rich_help_panel=COMPUTE, min=1)


def workers(help: str = "Image-decoding worker processes (default: none on <= 2 cores, else cores / 2, "  # noqa: A002
                         "at most 4).") -> Any:
    return typer.Option(None, "--workers", help=help, rich_help_panel=COMPUTE, min=0)


def nproc() -> Any:
    return typer.Option(1, "--nproc", min=1, rich_help_panel=COMPUTE, help=(
        "Run as N processes on this machine (torch.distributed: gloo on CPU, nccl with one GPU each); for "
        "several machines use torchrun (see the README)."))


def device(default: str = "auto") -> Any:
    return typer.Option(default, "--device", help="auto, cpu or cuda.", rich_help_panel=COMPUTE)


def cache_dir() -> Any:
    return typer.Option(None, "--cache-dir", help="Feature cache (default ~/.cache/headstart).",
                        rich_help_panel=COMPUTE)


def as_json(what: str) -> Any:
    return typer.Option(False, "--json", help=f"Print {what} as JSON.", rich_help_panel=OUTPUT)


# -- how data files are read: the same four flags on every command that reads data ----------------
def _read_options() -> list[ConfigOption]:
    from ..data.reading import ReadOptions

    return config_options({"reading": ReadOptions}, panel=lambda owners: READING, negatable=False)


READ_OPTIONS = _read_options()


def with_read_options(func: Callable) -> Callable:
    """Decorator: add ``--sep``, ``--encoding``, ``--skip-bad-rows`` and ``--max-pixels``; the
    command receives them as ``reading`` (a dict; :func:`read_options` makes the config)."""
    return with_config_options(READ_OPTIONS, into="reading")(func)


def read_options(values: Mapping[str, Any] | None):
    """The :class:`~headstart.data.reading.ReadOptions` the user gave (defaults for the rest)."""
    from ..data.reading import ReadOptions

    return ReadOptions(**given(values or {}))
