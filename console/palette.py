"""The command palette (ctrl+p): the same commands as `:` mode, found by fuzzy search; a query that
is a whole command with arguments (`job 12`, `drain gpu01`) is offered as is."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from scheduler.errors import UserError

from . import commands


class HeadnodeCommands(Provider):
    async def discover(self) -> Hits:
        for spec in commands.SPECS:
            if not spec.args:
                yield DiscoveryHit(spec.name, partial(self.app.run_command, spec.name), help=spec.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for spec in commands.SPECS:
            if spec.args:
                continue
            score = matcher.match(f"{spec.name} {spec.help}")
            if score > 0:
                yield Hit(score, matcher.highlight(spec.name), partial(self.app.run_command, spec.name), help=spec.help)
        try:
            cmd = commands.parse(query)
        except UserError:
            return
        if cmd.args:
            spec = commands.BY_NAME[cmd.name]
            yield Hit(1.0, query, partial(self.app.run_command, query), help=spec.help)
