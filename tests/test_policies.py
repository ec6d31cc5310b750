"""The challenger policy: promotions on evidence, drops at the horizon, kept models coming back."""

from __future__ import annotations

import itertools
import random

import pytest
from river.datasets import synth

from driftstream.state.safe_pickle import load_learner
from driftstream.stream.challenger import ChallengerOptions, PairedErrors
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.offline import run_offline
from driftstream.stream.policies import ServedModel
from driftstream.stream.records import DriftReport, Event, Label, ModelVersion, Prediction


def concepts(order: list[int], n: int, seed: int = 7) -> list[tuple[dict, bool]]:
    """``n`` samples of each concept in ``order``: concept k says whether feature ``k % 3`` of
    three uniform ones is above the middle (k < 3) or below it (k >= 3); 5 % label noise."""
    rng = random.Random(seed)
    out = []
    for k in order:
        for _ in range(n):
            x = {f"x{j}": rng.uniform(0.0, 10.0) for j in range(3)}
            y = (x[f"x{k % 3}"] > 5.0) == (k < 3)
            out.append((x, y != (rng.random() < 0.05)))
    return out


class FalseAlarms:
    """Stands in for the learner's ADWIN: a rise of the error every ``every`` labels, whatever
    the errors are (ADWIN itself almost never fires on a stationary stream)."""

    def __init__(self, every: int):
        self.every = every
        self.n = 0

    def update(self, value: float) -> dict | None:
        self.n += 1
        if self.n % self.every:
            return None
        return {"name": "test", "mean_before": 0.1, "mean_after": 0.2}


def config(**kw) -> LearnerConfig:
    kw.setdefault("model", "lr")
    kw.setdefault("drift_policy", "challenger")
    kw.setdefault("data_drift", False)
    return LearnerConfig(**kw)


class Run:
    """A learner fed one labelled sample at a time (label right after its event)."""

    def __init__(self, cfg: LearnerConfig):
        self.learner = Learner(cfg)
        self.reports: list[DriftReport] = []
        self.predictions: list = []
        self.n = 0

    def feed(self, dataset) -> Run:
        for x, y in dataset:
            i = self.n
            outs = self.learner.process_event(Event(f"e{i}", x, ts=i))
            outs += self.learner.process_label(Label(f"e{i}", y, ts=i))
            self.predictions += [o.prediction for o in outs if isinstance(o, Prediction)]
            self.reports += [o for o in outs if isinstance(o, DriftReport)]
            self.n += 1
        return self

    def verdicts(self, action: str = "") -> list[DriftReport]:
        return [r for r in self.reports if r.kind == "challenger" and r.action.startswith(action)]

    def challenges(self) -> list[DriftReport]:
        return [r for r in self.reports if r.kind == "concept" and "challenge" in r.action]


def test_challenger_is_promoted_on_a_clear_concept_change():
    run = Run(config()).feed(concepts([0, 1], 3000))
    started = run.challenges()
    assert len(started) == 1 and started[0].n_seen > 3000
    (promoted,) = run.verdicts()
    e = promoted.detector
    # Real figures of this run: on the 1,000 pairs, and on the newest 500 of them (reported,
    # the weaker of the two), the fresh model is better at p = 2e-8.
    assert promoted.action == f"promoted fresh challenger ({promoted.model_after.updates} updates)"
    assert e["test"] == "mcnemar" and e["n"] == 500 and e["looks"] == 2 and e["labels"] == 1001
    assert e["p_value"] < 1e-6 and e["alpha"] == 0.01, e["p_value"]
    assert e["error_challenger"] < 0.1 < e["error_champion"]
    better, worse = e["discordant"]
    assert better - worse == round(500 * (e["error_champion"] - e["error_challenger"]))
    assert promoted.model_before.generation == 0 and promoted.model_after.generation == 1
    assert run.learner.version.generation == 1
    # The champion it replaced is kept, as it was at the detection.
    (kept,) = run.learner.served.kept
    assert (kept.generation, kept.updates) == tuple(started[0].model_before)


def test_challenger_is_not_promoted_on_a_stationary_stream():
    # A false alarm every 2,000 labels: each starts a challenge, none may end in a promotion.
    run = Run(config(challenger_horizon=1500))
    run.learner.monitor = FalseAlarms(2000)
    run.feed(concepts([0], 14_000))
    started, dropped = run.challenges(), run.verdicts("dropped")
    assert len(started) == 7 and len(dropped) == 6
    assert run.verdicts("promoted") == []
    assert dropped and all(r.model_before == r.model_after for r in dropped)
    p_values = [r.detector["p_value"] for r in dropped if "p_value" in r.detector]
    assert p_values and min(p_values) > 0.01, p_values
    assert run.learner.version.generation == 0
    assert len(run.learner.served.kept) == 0


def test_challengers_are_dropped_at_the_horizon():
    run = Run(config(challenger_horizon=700))
    run.learner.monitor = FalseAlarms(3000)
    run.feed(concepts([0], 4000))
    first = run.challenges()[0]
    drop = run.verdicts()[0]
    assert drop.action == "dropped 1 challenger(s): none better within 700 labels"
    assert drop.detector["labels"] == 700 and drop.n_seen == first.n_seen + 699
    assert drop.model_before == drop.model_after
    # A false alarm: the champion is no better than its own snapshot, which is not kept.
    assert "snapshot_kept" not in drop.detector
    assert "kept the champion" not in drop.action


def test_a_fresh_challenger_worse_than_the_champion_is_dropped_early():
    # Agrawal 0 -> 1 with a tree: the mature tree adapts, a fresh tree lags far behind.
    before = synth.Agrawal(classification_function=0, seed=3)
    after = synth.Agrawal(classification_function=1, seed=4)
    data = list(itertools.islice(before, 20_000)) + list(itertools.islice(after, 1500))
    run = Run(config(model="ht")).feed(data)
    (started,) = run.challenges()
    (drop,) = run.verdicts()
    e = drop.detector
    # Real figures: on the newest 500 labels, 0.186 against 0.318, well before the horizon.
    assert drop.action.startswith("dropped 1 challenger(s): worse than the champion after 1001")
    assert e["error_champion"] < 0.2 < 0.3 < e["error_challenger"] and e["p_value"] > 0.99
    # The champion has left concept 0 behind: its snapshot from the detection is kept.
    assert drop.action.endswith("; kept the champion as it was at the detection")
    assert e["snapshot_kept"]["p_value"] < 1e-40
    (kept,) = run.learner.served.kept
    assert (kept.generation, kept.updates) == tuple(started.model_before)
    assert run.learner.served.challenge is None and run.learner.version.generation == 0


def test_a_recurring_concept_gets_its_old_model_back():
    run = Run(config()).feed(concepts([0, 1], 3000))
    (kept,) = run.learner.served.kept  # the model of A, kept when B's model replaced it
    assert kept.generation == 0
    again = concepts([0], 3000, seed=8)  # A again, new samples
    run.feed(again)
    back = run.verdicts("promoted")[-1]
    assert back.action == f"promoted kept model of generation 0 ({kept.updates} updates)"
    assert back.model_after == ModelVersion(2, kept.updates)
    assert back.detector["p_value"] < back.detector["alpha"]
    # Within a test or two of the detection: the kept model was paired on the buffered samples
    # too, and wins on the newest of them (here at the second test, 50 labels later).
    detection = run.challenges()[-1]
    assert back.n_seen - detection.n_seen == back.detector["labels"] - 1 <= 50
    assert back.detector["n"] < 1000 and back.detector["looks"] > 1
    assert run.learner.served.models[0] is kept.model
    assert all(k.model is not kept.model for k in run.learner.served.kept)
    # And it serves A as well as before: over the 1,000 labels after the return.
    right = [p == y for p, (_, y) in zip(run.predictions[6000:], again)]
    assert sum(right[-1000:]) / 1000 > 0.9


def test_the_number_of_kept_models_is_bounded():
    run = Run(config(kept_models=2))
    sizes = []
    for k in range(6):  # six concepts, none of them coming back
        run.feed(concepts([k], 2000, seed=k))
        sizes.append(len(run.learner.served.kept))
    promoted = run.verdicts("promoted")
    assert len(promoted) == 5 and all("fresh" in r.action for r in promoted)
    assert sizes == [0, 1, 2, 2, 2, 2]
    # The newest replaced models: those of concepts 3 and 4, as they were at their detection.
    started = [r.model_before for r in run.challenges()]
    kept = [(k.generation, k.updates) for k in run.learner.served.kept]
    assert kept == [tuple(v) for v in started[-2:]]


def test_regression_uses_a_paired_test_on_absolute_errors():
    samples = list(itertools.islice(synth.Friedman(seed=3), 4000))
    shifted = [(x, y + (0.0 if i < 2000 else 20.0)) for i, (x, y) in enumerate(samples)]
    run = Run(config(model="linreg")).feed(shifted)
    assert run.challenges()
    (promoted,) = run.verdicts()
    e = promoted.detector
    assert promoted.action.startswith("promoted fresh challenger")
    assert e["test"] == "wilcoxon" and "discordant" not in e
    assert e["p_value"] < e["alpha"] and e["error_challenger"] < e["error_champion"]


def test_checkpoint_mid_challenge_continues_with_the_same_predictions():
    dataset = concepts([0, 1, 2], 3000)
    delay = 50
    events = [Event(f"e{i}", x, ts=i) for i, (x, _) in enumerate(dataset)]
    labels = [Label(f"e{i}", y, ts=i + delay) for i, (_, y) in enumerate(dataset)]
    cfg = config()
    _, uninterrupted = run_offline(events, labels, cfg)

    cut = 6500  # concept 2 was detected; its fresh challenger, the kept model of concept 0
    learner, first = run_offline(  # and the snapshot of concept 1 are being tested
        [e for e in events if e.ts < cut], [lb for lb in labels if lb.ts < cut], cfg
    )
    challenge = learner.served.challenge
    assert challenge is not None and challenge.labels > 100
    assert [c.origin for c in challenge.candidates] == ["fresh", "snapshot", "kept"]
    restored = load_learner(learner.to_bytes())  # as a worker loads a checkpoint
    assert restored.canonical_bytes() == learner.canonical_bytes()
    _, rest = run_offline(
        [e for e in events if e.ts >= cut], [lb for lb in labels if lb.ts >= cut], learner=restored
    )
    assert first + rest == uninterrupted
    verdicts = [o for o in rest if isinstance(o, DriftReport) and o.kind == "challenger"]
    assert verdicts and verdicts[0].action.startswith("promoted fresh")


def test_paired_errors_test_the_newest_pairs_with_bonferroni():
    pairs = PairedErrors("classification", window=200)
    for i in range(200):  # the champion better on the old 160, the challenger on the new 40
        pairs.add(float(i >= 160), float(i < 160 and i % 4 == 0))
    whole = pairs.test()
    assert whole.n == 200 and whole.p_value > 0.5
    newest = pairs.test([30, 60, 120, 200])
    assert newest.looks == 4 and newest.n == 30
    assert newest.p_value == pytest.approx(4 * 0.5**30)
    worse = PairedErrors("classification", window=100)
    for i in range(100):  # the champion better: the reverse test says so, errors as they are
        worse.add(0.0, float(i % 2))
    reverse = worse.test(reverse=True)
    assert (reverse.error_champion, reverse.error_challenger) == (0.0, 0.5)
    assert reverse.discordant == (0, 50) and reverse.p_value == pytest.approx(0.5**50)
    assert worse.test().p_value == 1.0


@pytest.mark.parametrize(
    "bad", [{"keep": -1}, {"alpha": 0.0}, {"horizon": 0}, {"min_n": 2000}, {"window": 0}]
)
def test_bad_challenger_options_are_refused(bad):
    with pytest.raises(ValueError):
        ChallengerOptions(**bad)
    names = {"keep": "kept_models"}
    field = names.get(next(iter(bad)), "challenger_" + next(iter(bad)))
    with pytest.raises(ValueError):
        LearnerConfig(**{field: next(iter(bad.values()))})


def test_the_fresh_challenger_learns_from_where_the_error_rose():
    # A buffer of 100 after 150 labels: the error rose 70 labels ago, after a young model's
    # error fell at the start (which is no change of concept to act on).
    from river import linear_model

    served = ServedModel(
        linear_model.LogisticRegression(), "classification", "challenger", buffer_size=100
    )
    errors = [1.0] * 20 + [0.0] * 60 + [1.0] * 70
    for i, e in enumerate(errors):
        served.learn({"x": float(i % 2)}, i % 2 == 1, None, e)
    action = served.on_drift(served_error=1.0)
    assert action.startswith("started challenge: fresh challenger trained on 70 samples")
    assert served.challenge.candidates[0].updates == 70


class Silent:
    """Stands in for the learner's ADWIN: never fires, so act_when alone acts."""

    def update(self, value: float) -> None:
        return None


def test_act_when_starts_a_challenge_and_waits_while_it_runs():
    """Under challenger the threshold starts a challenge like an ADWIN detection; it does not
    fire again while the challenge runs (the champion stays below meanwhile), and after the
    verdict it waits for the new model's act_when_labels labels before judging again."""
    run = Run(config(act_when="accuracy<0.8", act_when_labels=200))
    run.learner.monitor = Silent()
    run.feed(concepts([0, 1], 3000))
    kinds = [(r.n_seen, r.kind, r.action.split(" ")[0]) for r in run.reports]
    fired = [n for n, kind, _ in kinds if kind == "concept"]
    assert fired and 3000 < fired[0] < 3000 + 400
    assert kinds[0][2] == "started"
    verdicts = [n for n, kind, _ in kinds if kind == "challenger"]
    assert verdicts and verdicts[0] > fired[0]
    assert not [n for n in fired if fired[0] < n <= verdicts[0]]  # quiet during the challenge
    assert all(n - verdicts[0] >= 400 for n in fired[1:])
    assert run.learner.version.generation == 1  # the fresh challenger won
