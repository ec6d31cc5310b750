"""Champion and challengers: a new model serves only once the same labels show it is better.

After a concept detection the served model (the champion) keeps serving. Challengers learn
beside it: a fresh clone trained on the samples since the located change, and the models that
served before (kept, frozen, so that a concept which comes back gets its model back). Each
label is predicted by the champion and by every challenger before any of them learns it, and
the two errors go into a bounded window of pairs, one window per challenger. Every
``test_every`` labels a one-sided paired test asks whether the challenger's error is lower:
exact McNemar (a binomial test on the discordant pairs) for classification, Wilcoxon's
signed-rank test on the absolute errors for regression.

- A kept model, frozen, makes the same errors on a concept whatever happened before: it is
  tested once it has ``min_n`` pairs, on the newest ``min_n``, 2 ``min_n``, 4 ``min_n`` ...
  pairs (Bonferroni over them), so the labels since a change decide, wherever it was.
- The fresh model and the champion both still learn the new concept, and a mature champion
  often catches up after a few hundred labels: the fresh model is tested only on a full
  ``fresh_min_n`` pairs, and must be better on all of them and on the newest half.

A challenger whose p-value is below ``alpha`` (divided by the number of challengers) is
promoted; if none has won after ``horizon`` labels, they are all dropped.

>>> pairs = PairedErrors("classification", window=100)
>>> for i in range(60):  # the champion is wrong on every third label, the challenger never
...     pairs.add(1.0 if i % 3 == 0 else 0.0, 0.0)
>>> evidence = pairs.test()
>>> evidence.n, evidence.discordant, round(evidence.error_champion, 3), evidence.error_challenger
(60, (20, 0), 0.333, 0.0)
>>> evidence.p_value == 0.5**20
True
"""

from __future__ import annotations

import collections
import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from river import base

__all__ = [
    "Candidate",
    "Challenge",
    "ChallengerOptions",
    "Decision",
    "Evidence",
    "KeptModel",
    "PairedErrors",
    "Verdict",
]


@dataclass(frozen=True)
class ChallengerOptions:
    """The knobs of the ``challenger`` policy (docs/design.md, "Champion and challengers", says
    why these defaults).

    >>> ChallengerOptions(keep=-1)
    Traceback (most recent call last):
    ...
    ValueError: keep must not be negative, not -1
    """

    horizon: int = 5000  # labels a challenge may last before its challengers are dropped
    keep: int = 3  # replaced models kept to compete again when their concept comes back
    alpha: float = 0.01  # significance of the paired test, shared by a challenge's challengers
    min_n: int = 30  # paired labels a kept model needs before it is tested
    # paired labels the fresh challenger needs: a mature champion adapting to the new concept
    # is often worse for a few hundred labels, and catches up
    fresh_min_n: int = 1000
    test_every: int = 50  # labels between tests (the first test is on the first label)
    window: int = 1000  # most recent paired labels a test looks at

    def __post_init__(self):
        for name in ("horizon", "min_n", "fresh_min_n", "test_every", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("min_n", "fresh_min_n"):
            if getattr(self, name) > self.window:
                raise ValueError(f"{name} must not exceed window ({self.window})")
        if self.keep < 0:
            raise ValueError(f"keep must not be negative, not {self.keep}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), not {self.alpha}")


class KeptModel(NamedTuple):
    """A replaced model, frozen as it was when its concept ended, with the version it had."""

    model: base.Estimator
    generation: int
    updates: int


class Evidence(NamedTuple):
    """A paired test of a challenger against the champion on the same labels."""

    test: str  # "mcnemar" (classification) or "wilcoxon" (regression)
    n: int  # paired labels in the window
    error_champion: float  # mean error over them: error rate or mean absolute error
    error_challenger: float
    # one-sided, small when the challenger's error is lower: the smallest over the lengths
    # tested times `looks` (Bonferroni), or the largest when it had to win on each of them
    p_value: float
    looks: int = 1  # how many newest-pairs lengths were tested
    discordant: tuple[int, int] | None = None  # McNemar: (challenger right only, champion only)

    def to_dict(self) -> dict:
        out = {
            "test": self.test,
            "n": self.n,
            "error_champion": self.error_champion,
            "error_challenger": self.error_challenger,
            "p_value": self.p_value,
            "looks": self.looks,
        }
        if self.discordant is not None:
            out["discordant"] = list(self.discordant)
        return out


class PairedErrors:
    """The champion's and a challenger's errors on the last ``window`` labels both predicted.

    `test` looks at the newest ``length`` pairs for each length asked, and reports the
    smallest p-value times the number of lengths (Bonferroni): a challenger can be judged on
    the labels since a change without anyone having to say where the change was.
    """

    def __init__(self, task: str, window: int):
        self.task = task
        self.pairs: collections.deque = collections.deque(maxlen=window)

    def __len__(self) -> int:
        return len(self.pairs)

    def add(self, champion: float, challenger: float) -> None:
        self.pairs.append((champion, challenger))

    def test(
        self, lengths: Iterable[int] | None = None, reverse: bool = False, every: bool = False
    ) -> Evidence:
        """One-sided paired test of "the challenger's error is lower" on the newest pairs
        (``reverse``: of "the champion's error is lower", the errors reported as they are).

        With ``every``, the challenger must be better on each length asked (an
        intersection-union test: the largest p-value, as it is, is the test's).
        """
        n = len(self.pairs)
        lengths = sorted({min(m, n) for m in lengths} if lengths is not None else {n})
        newest = [(c1, c0) for c0, c1 in self.pairs] if reverse else list(self.pairs)
        newest.reverse()
        best = None
        for m in lengths:
            ev = self._test(newest[:m])
            if best is None or (ev.p_value > best.p_value if every else ev.p_value < best.p_value):
                best = ev
        looks = len(lengths)
        if not every:
            best = best._replace(p_value=min(1.0, best.p_value * looks))
        best = best._replace(looks=looks)
        if reverse:
            best = best._replace(
                error_champion=best.error_challenger,
                error_challenger=best.error_champion,
                discordant=best.discordant and best.discordant[::-1],
            )
        return best

    def _test(self, pairs: list[tuple[float, float]]) -> Evidence:
        from scipy import stats  # noqa: PLC0415 (only needed during challenges)

        n = len(pairs)
        e0 = math.fsum(c for c, _ in pairs) / n
        e1 = math.fsum(c for _, c in pairs) / n
        if self.task == "classification":  # exact McNemar: a binomial test on discordant pairs
            better = sum(1 for c0, c1 in pairs if c0 > c1)
            worse = sum(1 for c0, c1 in pairs if c1 > c0)
            p = 1.0
            if better + worse:
                p = stats.binomtest(better, better + worse, 0.5, alternative="greater").pvalue
            return Evidence("mcnemar", n, e0, e1, float(p), 1, (better, worse))
        diffs = [c0 - c1 for c0, c1 in pairs]
        p = 1.0
        if any(diffs):  # all zero: no evidence either way (and wilcoxon refuses it)
            p = float(stats.wilcoxon(diffs, alternative="greater").pvalue)
        return Evidence("wilcoxon", n, e0, e1, p if math.isfinite(p) else 1.0)


class Candidate:
    """One challenger: its model, where it came from, its learn steps and its paired errors.

    ``origin`` is ``fresh`` (a clone trained on the samples since the change; it learns every
    label), ``snapshot`` (the champion as it was at the detection) or ``kept`` (a model that
    served before); the last two are frozen while they are tested.
    """

    def __init__(
        self,
        origin: str,
        model: base.Estimator,
        updates: int,
        pairs: PairedErrors,
        generation: int | None = None,  # the generation a frozen model served as
    ):
        self.origin = origin
        self.model = model
        self.updates = updates
        self.pairs = pairs
        self.generation = generation

    def describe(self) -> str:
        if self.origin == "fresh":
            return f"fresh challenger ({self.updates} updates)"
        what = "kept model" if self.origin == "kept" else "champion as it was at the detection"
        return f"{what} of generation {self.generation} ({self.updates} updates)"


class Verdict(NamedTuple):
    """The end of a challenge: what was done, why, and the served versions before and after."""

    action: str  # "promoted ..." or "dropped ..."
    evidence: dict
    before: Any  # the served model's version
    after: Any


class Decision(NamedTuple):
    """What `Challenge.judge` found: wait, promote ``candidate`` or drop the challengers."""

    outcome: str  # "wait", "promote" or "drop"
    candidate: Candidate | None = None  # the winner, or on a drop the best challenger
    evidence: Evidence | None = None
    # on a drop: the champion is better than its snapshot, so the snapshot holds a concept the
    # champion has left (worth keeping), not a copy of the champion (a false alarm)
    snapshot_left_behind: Evidence | None = None


class Challenge:
    """The challengers started by one detection, and when to test them.

    ``snapshot`` is the champion as it was at the detection (None when nothing is kept). If a
    challenger replaces the champion, the snapshot, not the champion that has since learned
    the new concept, is what gets kept. It is paired with the champion like a challenger but
    never promoted (while a mature model learns a new concept it is often worse for a few
    hundred labels than its frozen copy, and would lose to it for no lasting reason): at the
    horizon, if the champion is better than its snapshot, the champion has left the old
    concept, and the snapshot is kept too; if not, the detection was a false alarm and the
    snapshot, a copy of the champion, is dropped.
    """

    def __init__(
        self,
        task: str,
        options: ChallengerOptions,
        fresh: base.Estimator,
        fresh_updates: int,
        snapshot: KeptModel | None,
        kept: Iterable[KeptModel],
    ):
        self.task = task
        self.options = options
        self.snapshot = snapshot
        window = options.window
        self.candidates = [Candidate("fresh", fresh, fresh_updates, PairedErrors(task, window))]
        frozen = [("snapshot", snapshot)] if snapshot is not None else []
        frozen += [("kept", k) for k in kept]
        for origin, k in frozen:
            pairs = PairedErrors(task, window)
            self.candidates.append(Candidate(origin, k.model, k.updates, pairs, k.generation))
        self.challengers = len(self.candidates) - (snapshot is not None)  # may be promoted
        self.labels = 0  # labels learned since the detection
        self._next_test = 1

    @staticmethod
    def take_snapshot(champion: base.Estimator, generation: int, updates: int) -> KeptModel:
        return KeptModel(copy.deepcopy(champion), generation, updates)

    def replay_kept(
        self,
        samples: Iterable[tuple[dict, Any, float | None]],
        predict: Callable[[base.Estimator, dict], Any],
    ) -> None:
        """Pair the kept models with the champion on recent samples (``window`` at most).

        A kept model is frozen, so what it predicts now is what it would have served then:
        its errors pair with the champion's served errors, and a returning concept's model can
        win on the first test, on the newest pairs (see `PairedErrors.test`). The fresh
        challenger and the snapshot learned these samples, so they are not paired on them.
        """
        kept = [c for c in self.candidates if c.origin == "kept"]
        if not kept:
            return
        for x, y, served_error in list(samples)[-self.options.window :]:
            if served_error is None:
                continue
            for c in kept:
                e = _error(self.task, y, predict(c.model, x))
                if e is not None:
                    c.pairs.add(served_error, e)

    def observe(self, x: dict, y: Any, champion_pred: Any, predict) -> None:
        """Pair every challenger's error on this label with the champion's (before learning)."""
        e0 = _error(self.task, y, champion_pred)
        if e0 is None:
            return
        for c in self.candidates:
            e = _error(self.task, y, predict(c.model, x))
            if e is not None:
                c.pairs.add(e0, e)

    def learn(self, x: dict, y: Any) -> None:
        """The fresh challenger learns the label; the others stay as they were."""
        for c in self.candidates:
            if c.origin == "fresh":
                c.model.learn_one(x, y)
                c.updates += 1
        self.labels += 1

    @property
    def alpha(self) -> float:
        return self.options.alpha / self.challengers  # Bonferroni over the challengers

    def judge(self) -> Decision:
        """Every ``test_every`` labels: promote the most significant winner; set aside the
        challengers shown worse than the champion; when none is left, or at the horizon, drop
        the challenge."""
        options = self.options
        if self.labels < self._next_test and self.labels < options.horizon:
            return Decision("wait")
        self._next_test = self.labels + options.test_every
        best: tuple[Candidate, Evidence] | None = None
        worse = []
        for c in self.candidates:
            if c.origin == "snapshot":
                continue
            n = len(c.pairs)
            if c.origin == "fresh":
                if n < options.fresh_min_n:
                    continue
                ev = c.pairs.test([n // 2, n], every=True)
                if ev.p_value >= self.alpha:
                    lost = c.pairs.test([n // 2, n], reverse=True, every=True)
                    if lost.p_value < self.alpha:
                        worse.append(c)
            else:
                if n < options.min_n:
                    continue
                ev = c.pairs.test(self._lengths(n))
                # worse on a full window of labels since the detection (its replayed pairs,
                # from before the change, do not count against it)
                if ev.p_value >= self.alpha and self.labels >= options.window:
                    if c.pairs.test(reverse=True).p_value < self.alpha:
                        worse.append(c)
            if best is None or (ev.p_value, ev.error_challenger) < (
                best[1].p_value,
                best[1].error_challenger,
            ):
                best = (c, ev)
        if best is not None and best[1].p_value < self.alpha:
            return Decision("promote", *best)
        for c in worse:  # no longer learns nor is tested: a challenge costs less
            self.candidates.remove(c)
        if self.labels < options.horizon and any(c.origin != "snapshot" for c in self.candidates):
            return Decision("wait")
        left = None
        for c in self.candidates:
            if c.origin == "snapshot" and len(c.pairs) >= options.min_n:
                ev = c.pairs.test(reverse=True)
                left = ev if ev.p_value < self.alpha else None
        return Decision("drop", *(best or (None, None)), left)

    def _lengths(self, n: int) -> list[int]:
        """Newest-pairs lengths a frozen model is tested on: min_n, doubling, and all n."""
        lengths, m = [], self.options.min_n
        while m < n:
            lengths.append(m)
            m *= 2
        return lengths + [n]


def _error(task: str, y: Any, y_pred: Any) -> float | None:
    """0/1 for classification (no prediction is wrong), absolute error for regression."""
    if task == "classification":
        return 0.0 if y_pred == y else 1.0
    if y_pred is None:
        return None
    return abs(y - y_pred)
