"""The submit form: every field of `headnode submit`, checked as you submit, each mistake shown
under its field; the store's own validation (capacity, dataset) runs last, in a worker."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static
from textual.worker import Worker, WorkerState

from scheduler import jobs
from scheduler.errors import UserError

# (field id, label, placeholder); the ids are JobSpec's field names, which UserError.field uses too
FIELDS = (
    ("name", "Name", "default: from the command"),
    ("nodes", "Nodes", "1"),
    ("gpus_per_node", "GPUs/node", "0 (CPU only)"),
    ("procs_per_node", "Procs/node", "CPU jobs: 1; a GPU job runs one per GPU"),
    ("data", "Dataset", "NAME@VERSION (optional)"),
    ("command", "Command", "python -m trainer"),
    ("env", "Env", "K=V K2=V2 (optional)"),
    ("priority", "Priority", "0"),
    ("time_limit", "Time limit", "e.g. 30m, 2h (optional)"),
    ("retries", "Retries", "0"),
)
FIELD_IDS = {f for f, _, _ in FIELDS}


@dataclass
class FormError(Exception):
    field: str
    message: str


def _int(values: dict[str, str], field: str, default: int | None, minimum: int, what: str) -> int | None:
    text = values[field].strip()
    if not text:
        return default
    try:
        n = int(text)
    except ValueError:
        raise FormError(field, f"{what} must be a whole number") from None
    if n < minimum:
        raise FormError(field, f"{what} must be at least {minimum}")
    return n


def spec_from_form(values: dict[str, str]) -> jobs.JobSpec:
    """The form's text as a JobSpec, or FormError naming the first field that is wrong."""
    try:
        command = shlex.split(values["command"])
    except ValueError as e:
        raise FormError("command", f"cannot split the command: {e}") from None
    try:
        env = jobs.parse_env(shlex.split(values["env"]))
    except (UserError, ValueError) as e:
        raise FormError("env", str(e)) from None
    limit = None
    if values["time_limit"].strip():
        try:
            limit = jobs.parse_time_limit(values["time_limit"])
        except UserError as e:
            raise FormError("time_limit", str(e)) from None
    return jobs.JobSpec(
        command=command or list(jobs.DEFAULT_COMMAND),
        name=values["name"].strip() or None,
        nodes=_int(values, "nodes", 1, 1, "nodes"),
        gpus_per_node=_int(values, "gpus_per_node", 0, 0, "GPUs per node"),
        procs_per_node=_int(values, "procs_per_node", None, 1, "processes per node"),
        data=values["data"].strip() or None,
        priority=_int(values, "priority", 0, -1_000_000, "priority"),
        time_limit=limit,
        retries=_int(values, "retries", 0, 0, "retries"),
        env=env,
    )


def field_of(error: UserError) -> str | None:
    """The form field a library error names, to show it there; None (under the whole form) for one
    the form has no field for (tags) or an error about no field."""
    return error.field if error.field in FIELD_IDS else None


class SubmitScreen(ModalScreen[dict | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="submit.close"),
                Binding("ctrl+s", "submit", "Submit", id="submit.submit")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="submit-form", classes="dialog"):
            yield Static("Submit a job   [dim]Tab: next field  Enter/Ctrl+S: submit  Esc: close[/]", classes="title")
            for field, label, placeholder in FIELDS:
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Input(placeholder=placeholder, id=f"f-{field}", compact=True)
                yield Label("", id=f"e-{field}", classes="field-error")
            yield Label("", id="e-form", classes="field-error")
            with Horizontal(classes="buttons"):
                yield Button("Submit", variant="primary", id="submit", compact=True)
                yield Button("Cancel", id="close", compact=True)

    def values(self) -> dict[str, str]:
        return {f: self.query_one(f"#f-{f}", Input).value for f, _, _ in FIELDS}

    def show_error(self, field: str | None, message: str) -> None:
        for label in self.query(".field-error"):
            label.update("")
            label.remove_class("-shown")
        label = self.query_one(f"#e-{field or 'form'}", Label)
        label.update(message)
        label.add_class("-shown")
        if field:
            self.query_one(f"#f-{field}", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#submit")
    def action_submit(self) -> None:
        try:
            spec = spec_from_form(self.values())
        except FormError as e:
            self.show_error(e.field, e.message)
            return
        self._submit(spec)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)

    @work(thread=True, exclusive=True, group="submit", exit_on_error=False)
    def _submit(self, spec: jobs.JobSpec) -> None:
        try:
            job = self.app.write(lambda store: jobs.submit(store, self.app.inventory, spec))
        except UserError as e:
            self.app.call_from_thread(self.show_error, field_of(e), e.sentence())
            return
        self.app.call_from_thread(self.dismiss, job)

    @on(Worker.StateChanged)
    def _submit_failed(self, event: Worker.StateChanged) -> None:
        """Anything else (the store locked, a bug) is said in the form, which stays open to retry."""
        if event.state is WorkerState.ERROR:
            error = event.worker.error
            self.show_error(None, f"not submitted: {type(error).__name__}: {error}")
