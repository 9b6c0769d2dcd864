"""Loading a candidate where it cannot hurt: a process of its own, before any replica
adopts it (`POST /v1/candidates`).

The child gets a scrubbed environment (no token, no Redis URL, no Ray address: only what
Python and the numeric libraries need, and for an `mlflow:` candidate the tracking URI), an
address-space bound (`memory_mb`), its own session (so that everything it starts is killed
with it) and a deadline. It cannot import Ray, so a factory that calls
`ray.serve.shutdown()` fails there instead of stopping the application. It loads and
probes the candidate exactly as a replica would (`service.models.loaders.load_candidate`)
and reports one JSON line on a pipe of its own; whatever the candidate prints goes
nowhere. A crash, a hang, an exit or a refusal comes back as a `PoolLoadError` with its
reason in one line, and the replica goes on.

This guards against candidates that fail, not against code written to escape: what runs
here is code someone placed in the pool folder (or, with `allow_installed_modules`, an
installed package), which is why the admin API cannot name anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from service.models.pool_file import CandidateSpec, PoolLoadError

# What the child keeps of the environment: Python's and the numeric libraries' own knobs.
KEPT_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "PYTHONPATH")
KEPT_PREFIXES = ("OMP_", "OPENBLAS_", "MKL_")
# A registry candidate's child also keeps the way to the registry (and nothing else does:
# the URI may hold credentials, and a `python:` factory has no business with it).
REGISTRY_PREFIXES = ("PICKSERVE_MLFLOW_TRACKING_URI", "MLFLOW_")


def child_environment(environ: dict[str, str], registry: bool = False) -> dict[str, str]:
    kept = KEPT_PREFIXES + (REGISTRY_PREFIXES if registry else ())
    return {
        name: value
        for name, value in environ.items()
        if name in KEPT_ENVIRONMENT or name.startswith(kept)
    }


def load_isolated(spec: CandidateSpec, pool_file: Path, timeout_s: float, memory_mb: int) -> None:
    """Load and probe `spec` in a child process; PoolLoadError (one line) unless it
    loaded and answered the probe within `timeout_s` and `memory_mb`."""
    where = f"{pool_file}: candidate {spec.name!r} ({spec.kind} {spec.source})"
    read_end, write_end = os.pipe()
    request = json.dumps({"pool_file": str(pool_file), "spec": spec.model_dump(),
                          "memory_mb": memory_mb, "result_fd": write_end})  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-m", "service.models.isolated"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=child_environment(dict(os.environ), spec.kind == "mlflow"), start_new_session=True,
        pass_fds=(write_end,), cwd=str(pool_file.parent),
    )  # fmt: skip
    os.close(write_end)
    try:
        assert child.stdin is not None
        child.stdin.write(request.encode())
        child.stdin.close()
        child.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise PoolLoadError(
            f"{where}: did not load and answer the probe within {timeout_s:g} s "
            "(PICKSERVE_CANDIDATE_LOAD_TIMEOUT_S); it was stopped"
        ) from None
    except BrokenPipeError:
        child.wait(timeout_s)
    finally:
        _kill_session(child)
        with os.fdopen(read_end, "rb") as pipe:
            verdict = pipe.read(64 * 1024)
    _judge(where, child.returncode, verdict)


def _kill_session(child: subprocess.Popen[bytes]) -> None:
    """The child and anything it started (its own session) are gone after this."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _judge(where: str, code: int | None, verdict: bytes) -> None:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        raise PoolLoadError(f"{where}: its loader process was killed by {name} (it crashed "
                            "or ran past the memory bound)")  # fmt: skip
    try:
        answer = json.loads(verdict)
    except ValueError:
        raise PoolLoadError(
            f"{where}: its loader process exited (code {code}) before it loaded the candidate"
        ) from None
    if answer.get("error"):
        raise PoolLoadError(str(answer["error"]))
    if answer.get("failure"):
        raise PoolLoadError(f"{where}: loading it raised {answer['failure']}")


def _child() -> None:
    """The child's side: bound the address space, refuse Ray, load, report."""
    import resource

    request = json.loads(sys.stdin.read())
    limit = int(request["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.modules["ray"] = None  # type: ignore[assignment]  # `import ray` fails here
    from service.models.loaders import load_candidate, use_search_path
    from service.models.pool_file import read_pool_spec

    result = os.fdopen(int(request["result_fd"]), "w")
    try:
        pool_file = Path(request["pool_file"])
        pool = read_pool_spec(pool_file)
        use_search_path(pool_file, pool)
        load_candidate(CandidateSpec.model_validate(request["spec"]), pool_file, pool)
    except PoolLoadError as error:
        result.write(json.dumps({"error": str(error)}))
    except BaseException as error:  # anything at all is a verdict, not a crash
        result.write(json.dumps({"failure": type(error).__name__}))
    else:
        result.write(json.dumps({"ok": True}))
    result.close()


if __name__ == "__main__":
    _child()
