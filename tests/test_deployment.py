"""The Dockerfile and docker-compose.yml, checked against the code since Docker cannot run here.

Every Matchbox service's command must parse with the real CLI (subcommand, options, sink), every
environment variable it sets must be one the settings or the CLI read, and its values must make a
valid ``Settings``. The compose file's wiring (health conditions, ports, volumes, secrets) and the
Dockerfile's shape (installs the package, vendors the dashboard, runs ``matchbox`` as a user other
than root) are checked too. Each checker is itself shown to refuse a mistake.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from pydantic import AliasChoices

from matchbox import cli
from matchbox.bus.cluster import seeds, settings_problems
from matchbox.bus.durability import Durability
from matchbox.consumers.process import SinkKind
from matchbox.settings import Settings

pytestmark = pytest.mark.e2e  # deployment: the Dockerfile, docker-compose.yml and the CLI they call

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
CLUSTER_COMPOSE = ROOT / "docker-compose.cluster.yml"  # shards on a Valkey Cluster
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"
SECRETS = ("MATCHBOX_ADMIN_TOKEN", "POSTGRES_PASSWORD")  # what the operator must provide
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
ESCAPED_OR_VARIABLE = re.compile(r"\$\$|" + VARIABLE.pattern)


# ---------------------------------------------------------------- the CLI and the settings


# typer >= 0.29 carries its own copy of click: reach its classes through typer, not `import click`.
Command = Any
CLICK_ERROR = next(
    cls for cls in typer.BadParameter.__mro__ if issubclass(cls, Exception) and cls.__name__ == "ClickException"
)


class NotACommand(Exception):
    """``matchbox <argv>`` would be refused by the CLI."""


def parse_command(argv: list[str]) -> tuple[Command, dict[str, Any]]:
    """Resolve ``matchbox <argv>`` the way the CLI would, without running it; raise on any mistake."""
    command = typer.main.get_command(cli.app)
    path = ["matchbox"]
    args = list(argv)
    while hasattr(command, "commands"):  # a group: the next word names a subcommand
        if not args:
            raise NotACommand(f"{' '.join(path)}: a subcommand is missing")
        name = args.pop(0)
        if name not in command.commands:
            raise NotACommand(f"{' '.join(path)}: no command {name!r}")
        command, path = command.commands[name], [*path, name]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for token in args:
        option = token.split("=", 1)[0]
        if option.startswith("--") and option not in known:
            raise NotACommand(f"{' '.join(path)}: no option {option!r}")
    try:
        params: dict[str, Any] = command.make_context(" ".join(path), args).params  # arity, types, required
    except CLICK_ERROR as exc:
        raise NotACommand(f"{' '.join(path)}: {exc}") from None
    if "sink" in params and params["sink"] not in {kind.value for kind in SinkKind}:
        raise NotACommand(f"{' '.join(path)}: no sink {params['sink']!r}")  # `consume` checks the word itself
    return command, params


def cli_envvars() -> set[str]:
    """Every environment variable a typer option of the CLI declares."""
    names: set[str] = set()
    pending: list[Command] = [typer.main.get_command(cli.app)]
    while pending:
        command = pending.pop()
        pending.extend(getattr(command, "commands", {}).values())
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
            elif envvar:
                names.update(envvar)
    return names


def settings_envvars() -> set[str]:
    """Every environment variable ``Settings`` reads: its aliases, else the prefix and the name."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


# ---------------------------------------------------------------- the compose file


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def interpolate(value: str, environment: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}``; a missing required one raises."""

    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        if name in environment and (environment[name] or not op.startswith(":")):
            return arg if op.endswith("+") else environment[name]
        if op.endswith("?"):
            raise KeyError(f"{name} must be set: {arg}")
        return arg if op.endswith("-") else ""

    return ESCAPED_OR_VARIABLE.sub(one, value)


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {str(name): str(value) for name, value in environment.items()}


def runs_our_image(service: dict[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("matchbox")


def matchbox_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose["services"].items() if runs_our_image(service)}


def services_running(compose: dict[str, Any], subcommand: str) -> list[str]:
    return [name for name, service in matchbox_services(compose).items() if command_of(service)[:1] == [subcommand]]


def required_variables(text: str) -> set[str]:
    return {match["name"] for match in VARIABLE.finditer(text) if (match["op"] or "").endswith("?")}


@pytest.fixture(scope="module", params=[COMPOSE, CLUSTER_COMPOSE], ids=["single", "cluster"])
def compose_file(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture(scope="module")
def compose(compose_file: Path) -> dict[str, Any]:
    return load_compose(compose_file)


def is_valkey(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("valkey/")


def valkey_servers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run a Valkey server (a cluster's nodes, or the one server)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if is_valkey(service) and command_of(service)[:1] == ["valkey-server"]
    }


def shards_of(service: dict[str, Any]) -> int:
    return int(environment_of(service).get("MATCHBOX_SHARDS", "1"))


def test_every_matchbox_command_parses_with_the_cli(compose: dict[str, Any]) -> None:
    services = matchbox_services(compose)
    assert len(services) >= 6
    for name, service in services.items():
        assert "entrypoint" not in service, f"{name}: the image's entrypoint is `matchbox`; keep it"
        argv = command_of(service)
        assert argv, f"{name}: no command"
        try:
            parse_command(argv)
        except NotACommand as exc:
            pytest.fail(f"{name}: `matchbox {shlex.join(argv)}` does not parse: {exc}")


def test_the_services_that_make_the_exchange_are_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    shards = {shards_of(service) for service in matchbox_services(compose).values()}
    assert len(shards) == 1, "every process knows the same shards"
    (count,) = shards
    engines = [parse_command(command_of(services[name]))[1] for name in services_running(compose, "engine")]
    for shard in range(count):
        candidates = [params for params in engines if (params["shard"] or 0) == shard]
        assert len(candidates) >= 2, f"two engine candidates for shard {shard}, for failover"
    assert len(services_running(compose, "api")) >= 2, "two API instances"
    consumers = [parse_command(command_of(services[name]))[1] for name in services_running(compose, "consume")]
    wanted = {kind.value for kind in SinkKind if kind is not SinkKind.TRANSFERS or count > 1}  # relays: shards
    for shard in range(count):
        sinks = {params["sink"] for params in consumers if (params["shard"] or 0) == shard}
        assert sinks == wanted, f"every sink reads shard {shard}"


def test_every_variable_set_is_read_by_matchbox(compose: dict[str, Any]) -> None:
    known = settings_envvars() | cli_envvars()
    for name, service in matchbox_services(compose).items():
        unknown = set(environment_of(service)) - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which Matchbox never reads"


def test_every_environment_makes_valid_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {name: f"test-{name.lower()}" for name in SECRETS}
    services = compose["services"]
    for name, service in matchbox_services(compose).items():
        for variable in settings_envvars() | cli_envvars():
            monkeypatch.delenv(variable, raising=False)
        environment = {key: interpolate(value, secrets) for key, value in environment_of(service).items()}
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
        settings = Settings()  # raises on a bad value (log format, durability, a number)
        assert settings.log_format == "json", name
        assert settings.admin_token == secrets["MATCHBOX_ADMIN_TOKEN"], f"{name}: the admin token from the environment"
        assert urlsplit(settings.redis_url or "").scheme == "redis", name
        hosts = [host for host, _ in seeds(settings.redis_url or "")]
        assert all(host in services and is_valkey(services[host]) for host in hosts), f"{name}: REDIS_URL hosts"
        if settings.cluster:  # every node a seed: a client started while one is down finds another
            assert set(hosts) == set(valkey_servers(compose)), f"{name}: REDIS_URL names every node"
            assert settings.durability is Durability.REPLICATED, f"{name}: a failover must lose nothing"
        database = urlsplit(settings.database_url or "")
        assert database.hostname in services, f"{name}: DATABASE_URL names no service"
        postgres = environment_of(services[database.hostname])
        assert database.scheme == "postgresql", name
        assert database.username == postgres["POSTGRES_USER"], f"{name}: DATABASE_URL user"
        assert database.password == secrets["POSTGRES_PASSWORD"], f"{name}: DATABASE_URL password"
        assert database.path == f"/{postgres['POSTGRES_DB']}", f"{name}: DATABASE_URL database"


def test_secrets_come_from_the_environment_and_the_readme_names_them(
    compose: dict[str, Any], compose_file: Path
) -> None:
    assert required_variables(compose_file.read_text()) == set(SECRETS)
    for name, service in compose["services"].items():
        for key, value in environment_of(service).items():
            if any(word in key for word in ("TOKEN", "PASSWORD", "SECRET")):
                assert VARIABLE.fullmatch(value), f"{name}: {key} is written into the file"
    deployment = README.read_text().split("## Deployment", 1)[1].split("\n## ", 1)[0]
    for secret in SECRETS:
        assert secret in deployment


def test_apis_listen_where_they_are_published_and_checked(compose: dict[str, Any]) -> None:
    host_ports: list[str] = []
    for name in services_running(compose, "api"):
        service = compose["services"][name]
        params = parse_command(command_of(service))[1]
        assert params["host"] == "0.0.0.0", f"{name}: listen on every interface of the container"
        published = [str(port).rsplit(":", 1) for port in service.get("ports", [])]
        assert [target for _, target in published] == [str(params["port"])], f"{name}: ports vs --port"
        host_ports += [mapping[0] for mapping in published]
        test = " ".join(service["healthcheck"]["test"])
        assert f":{params['port']}/health" in test, f"{name}: the healthcheck asks /health on --port"
    assert len(host_ports) == len(set(host_ports)), "each API on its own host port"


def test_dependencies_wait_for_health_that_is_checked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: restart policy"
        depends_on = service.get("depends_on", {})
        for dependency, condition in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition.get("condition") == "service_completed_successfully":  # a one-shot: it ran
                assert services[dependency].get("restart") == "on-failure", f"{dependency} is no one-shot"
                continue
            assert condition.get("condition") == "service_healthy", f"{name} -> {dependency}"
            test = services[dependency].get("healthcheck", {}).get("test", ["NONE"])
            assert test[0] in ("CMD", "CMD-SHELL"), f"{dependency} has no healthcheck to wait for"

    def waits_for(name: str) -> set[str]:
        direct = set(services[name].get("depends_on", {}))
        return direct.union(*(waits_for(d) for d in direct))

    for name in matchbox_services(compose):
        assert set(valkey_servers(compose)) <= waits_for(name), f"{name} starts before every Valkey answers"


def test_state_lives_in_declared_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
    assert valkey_servers(compose)
    for name, valkey in valkey_servers(compose).items():
        command = command_of(valkey)
        assert command[command.index("--appendonly") + 1] == "yes", f"{name}: WAITAOF needs the AOF"
        assert command[command.index("--appendfsync") + 1] == "always", name
        assert command[command.index("--maxmemory-policy") + 1] == "noeviction", f"{name}: never evict the journal"
        assert any(str(volume).endswith(":/data") for volume in valkey["volumes"]), f"{name}: the AOF on a volume"
    postgres = compose["services"]["postgres"]
    assert any(str(volume).endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])


def test_cluster_nodes_have_the_settings_every_leader_checks(compose: dict[str, Any]) -> None:
    """The nodes' flags, read as the config the leader checks at every term (one rule: settings_problems)."""
    for name, valkey in valkey_servers(compose).items():
        command = command_of(valkey)
        if "--cluster-enabled" not in command:
            continue
        flags = dict(zip(command[1::2], command[2::2], strict=False))
        config = {flag.removeprefix("--"): value for flag, value in flags.items() if flag.startswith("--")}
        assert settings_problems(config, Durability.REPLICATED) == [], name


# ---------------------------------------------------------------- the Dockerfile


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    stages: list[list[tuple[str, str]]] = [[]]
    for line in joined.splitlines():
        if not line.strip():
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def shell_steps(stages: list[list[tuple[str, str]]]) -> list[list[str]]:
    """Each ``&&``-separated command of every RUN, in order, as words."""
    return [
        shlex.split(step)
        for stage in stages
        for instruction, arguments in stage
        if instruction == "RUN"
        for step in arguments.split("&&")
        if step.strip()
    ]


def installs_the_package(words: list[str]) -> bool:
    return len(words) >= 3 and words[0].endswith("pip") and words[1] == "install" and "." in words[2:]


def test_the_image_installs_matchbox_vendors_the_dashboard_and_runs_it_unprivileged() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    final = stages[-1]
    assert final[0][0] == "FROM"
    arguments = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for i, a in stages[0] if i == "ARG")))
    image = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m[1]], final[0][1].split()[0])
    version = re.fullmatch(r"python:(\d+)\.(\d+)-slim\S*", image)
    assert version, f"a slim Python base, not {image}"
    assert (int(version[1]), int(version[2])) >= (3, 11)
    entrypoints = [a for i, a in final if i == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["matchbox"]
    users = [a for i, a in final if i == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    steps = shell_steps(stages)
    installs = [n for n, words in enumerate(steps) if installs_the_package(words)]
    vendors = [n for n, words in enumerate(steps) if words[-3:] == ["python", "-m", "matchbox.web.vendor"]]
    assert installs, "no `pip install .`"
    assert vendors, "the dashboard's assets are never vendored"
    assert vendors[-1] > installs[0], "vendoring runs the installed package: after `pip install .`"


def test_the_image_bakes_in_no_secret() -> None:
    for stage in dockerfile_stages(DOCKERFILE.read_text()):
        for instruction, arguments in stage:
            if instruction in ("ENV", "ARG"):
                assert not re.search(r"TOKEN|PASSWORD|SECRET", arguments, re.IGNORECASE), arguments


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the context: the last matching pattern wins."""
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatch(path, pattern.removeprefix("!").removeprefix("**/")):
            result = not negated
    return result


def test_the_build_context_holds_what_the_build_copies_and_nothing_private() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()[:1] not in ("", "#")]
    copied = [
        source
        for stage in dockerfile_stages(DOCKERFILE.read_text())
        for instruction, arguments in stage
        if instruction == "COPY" and "--from" not in arguments
        for source in arguments.split()[:-1]
    ]
    assert copied
    for source in copied:
        assert not ignored(source.removeprefix("./"), patterns), f"the build copies {source}, which is ignored"
    for private in (".venv", ".env", ".git", "data", "matchbox.db"):
        assert ignored(private, patterns), f"{private} would be sent to the build"


# ---------------------------------------------------------------- the checkers refuse mistakes


@pytest.mark.parametrize(
    "argv",
    [
        ["engin"],
        ["consume", "persistance"],
        ["consume"],
        ["api", "--prot", "8080"],
        ["api", "--port", "eighty"],
        ["bench", "engines"],
        ["bench"],
        ["engine", "--watermark"],
    ],
    ids=shlex.join,
)
def test_the_command_checker_refuses_a_mistake(argv: list[str]) -> None:
    with pytest.raises(NotACommand):
        parse_command(argv)


def test_the_command_checker_accepts_what_the_cli_accepts() -> None:
    command, params = parse_command(["bench", "engine", "--ops", "5000", "--json"])
    assert command.name == "engine"
    assert params["ops"] == 5000
    assert params["json_output"] is True
    assert parse_command(["consume", "analytics", "--burst"])[1]["burst"] is True


def test_the_variable_lists_hold_what_the_code_reads() -> None:
    assert {"REDIS_URL", "DATABASE_URL", "PORT", "MATCHBOX_LOG_FORMAT", "MATCHBOX_ADMIN_TOKEN"} <= settings_envvars()
    assert "MATCHBOX_LOGFORMAT" not in settings_envvars() | cli_envvars()
    assert "MATCHBOX_REDIS_URL" in settings_envvars()  # an alias, not prefix + name


def test_interpolation_is_compose_s() -> None:
    assert interpolate("a${X:?set it}b", {"X": "1"}) == "a1b"
    assert interpolate("${X:-d}", {}) == "d"
    assert interpolate("$${X}", {"X": "1"}) == "${X}"
    with pytest.raises(KeyError):
        interpolate("${X:?set it}", {"X": ""})


def test_the_dockerfile_checks_see_a_root_image() -> None:
    stages = dockerfile_stages("FROM python:3.11-slim\nRUN pip install \\\n    . && python -m x\nUSER root\n")
    assert stages[-1][-1] == ("USER", "root")
    assert shell_steps(stages) == [["pip", "install", "."], ["python", "-m", "x"]]
    assert ignored("src", ["*", "!src"]) is False
    assert ignored(".venv", ["*", "!src"]) is True
