"""Configuration from a TOML file and DRIFTSTREAM_* environment variables, on top of argparse.

Every long option of a command is also a configuration key: ``--checkpoint-every`` is
``checkpoint_every`` in the file and ``DRIFTSTREAM_CHECKPOINT_EVERY`` in the environment.
The key set is read from the parser itself, so a new flag is configurable without any change
here. Precedence: command-line flag > environment > file > the flag's default.

The file (``--config PATH``, before or after the command, or ``$DRIFTSTREAM_CONFIG``)::

    bootstrap_servers = "kafka:9092"   # top level: every command that has the option
    topic_prefix = "prod."

    [run]                              # a table per command: that command only, wins
    state = "/state/state.sqlite"      #   over the top level
    checkpoint_every = 5000

Unknown tables, unknown keys and unknown ``DRIFTSTREAM_*`` variables are errors that name
them (a typo must not be silently ignored). Flags (``store_true``) take booleans; in the
environment 1/true/yes/on and 0/false/no/off. Values are converted with the flag's own type
and checked against its choices, exactly as if they had been typed on the command line.

Some options mean something else in one command than in the others, so they are taken only
from that command's table, never from the top level or the environment (TABLE_ONLY): all of
``demo`` (it deletes its state file and starts its own broker: a deployment's settings must not
leak into it), and ``replay``'s ``model``/``drift_policy`` (there they mean "replay a fresh,
different model", not the workers' model).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ConfigError",
    "CommandParser",
    "FieldDefault",
    "Setting",
    "CONFIG_ENV",
    "command_options",
    "format_settings",
    "parse_args",
    "resolve",
]

ENV_PREFIX = "DRIFTSTREAM_"
CONFIG_ENV = "DRIFTSTREAM_CONFIG"
STATE_KEY_ENV = "DRIFTSTREAM_STATE_KEY"  # the state key itself (driftstream.state.signing)
# DRIFTSTREAM_* variables that are not configuration keys but are still ours.
RESERVED_ENV = frozenset({CONFIG_ENV, "DRIFTSTREAM_KILL_AT", STATE_KEY_ENV})
# Keys whose value, when not set, comes from a secret variable: shown as set or not, never read.
SECRET_FALLBACKS = {"state_key_file": STATE_KEY_ENV}
# Commands whose options are not configuration; options only set from their command's table
# (None: all of that command's options).
NOT_CONFIGURABLE = frozenset({"config"})
TABLE_ONLY: dict[str, frozenset[str] | None] = {
    "demo": None,
    "replay": frozenset({"model", "drift_policy"}),
}
SECRET_WORDS = ("password", "secret", "token")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)
_MISSING = object()


class ConfigError(Exception):
    """A bad configuration file, key, value or environment variable."""


@dataclass
class Setting:
    """The effective value of one key and where it came from."""

    key: str
    value: Any
    source: str  # "flag", "env NAME", "file", "default"
    required: bool = False

    def shown(self, environ: Mapping[str, str]) -> str:
        """The value as it may be printed: secrets masked, env-var names with set/unset."""
        if self.key.endswith("_env") and isinstance(self.value, str):
            state = "set" if self.value in environ else "not set"
            return f"{self.value} (variable {state}; value never shown)"
        if any(word in self.key for word in SECRET_WORDS) and self.value is not None:
            return "********"
        fallback = SECRET_FALLBACKS.get(self.key)
        if self.value is None and fallback is not None:
            state = "set" if fallback in environ else "not set"
            return f"(not set; variable {fallback} {state}, value never shown)"
        if self.value is None:
            return "(required, not set)" if self.required else "(not set)"
        return repr(self.value) if isinstance(self.value, str) else str(self.value)


# -- defaults from the configuration dataclasses -------------------------------------------


class FieldDefault:
    """An option's default: the default of the configuration dataclass field it fills.

    Each default is written once, in the dataclass (``LearnerConfig``, ``WorkerOptions``, ...),
    and read from there when the option's command parses, prints its help or is shown by
    `driftstream config show`, not when the parser is built: importing every command's
    dataclasses (River, kafka-python, SQLite) would slow each command's start by all the
    others' imports. ``owner`` is the dataclass's dotted path; ``convert`` turns the field's
    value into the option's (e.g. True into "on").

    >>> FieldDefault("driftstream.transport.settings.KafkaSettings", "connect_timeout_ms").value()
    10000
    """

    def __init__(self, owner: str, field: str, convert: Callable[[Any], Any] | None = None):
        self.owner = owner
        self.field = field
        self.convert = convert

    def value(self) -> Any:
        """The field's default (its factory's value for a ``default_factory`` field)."""
        module, _, name = self.owner.rpartition(".")
        field = getattr(importlib.import_module(module), name).__dataclass_fields__[self.field]
        if field.default is not dataclasses.MISSING:
            value = field.default
        else:
            value = field.default_factory()
        return value if self.convert is None else self.convert(value)

    def __repr__(self) -> str:
        return f"FieldDefault({self.owner!r}, {self.field!r})"


def load_defaults(sub: argparse.ArgumentParser) -> None:
    """Give each option of ``sub`` whose default is a `FieldDefault` its value (once; the
    `FieldDefault` stays on the option as ``fills``)."""
    for action in sub._actions:
        if isinstance(action.default, FieldDefault):
            action.fills = action.default
            action.default = action.default.value()


class CommandParser(argparse.ArgumentParser):
    """A command's parser (``parser_class`` of the sub-parsers): it reads its options'
    `FieldDefault`s before it parses, so before its help too."""

    def parse_known_args(self, args=None, namespace=None):
        load_defaults(self)
        return super().parse_known_args(args, namespace)


# -- the parser's commands and their keys -------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Command name -> its sub-parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_options(sub: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Configuration key -> action, for every long option that stores one value or a flag."""
    keys = {}
    for action in sub._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or action.dest in ("help", "config"):
            continue
        if not isinstance(action, _FLAG_ACTIONS + (argparse._StoreAction,)):
            continue
        if isinstance(action, argparse._StoreAction) and action.nargs not in (None, "?"):
            continue
        keys[longs[0][2:].replace("-", "_")] = action
    return keys


def all_keys(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Command -> its configuration keys, for the configurable commands."""
    return {
        name: set(command_options(sub))
        for name, sub in subcommands(parser).items()
        if name not in NOT_CONFIGURABLE
    }


def env_names(key: str, action: argparse.Action) -> list[str]:
    """The variables for a key, strongest first: DRIFTSTREAM_KEY, then the action's aliases
    (e.g. KAFKA_BOOTSTRAP_SERVERS, set as ``action.env_aliases`` by the CLI)."""
    return [ENV_PREFIX + key.upper(), *getattr(action, "env_aliases", ())]


def _table_only(command: str, keys: set[str]) -> set[str]:
    if command not in TABLE_ONLY:
        return set()
    only = TABLE_ONLY[command]
    return set(keys) if only is None else keys & only


# -- the file and the environment ---------------------------------------------------------


def load_file(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read and check a config file: top-level keys of some command, tables of commands."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    keys = all_keys(parser)
    shared = set().union(*(k - _table_only(name, k) for name, k in keys.items()))
    problems = []
    for name, value in data.items():
        if isinstance(value, dict):
            if name not in keys:
                problems.append(f"[{name}] (no such command; commands: {', '.join(sorted(keys))})")
                continue
            problems += [f"[{name}] {k}" for k in value if k not in keys[name]]
        elif name not in shared:
            problems.append(name)
    if problems:
        raise ConfigError(
            f"config file {path}: unknown keys: {'; '.join(problems)} "
            f"(keys are the long options with _ for -, e.g. checkpoint_every)"
        )
    return data


def check_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Refuse DRIFTSTREAM_* variables that no command knows (names only, never values)."""
    known = {
        ENV_PREFIX + k.upper()
        for name, ks in all_keys(parser).items()
        for k in ks - _table_only(name, ks)
    }
    unknown = sorted(
        n for n in environ if n.startswith(ENV_PREFIX) and n not in known and n not in RESERVED_ENV
    )
    if unknown:
        raise ConfigError(
            f"unknown environment variables: {', '.join(unknown)} (not an option "
            f"of any command; see `driftstream config show`)"
        )


def convert(action: argparse.Action, raw: Any, where: str) -> Any:
    """A file or environment value as the command line would have produced it."""
    if isinstance(action, _FLAG_ACTIONS):
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            raw = raw.strip().lower() in _TRUE
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false, not {raw!r}")
        return action.const if raw else action.default
    if isinstance(raw, bool) or isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a value for {action.option_strings[0]}, not {raw!r}")
    text = ",".join(str(v) for v in raw) if isinstance(raw, list) else str(raw)
    value = text
    if action.type is not None:
        try:
            value = action.type(text)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
            raise ConfigError(f"{where}: invalid value {text!r}: {e}") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


# -- resolving ------------------------------------------------------------------------------


def split_argv(
    parser: argparse.ArgumentParser, argv: list[str]
) -> tuple[str | None, str | None, list[str]]:
    """(command, --config given before it, the arguments after it)."""
    names = subcommands(parser)
    config = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in names:
            return arg, config, argv[i + 1 :]
        if arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
            i += 1
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif not arg.startswith("-"):
            break
        i += 1
    return None, config, []


def _given_flags(sub: argparse.ArgumentParser, argv: list[str]) -> tuple[dict, str | None]:
    """Destination -> value of what was typed on the command line, and its --config (a parse
    that fills nothing in: every attribute starts as a sentinel, which argparse leaves alone;
    required options are relaxed for it, argparse checks them in the real parse)."""
    if not argv:
        return {}, None
    relaxed = [a for a in sub._actions if a.required] + [
        g for g in sub._mutually_exclusive_groups if g.required
    ]
    for item in relaxed:
        item.required = False
    try:
        dests = {a.dest for a in sub._actions} | {"config"}
        ns = argparse.Namespace(**{d: _MISSING for d in dests})
        ns, _ = sub.parse_known_args(argv, ns)
    finally:
        for item in relaxed:
            item.required = True
    given = {d: getattr(ns, d) for d in dests if getattr(ns, d) is not _MISSING}
    return given, given.pop("config", None)


def resolve(
    parser: argparse.ArgumentParser,
    command: str,
    argv: list[str] = (),
    environ: Mapping[str, str] | None = None,
    config_path: str | None = None,
    given: dict[str, Any] | None = None,
) -> dict[str, Setting]:
    """The effective setting of every key of ``command``; ``argv`` holds its flags."""
    environ = os.environ if environ is None else environ
    sub = subcommands(parser)[command]
    load_defaults(sub)
    options = command_options(sub)
    if given is None:
        given, sub_config = _given_flags(sub, list(argv))
        config_path = sub_config or config_path
    config_path = config_path or environ.get(CONFIG_ENV) or None
    check_environment(parser, environ)
    data = load_file(config_path, parser) if config_path else {}
    local = _table_only(command, set(options))
    file_values = {k: v for k, v in data.items() if not isinstance(v, dict) and k not in local}
    file_values.update(data.get(command, {}))
    settings = {}
    for key, action in options.items():
        if action.dest in given:
            settings[key] = Setting(key, given[action.dest], "flag")
            continue
        env = next(
            (n for n in ([] if key in local else env_names(key, action)) if n in environ), None
        )
        if env is not None:
            value = convert(action, environ[env], f"environment variable {env}")
            settings[key] = Setting(key, value, f"env {env}")
        elif key in file_values:
            value = convert(action, file_values[key], f"config file {config_path}: {key}")
            settings[key] = Setting(key, value, "file")
        else:
            settings[key] = Setting(key, action.default, "default", action.required)
    _check_exclusive(sub, options, settings)
    return settings


def _check_exclusive(sub, options, settings) -> None:
    """Two options of one mutually exclusive group set from configuration is an error; a flag
    typed on the command line overrides configuration of the other members."""
    by_dest = {a.dest: k for k, a in options.items()}
    for group in sub._mutually_exclusive_groups:
        keys = [by_dest[a.dest] for a in group._group_actions if a.dest in by_dest]
        flagged = [k for k in keys if settings[k].source == "flag"]
        configured = [k for k in keys if settings[k].source not in ("flag", "default")]
        if flagged:
            for k in configured:
                action = options[k]
                settings[k] = Setting(k, action.default, "default (overridden by a flag)")
        elif len(configured) > 1:
            raise ConfigError(
                f"configuration sets {' and '.join(configured)}, which exclude each other"
            )


def parse_args(
    parser: argparse.ArgumentParser,
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> argparse.Namespace:
    """Parse like ``parser.parse_args``, with file and environment values as defaults.

    The values go in through ``set_defaults`` on the command's sub-parser, so argparse still
    does everything else (help, errors, required options that configuration did not supply).
    """
    argv = list(argv) if argv is not None else sys.argv[1:]
    command, global_config, rest = split_argv(parser, argv)
    if command is None or command in NOT_CONFIGURABLE:
        return parser.parse_args(argv)
    sub = subcommands(parser)[command]
    given, sub_config = _given_flags(sub, rest)
    settings = resolve(parser, command, rest, environ, sub_config or global_config, given)
    options = command_options(sub)
    configured = {
        options[k].dest: s.value
        for k, s in settings.items()
        if s.source.startswith(("env", "file"))
    }
    for action in sub._actions:
        if action.dest in configured:
            action.required = False
    for group in sub._mutually_exclusive_groups:
        if any(a.dest in configured for a in group._group_actions):
            group.required = False
    sub.set_defaults(**configured)
    return parser.parse_args(argv)


def format_settings(
    command: str, settings: dict[str, Setting], environ: Mapping[str, str] | None = None
) -> str:
    """An aligned table: key, effective value (secrets masked), source."""
    environ = os.environ if environ is None else environ
    rows = [(s.key, s.shown(environ), s.source) for s in settings.values()]
    w1 = max(len(r[0]) for r in rows)
    w2 = min(max(len(r[1]) for r in rows), 48)
    lines = [f"[{command}]"]
    lines += [f"{k:<{w1}}  {v:<{w2}}  {src}" for k, v, src in rows]
    return "\n".join(lines)


def show(
    parser: argparse.ArgumentParser,
    command: str | None,
    flags: list[str] = (),
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """`driftstream config show`: the effective settings of one command, or of all."""
    keys = all_keys(parser)
    if command is not None and command not in keys:
        raise ConfigError(
            f"no configurable command {command!r}; commands: {', '.join(sorted(keys))}"
        )
    if flags and command is None:
        raise ConfigError("flags to show need --command")
    names = [command] if command else sorted(keys)
    return "\n\n".join(
        format_settings(name, resolve(parser, name, list(flags), environ, config_path), environ)
        for name in names
    )


def cmd_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """`driftstream config show [--command CMD] [--config F] [CMD's flags]`: flags after
    `show` arrive unparsed (argparse.REMAINDER), so --command and --config are taken out here
    and the rest are the flags of CMD, shown with source "flag"."""
    own = argparse.ArgumentParser(prog="driftstream config show", add_help=False)
    own.add_argument("--command", default=args.command_name)
    own.add_argument("--config", default=getattr(args, "config", None))
    ours, flags = own.parse_known_args(args.flags)
    flags = [f for i, f in enumerate(flags) if not (i == 0 and f == "--")]
    return show(parser, ours.command, flags, ours.config)
