"""`torc-trio jobs add`: dynamic jobs from the shell (``POST /workflows/{id}/jobs``).

Inside a job of the workflow (the runner sets ``TORC_WORKFLOW_ID`` and ``TORC_JOB_ID``) the
new jobs are blocked on that job, as ``torc_trio.current_job().spawn_jobs`` blocks them: the
orchestrator's next iteration starts once the orchestrator is done. Elsewhere they wait for
nothing unless ``--after JOB_ID`` says what.
"""

from __future__ import annotations

import argparse
import os

from ..command import Command
from ..exits import EXIT_OK, InputError
from ..output import print_json
from ..session import Context
from ..specs import load_spec_file


def default_after(workflow_id: int, env: dict[str, str] | os._Environ[str]) -> int | None:
    """The job this command runs in, when it runs in a job of ``workflow_id``."""
    job, wf = env.get("TORC_JOB_ID", ""), env.get("TORC_WORKFLOW_ID", "")
    if job.isdigit() and wf.isdigit() and int(wf) == workflow_id:
        return int(job)
    return None


async def cmd_jobs_add(ctx: Context) -> int:
    args = ctx.args
    fragment = load_spec_file(args.file)
    if not isinstance(fragment, dict):
        raise InputError(f"{args.file}: expected a mapping with jobs (and files, user_data, "
                         "resource_requirements)")
    fragment.pop("name", None)  # a whole spec's name is the workflow's; the rest is checked
    wid = int(args.workflow_id)
    after = args.after if args.after is not None else (
        None if args.no_after else default_after(wid, os.environ))
    answer = await ctx.client.add_jobs(wid, fragment, after=after)
    if ctx.json:
        print_json(answer)
        return EXIT_OK
    ids = [j["id"] for j in answer["jobs"]]
    span = f"{ids[0]}" if len(ids) == 1 else f"{ids[0]}..{ids[-1]}"
    waits = f", blocked on job {answer['after']}" if answer.get("after") else ""
    print(f"Added {len(ids)} jobs to workflow {wid} (iteration {answer['iteration']}{waits}): "
          f"ids {span}.")
    return EXIT_OK


def _jobs_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int, help="the workflow to add jobs to")
    p.add_argument("file", help="a spec fragment (YAML, JSON, JSON5 or KDL): jobs, and the "
                                "files, user_data and resource_requirements they name")
    after = p.add_mutually_exclusive_group()
    after.add_argument("--after", type=int, metavar="JOB_ID", default=None,
                       help="block every new job on this job (default: inside a job of the "
                            "workflow, that job; elsewhere none)")
    after.add_argument("--no-after", action="store_true",
                       help="inside a job: do not block the new jobs on it")


COMMANDS = [
    Command("jobs add", "add jobs to a live workflow (dynamic jobs)",
            """torc-trio jobs add 3 next_generation.yaml     # inside a job: after it
               torc-trio jobs add 3 extra.json5 --after 41""",
            arguments=_jobs_add_arguments, run=cmd_jobs_add,
            description="Add a spec fragment's jobs (with the files, user data and resource "
                        "requirements it defines) to a live workflow. Run inside a job of that "
                        "workflow, the new jobs wait for that job (it is their orchestrator); "
                        "each such spawn is one iteration, bounded by the workflow's "
                        "max_iterations. Names in the fragment refer to the fragment's own "
                        "jobs, files and user data, and to the workflow's failure handlers, "
                        "Slurm schedulers and resource requirements."),
]
