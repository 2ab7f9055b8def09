"""Bad input becomes one line on stderr and exit code 2; bugs keep their traceback."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

EXIT_BAD_INPUT = 2


class UserError(Exception):
    """Bad config, data or paths: the message says what is wrong and what is allowed."""


class TrialPruned(Exception):
    """The search's pruner stopped this run's trial; `training` and `validation` hold what it reached."""

    def __init__(self, message: str, training: dict[str, Any], validation: dict[str, float]) -> None:
        super().__init__(message)
        self.training, self.validation = training, validation


class RunDirInUse(UserError):
    """Another live finetune process trains in the run dir (it holds the dir's lock)."""


class RunError(Exception):
    """A run that cannot finish (non-finite loss, out of memory): one line, the reason and a way out."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT (Ctrl-C) arrived; finished work is kept and the same command resumes.

    A BaseException, like KeyboardInterrupt, so that Hydra's job runner does not catch it and a
    preempted sweep stops instead of starting its next job. `exit_code` is 128 + the signal's
    number, as if the signal had ended the process (143 for SIGTERM, 130 for SIGINT).
    """

    def __init__(self, message: str, exit_code: int = 143) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Escalated(BaseException):
    """Carries a UserError or RunError past Hydra to the CLI, which prints its one line.

    A BaseException because Hydra writes "Error executing job with overrides" over a job's
    Exception and turns a callback's Exception into a warning.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class AlreadyComplete(BaseException):
    """The run dir holds a completed run of the same config: report it, run nothing (exit 0)."""

    def __init__(self, record: Any, run_dir: Path) -> None:  # a finetune.record.RunRecord
        super().__init__(f"{run_dir}: completed before with the same config")
        self.record, self.run_dir = record, run_dir


def require(condition: bool, key: str, message: str) -> None:
    """A config check: `key: message` as a UserError unless `condition` holds."""
    if not condition:
        raise UserError(f"{key}: {message}")


def one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    require(value in allowed, key, f"'{value}' is not allowed; choose one of {', '.join(allowed)}")


USER_ERRORS = (UserError, MissingConfigException, ConfigCompositionException, OverrideParseException, OmegaConfBaseException)


def one_line(error: BaseException) -> str:
    """A single-line message for a UserError or a Hydra/OmegaConf composition error."""
    if isinstance(error, MissingConfigException) and error.options:
        group = (error.missing_cfg_file or "").rsplit("/", 1)[0]
        choice = (error.missing_cfg_file or "").rsplit("/", 1)[-1]
        return f"{group}={choice}: no such option; choose one of {', '.join(sorted(error.options))}"
    if isinstance(error, OverrideParseException):
        return (f"{error.override}: cannot be parsed as an override; quote a value with spaces or other special "
                "characters, e.g. \"hydra.run.dir='my runs/ü'\"")
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    if isinstance(cause, OmegaConfBaseException):
        return _omegaconf_line(cause)
    first = str(error).strip().splitlines()
    return " ".join(line.strip() for line in first if line.strip()) or type(error).__name__


def _omegaconf_line(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None) or "config"
    # a UserError from one of our resolvers (OmegaConf keeps its text, not the exception)
    message = str(error).splitlines()[0].strip().removeprefix(f"{UserError.__name__} raised while resolving interpolation: ")
    schema = getattr(error, "object_type", None)
    if isinstance(error, MissingMandatoryValue):
        return f"{key}: required; set {key}=VALUE"
    if "Cannot merge DictConfig with ListConfig" in message:
        return f"{key}: must be a list, e.g. {key}=[a,b]"
    if isinstance(error, (ConfigKeyError, ConfigAttributeError)) and is_dataclass(schema):
        allowed = ", ".join(f.name for f in fields(schema))
        return f"{key}: unknown key; {schema.__name__} allows {allowed}"
    return f"{key}: {message}"
