"""`?`: the keys of the screen underneath and of the whole console, and the `:` commands."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from .. import commands


def _ours(node) -> list[Binding]:
    """The bindings a console class declares itself: Textual's own (scrolling, text editing) are
    the same everywhere and would bury ours."""
    out = []
    for cls in type(node).__mro__:
        if cls.__module__.startswith("console.") and "BINDINGS" in cls.__dict__:
            out += [b for b in cls.__dict__["BINDINGS"] if isinstance(b, Binding) and b.description]
    return out


def key_table(screen: Screen) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    seen = set()
    for node in (screen, screen.app, *screen.query("*")):
        for b in _ours(node):
            if b.key in seen:
                continue
            seen.add(b.key)
            table.add_row(screen.app.get_key_display(b), b.description)
    table.add_row("ctrl+p", "Command palette")
    return table


def command_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for spec in commands.SPECS:
        table.add_row(":" + commands.usage(spec), spec.help)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss(None)", "Close", id="help.close")]

    def __init__(self, under: Screen) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help-dialog"):
            yield Static(Text("Keys", style="bold"))
            yield Static(key_table(self.under))
            yield Static(Text("\nCommands (type : then one of these)", style="bold"))
            yield Static(command_table())
            yield Static(Text("\nEsc closes this; Esc on a job goes back to the queue.", style="dim"))
