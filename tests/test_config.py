"""Configuration: TOML file and DRIFTSTREAM_* variables under the flags (driftstream.config).

Precedence is flag > environment > file > default, per key, and every long option of every
command is a key, read from the parser itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from driftstream.cli import (
    build_parser,
    demo_options,
    kafka_settings,
    learner_config,
    main,
    worker_options,
)
from driftstream.config import ConfigError, command_options, parse_args, resolve, subcommands
from driftstream.consumers.worker import WorkerOptions
from driftstream.demo import DemoOptions
from driftstream.stream.learner import LearnerConfig
from driftstream.transport import KafkaSettings


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "driftstream.toml"
    path.write_text(text)
    return str(path)


def sources(settings) -> dict[str, tuple]:
    return {k: (s.value, s.source) for k, s in settings.items()}


def test_keys_are_the_long_options_of_each_command() -> None:
    run = command_options(subcommands(build_parser())["run"])
    assert run["checkpoint_every"].option_strings == ["--checkpoint-every"]
    assert {"bootstrap_servers", "state", "model", "no_data_drift", "sasl_password_env"} <= set(run)
    assert "config" not in run and "help" not in run


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
        model = "hat"                 # top level: shared
        checkpoint_every = 111
        adwin_delta = 0.01
        [run]
        state = "/data/s.sqlite"
        checkpoint_every = 222        # the command's table wins over the top level
        cooldown = 5
    """,
    )
    env = {
        "DRIFTSTREAM_COOLDOWN": "7",
        "DRIFTSTREAM_MAX_PENDING": "99",
        "DRIFTSTREAM_NO_DATA_DRIFT": "yes",
    }
    s = sources(
        resolve(build_parser(), "run", ["--cooldown", "9", "--adwin-delta", "0.5"], env, config)
    )
    assert s["cooldown"] == (9, "flag")  # flag > env > file
    assert s["adwin_delta"] == (0.5, "flag")  # flag > file
    assert s["max_pending"] == (99, "env DRIFTSTREAM_MAX_PENDING")
    assert s["no_data_drift"] == (True, "env DRIFTSTREAM_NO_DATA_DRIFT")
    assert s["checkpoint_every"] == (222, "file")
    assert s["model"] == ("hat", "file")
    assert s["state"] == ("/data/s.sqlite", "file")
    assert s["group"] == ("driftstream", "default")

    args = parse_args(build_parser(), ["run", "--cooldown", "9", "--config", config], env)
    assert (
        args.cooldown,
        args.max_pending,
        args.checkpoint_every,
        args.model,
        args.state,
        args.no_data_drift,
        args.adwin_delta,
    ) == (9, 99, 222, "hat", "/data/s.sqlite", True, 0.01)


def test_config_path_before_or_after_the_command_or_from_the_environment(tmp_path) -> None:
    config = write(tmp_path, '[run]\nstate = "s.sqlite"\n')
    for argv, env in (
        (["--config", config, "run"], {}),
        (["run", "--config", config], {}),
        (["run"], {"DRIFTSTREAM_CONFIG": config}),
    ):
        assert parse_args(build_parser(), argv, env).state == "s.sqlite"  # required: satisfied
    with pytest.raises(SystemExit):  # still required when nothing supplies it
        parse_args(build_parser(), ["run"], {})


def test_values_are_converted_and_checked_like_flags(tmp_path: Path) -> None:
    config = write(tmp_path, '[evaluate]\nsynthetic = "sea"\ndrift_at = [100, 200]\nn = "300"\n')
    args = parse_args(build_parser(), ["evaluate", "--config", config], {})
    assert (args.synthetic, args.drift_at, args.n) == ("sea", [100, 200], 300)
    args = parse_args(
        build_parser(),
        ["evaluate"],
        {"DRIFTSTREAM_SYNTHETIC": "sea", "DRIFTSTREAM_DRIFT_AT": "5,6"},
    )
    assert args.drift_at == [5, 6]
    # A flag of a mutually exclusive group overrides configuration of the other member.
    args = parse_args(build_parser(), ["evaluate", "--file", "x.csv", "--config", config], {})
    assert (args.file, args.synthetic) == ("x.csv", None)

    bad = [
        ({"DRIFTSTREAM_CHECKPOINT_EVERY": "ten"}, "DRIFTSTREAM_CHECKPOINT_EVERY"),
        ({"DRIFTSTREAM_DRIFT_POLICY": "panic"}, "not one of reset"),
        ({"DRIFTSTREAM_NO_DATA_DRIFT": "maybe"}, "expected true or false"),
        ({"DRIFTSTREAM_SYNTHETIC": "sea", "DRIFTSTREAM_FILE": "x"}, "exclude each other"),
    ]
    for env, message in bad:
        argv = ["evaluate"] if "DRIFTSTREAM_FILE" in env else ["run", "--state", "s"]
        with pytest.raises(ConfigError, match=message):
            parse_args(build_parser(), argv, env)
    with pytest.raises(ConfigError, match="checkpoint_every: invalid value 'many'"):
        parse_args(
            build_parser(), ["run", "--config", write(tmp_path, "checkpoint_every = 'many'")], {}
        )
    with pytest.raises(ConfigError, match="expected true or false"):
        parse_args(build_parser(), ["tail", "drift", "--config", write(tmp_path, "json = 1")], {})


def test_unknown_keys_tables_and_variables_are_named(tmp_path: Path) -> None:
    config = write(tmp_path, 'chekpoint_every = 1\n[run]\nstat = "x"\n[runn]\nstate = "y"\n')
    with pytest.raises(ConfigError) as e:
        parse_args(build_parser(), ["run", "--config", config], {})
    assert "chekpoint_every" in str(e.value) and "[run] stat" in str(e.value)
    assert "[runn]" in str(e.value)
    with pytest.raises(ConfigError, match="DRIFTSTREAM_MODLE"):
        parse_args(build_parser(), ["topics", "list"], {"DRIFTSTREAM_MODLE": "hat"})
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_args(build_parser(), ["run", "--config", write(tmp_path, "state = ")], {})
    with pytest.raises(ConfigError, match="cannot read"):
        parse_args(build_parser(), ["run", "--config", str(tmp_path / "none.toml")], {})
    # Ours but not configuration: accepted.
    parse_args(build_parser(), ["topics", "list"], {"DRIFTSTREAM_KILL_AT": "checkpoint:1"})


def test_kafka_bootstrap_servers_stays_supported_below_ours(tmp_path: Path) -> None:
    config = write(tmp_path, 'bootstrap_servers = "file:9092"\n')
    parser = build_parser()
    env = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}
    assert sources(resolve(parser, "tail", [], env, config))["bootstrap_servers"] == (
        "kafka:9092",
        "env KAFKA_BOOTSTRAP_SERVERS",
    )
    env["DRIFTSTREAM_BOOTSTRAP_SERVERS"] = "ours:9092"
    assert (
        parse_args(parser, ["tail", "drift", "--config", config], env).bootstrap_servers
        == "ours:9092"
    )
    assert (
        parse_args(build_parser(), ["tail", "drift", "--config", config], {}).bootstrap_servers
        == "file:9092"
    )


def test_demo_and_replay_model_take_only_their_own_table(tmp_path: Path) -> None:
    """demo deletes its state file and replay --model means "a different model": shared
    settings meant for the workers must not reach them."""
    config = write(tmp_path, 'state = "prod.sqlite"\nmodel = "hat"\n[demo]\nn = 500\n')
    env = {"DRIFTSTREAM_STATE": "prod.sqlite", "DRIFTSTREAM_DRIFT_POLICY": "none"}
    demo = parse_args(build_parser(), ["demo", "--config", config], env)
    assert (demo.state, demo.model, demo.n) == ("demo-state.sqlite", "lr", 500)
    replay = parse_args(build_parser(), ["replay", "--partition", "0", "--config", config], env)
    assert (replay.model, replay.drift_policy, replay.state) == (None, None, "prod.sqlite")


def test_a_new_flag_is_configurable_without_changes() -> None:
    parser = build_parser()
    subcommands(parser)["run"].add_argument("--brand-new-knob", type=int, default=1)
    args = parse_args(parser, ["run", "--state", "s"], {"DRIFTSTREAM_BRAND_NEW_KNOB": "42"})
    assert args.brand_new_knob == 42


def test_config_show_sources_and_secrets(tmp_path: Path, capsys, monkeypatch) -> None:
    config = write(tmp_path, '[run]\nstate = "s.sqlite"\n')
    for key in [k for k in os.environ if k.startswith("DRIFTSTREAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DRIFTSTREAM_GROUP", "g-env")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2-secret-value")
    assert main(["config", "show", "--command", "run", "--config", config, "--model", "hat"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines["model"].split()[-1] == "flag" and "'hat'" in lines["model"]
    assert lines["group"].endswith("env DRIFTSTREAM_GROUP")
    assert lines["state"].split()[-1] == "file"
    assert lines["checkpoint_every"].split()[-1] == "default"
    assert "KAFKA_SASL_PASSWORD (variable set" in lines["sasl_password_env"]
    assert "hunter2" not in out
    assert main(["config", "show"]) == 0  # every command
    assert "[run]" in capsys.readouterr().out

    # Anything named like a secret is masked, whatever its source.
    parser = build_parser()
    subcommands(parser)["tail"].add_argument("--api-token")
    settings = resolve(parser, "tail", ["--api-token", "abc123"], {})
    assert settings["api_token"].shown({}) == "********"


def test_evaluate_end_to_end_from_a_config_file(tmp_path: Path, capsys) -> None:
    config = write(tmp_path, '[evaluate]\nsynthetic = "sea"\nn = 300\njson = true\nmodel = "gnb"\n')
    assert main(["--config", config, "evaluate"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["n_samples"], result["model"]) == (300, "gnb")
    assert main(["run", "--state", "s", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


# -- defaults: written once, in the configuration dataclasses -------------------------------

# The dataclasses whose fields each command's options fill; every command with Kafka options
# fills KafkaSettings too.
FILLS = {
    "run": (LearnerConfig, WorkerOptions),
    "evaluate": (LearnerConfig,),
    "demo": (DemoOptions,),
}
# Options named unlike their field, or whose value is the field's converted.
RENAMED = {
    "sasl_username": ("sasl_plain_username", None),
    "no_data_drift": ("data_drift", lambda data_drift: not data_drift),
    "model_process": ("model_process", lambda in_child: "on" if in_child else "off"),
}
# Same name, other meaning: the CLI requires a broker (the field falls back to the
# environment, then localhost), and --schema is a file (the field, its parsed content).
NOT_THE_FIELD = {"bootstrap_servers", "schema"}


def test_every_option_that_fills_a_dataclass_field_has_its_default() -> None:
    """Walk every command's options (as `config show` resolves them, with nothing set) and
    compare each one that fills a configuration dataclass field with that field's default."""
    parser = build_parser()
    checked = set()
    for command, sub in subcommands(parser).items():
        if command == "config":
            continue
        options = command_options(sub)
        owners = FILLS.get(command, ()) + ((KafkaSettings,) if "sasl_username" in options else ())
        settings = resolve(parser, command, [], {})
        for key in options:
            name, convert = RENAMED.get(key, (key, None))
            owner = next((o for o in owners if name in o.__dataclass_fields__), None)
            if owner is None or key in NOT_THE_FIELD:
                continue
            field = owner.__dataclass_fields__[name]
            expected = field.default if convert is None else convert(field.default)
            assert settings[key].source == "default", (command, key)
            assert settings[key].value == expected, f"{command} --{key}: {owner.__name__}.{name}"
            checked.add((command, key))
        if "topic_prefix" in options:  # every command reads the topics the workers write
            assert settings["topic_prefix"].value == WorkerOptions.topic_prefix, command
    assert {
        ("run", "adwin_delta"),
        ("run", "checkpoint_every"),
        ("run", "model_process"),
        ("run", "no_data_drift"),
        ("run", "data_window"),
        ("run", "act_when"),
        ("run", "act_when_labels"),
        ("run", "sasl_username"),
        ("evaluate", "max_pending"),
        ("demo", "drift_policy"),
    } <= checked


def test_data_drift_and_act_when_options_fill_the_learner_configuration(capsys) -> None:
    argv = ["run", "--state", "s", "--bootstrap-servers", "k:9092", "--data-window", "500"]
    argv += ["--act-on-data-drift", "--act-when", "accuracy<0.7", "--act-when-labels", "200"]
    config = learner_config(parse_args(build_parser(), argv, {}))
    assert (config.data_window, config.act_on_data_drift) == (500, True)
    assert (config.act_when, config.act_when_labels) == ("accuracy<0.7", 200)
    for expression, message in [
        ("accuracy=0.7", "expected METRIC<VALUE or METRIC>VALUE"),
        ("mae>3", "mae is a regression metric, the model 'lr' does classification"),
    ]:
        assert main(["evaluate", "--synthetic", "sea", "--n", "10", "--act-when", expression]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1  # one line, no traceback


def test_a_reference_file_is_read_into_the_learner_configuration(tmp_path: Path, capsys) -> None:
    from driftstream.consumers.explain import _config_text

    gap = {3: ""}  # a missing value: left out of its row
    rows = "".join(f"r{i},{i / 2},{'ab'[i % 2]},{gap.get(i, i)},{i % 2}\n" for i in range(60))
    (tmp_path / "train.csv").write_text("id,x,c,gappy,y\n" + rows)
    base = ["run", "--state", "s", "--bootstrap-servers", "k:9092"]
    argv = [*base, "--reference-file", str(tmp_path / "train.csv")]
    argv += ["--reference-label-column", "y", "--reference-ignore", "id"]
    argv += ["--data-reference-size", "50"]
    config = learner_config(parse_args(build_parser(), argv, {}))
    reference = config.reference
    assert len(reference["rows"]) == len(reference["labels"]) == 50  # at most the reference size
    assert set(reference["labels"]) == {0, 1} and reference["source"]["rows_in_file"] == 60
    kinds = Counter(tuple(sorted(row)) for row in reference["rows"])
    assert set(kinds) <= {("c", "gappy", "x"), ("c", "x")} and kinds["c", "x"] <= 1
    text = _config_text(dataclasses.asdict(config))
    assert "reference=<50 rows of train.csv sha256:" in text and "'rows'" not in text

    (tmp_path / "tiny.csv").write_text("x\n1\n2\n")
    for bad, message in [
        (
            [
                *base,
                "--reference-file",
                str(tmp_path / "train.csv"),
                "--reference-label-column",
                "z",
            ],
            "no column(s) ['z']",
        ),
        ([*base, "--reference-file", str(tmp_path / "tiny.csv")], "a pinned reference needs"),
        ([*base, "--reference-file", str(tmp_path / "train.txt")], "unsupported reference file"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            learner_config(parse_args(build_parser(), bad, {}))


def test_no_flags_build_the_default_configuration() -> None:
    run = parse_args(build_parser(), ["run", "--state", "s", "--bootstrap-servers", "k:9092"], {})
    assert learner_config(run) == LearnerConfig()
    assert worker_options(run) == WorkerOptions()
    assert kafka_settings(run) == KafkaSettings(bootstrap_servers="k:9092")
    assert demo_options(parse_args(build_parser(), ["demo"], {})) == DemoOptions()
    replay = parse_args(build_parser(), ["replay", "--partition", "0", "--model", "hat"], {})
    assert replay.drift_policy is None  # cmd_replay leaves it to LearnerConfig


def test_defaults_are_read_only_for_the_command_that_runs() -> None:
    """Reading a default imports its dataclass's module (River, kafka-python, SQLite): a
    command must not pay for the others' (the parser has every command's options)."""
    heavy = ("driftstream.stream.learner", "driftstream.consumers.worker", "driftstream.demo")
    code = (
        "import sys\n"
        "from driftstream.cli import build_parser\n"
        "from driftstream.config import parse_args\n"
        "parse_args(build_parser(), ['tail', 'drift', '--bootstrap-servers', 'k:9092'], {})\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- the state store options ----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, words",
    [
        (["status", "--state", "gs://bucket/x"], "unknown state store 'gs://bucket/x'"),
        (["explain", "e1", "--state", "kafka:events"], "kafka: takes nothing after the colon"),
        (["report", "--state", "s3://B_ad"], "is not a valid bucket name"),
        (["report", "--state", "s3://bucket/x"], "give a key with --state-key-file or"),
        (["status", "--state", "kafka:"], "give a key with --state-key-file or"),
        (["replay", "--partition", "0", "--state", "missing.sqlite"], "does not exist"),
    ],
)
def test_a_bad_state_store_is_a_one_line_error(argv, words, tmp_path, capsys, monkeypatch):
    for key in [k for k in os.environ if k.startswith("DRIFTSTREAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--bootstrap-servers", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())  # nothing created


def test_run_refuses_a_shared_store_without_a_key_before_connecting(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTSTREAM_", "KAFKA_"))}
    for spec in ("kafka:", "s3://bucket/prefix"):
        argv = ["run", "--state", spec, "--bootstrap-servers", "127.0.0.1:9"]
        done = subprocess.run(
            [sys.executable, "-m", "driftstream.cli", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
        )
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"driftstream run: error: state store {spec!r} is shared")


def test_an_unreachable_s3_store_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from driftstream.broker import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-secret-that-must-not-show")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("DRIFTSTREAM_STATE_KEY", "a key of at least sixteen bytes")
    argv = ["status", "--state", "s3://bucket/p", "--bootstrap-servers", "127.0.0.1:9"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("driftstream status: error: s3://bucket/p/: cannot open") and (
        err.count("\n") == 1
    )
    assert "a-secret" not in err and "sixteen" not in err


def test_config_show_never_shows_the_state_key(tmp_path, capsys, monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("DRIFTSTREAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DRIFTSTREAM_STATE", "kafka:")
    monkeypatch.setenv("DRIFTSTREAM_STATE_KEY", "the-state-key-itself-0123456789")
    assert main(["config", "show", "--command", "run"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "'kafka:'" in lines["state"] and lines["state"].endswith("env DRIFTSTREAM_STATE")
    assert "variable DRIFTSTREAM_STATE_KEY set, value never shown" in lines["state_key_file"]
    assert "the-state-key-itself" not in out
    key_file = tmp_path / "state.key"
    assert main(["config", "show", "--command", "status", "--state-key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert f"'{key_file}'" in out and "the-state-key-itself" not in out
