"""The loss chart: training loss and held-out loss by step. A plot is re-drawn only when points
were added (a 1,000-point plot costs tens of ms: FIELD-NOTES)."""

from __future__ import annotations

from textual_plotext import PlotextPlot

MAX_POINTS = 1000  # older points are thinned to keep every redraw cheap


class LossChart(PlotextPlot):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.train: list[tuple[int, float]] = []
        self.eval: list[tuple[int, float]] = []

    def add(self, metrics: list[dict]) -> None:
        """Append metrics lines (trainer.metrics format); redraw if any carried a loss."""
        grew = False
        for m in metrics:
            step = m.get("step")
            if step is None:
                continue
            if m.get("loss") is not None:
                self.train.append((step, m["loss"]))
                grew = True
            if m.get("eval_loss") is not None:
                self.eval.append((step, m["eval_loss"]))
                grew = True
        if grew:
            self.train, self.eval = _thin(self.train), _thin(self.eval)
            self._draw()

    def reset(self) -> None:
        self.train, self.eval = [], []
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title("loss")
        if self.train:
            plt.plot(*zip(*self.train), label="train", marker="braille")
        if self.eval:
            plt.plot(*zip(*self.eval), label="eval", marker="braille")
        self.refresh()


def _thin(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Keep every other old point once past MAX_POINTS; the newest half stays dense."""
    if len(points) <= MAX_POINTS:
        return points
    half = len(points) // 2
    return points[:half:2] + points[half:]
