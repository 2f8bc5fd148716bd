"""The episode sampler: right shapes, class-major support, valid rows only, reproducible from (seed, index)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from fewshot.config.schema import EpisodeSpec
from fewshot.data.episodes import Episode, EpisodeSampler, episode_seed
from fewshot.errors import DataError


def _labels(counts: list[int]) -> torch.Tensor:
    """Bank labels with ``counts[c]`` images of class ``c``, interleaved (not grouped) to make it harder."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(123))]


def _classes(n: int) -> tuple[str, ...]:
    return tuple(f"n{c:03d}" for c in range(n))


def _check_episode(episode: Episode, labels: torch.Tensor, spec: EpisodeSpec) -> None:
    """Every property an episode drawn from ``labels`` must have."""
    assert episode.spec == spec
    assert episode.support.shape == (spec.way * spec.shot,)
    assert episode.query.shape == (spec.way * spec.query,)
    assert episode.query_labels.shape == (spec.way * spec.query,)
    assert episode.support.dtype == episode.query.dtype == torch.long
    rows = torch.cat([episode.support, episode.query])
    assert ((rows >= 0) & (rows < len(labels))).all()
    assert len(set(rows.tolist())) == len(rows), "an image is used twice in one episode"
    # Class-major support: shot consecutive images of each class, the classes all different.
    support_classes = labels[episode.support].reshape(spec.way, spec.shot)
    assert (support_classes == support_classes[:, :1]).all()
    episode_classes = support_classes[:, 0]
    assert len(set(episode_classes.tolist())) == spec.way
    assert episode.support_labels.tolist() == [c for c in range(spec.way) for _ in range(spec.shot)]
    # Query label i means the i-th class of the support, in the bank's labels too.
    assert set(episode.query_labels.tolist()) == set(range(spec.way))
    assert torch.equal(labels[episode.query], episode_classes[episode.query_labels])
    assert torch.bincount(episode.query_labels, minlength=spec.way).tolist() == [spec.query] * spec.way


@pytest.mark.parametrize(("way", "shot", "query"), [(5, 1, 15), (3, 5, 2), (2, 1, 1), (7, 2, 3)])
def test_episode_shapes_and_labels(way, shot, query):
    labels = _labels([20] * 8)
    spec = EpisodeSpec(way=way, shot=shot, query=query)
    sampler = EpisodeSampler(labels, _classes(8), spec, seed=0)
    for index in range(20):
        _check_episode(sampler[index], labels, spec)


def test_unequal_class_sizes_only_sample_valid_rows():
    counts = [3, 50, 4, 3, 17]
    labels = _labels(counts)
    spec = EpisodeSpec(way=4, shot=1, query=2)
    sampler = EpisodeSampler(labels, _classes(5), spec, seed=3)
    seen = torch.zeros(len(labels), dtype=torch.bool)
    used_classes = set()
    for index in range(300):
        episode = sampler[index]
        _check_episode(episode, labels, spec)
        seen[episode.support] = True
        seen[episode.query] = True
        used_classes |= set(labels[episode.support].tolist())
    assert used_classes == set(range(5))
    # Every image of every class (small ones included) is eventually drawn, none outside the bank.
    assert seen.all()


def test_all_images_of_a_class_used_when_it_has_exactly_enough():
    labels = _labels([3, 3, 3])
    spec = EpisodeSpec(way=3, shot=1, query=2)
    episode = EpisodeSampler(labels, _classes(3), spec, seed=0)[0]
    _check_episode(episode, labels, spec)
    assert sorted(torch.cat([episode.support, episode.query]).tolist()) == list(range(9))


def test_determinism():
    labels = _labels([10] * 6)
    spec = EpisodeSpec(way=5, shot=1, query=3)
    a = EpisodeSampler(labels, _classes(6), spec, seed=7)
    b = EpisodeSampler(labels, _classes(6), spec, seed=7)
    for index in (0, 1, 5, 1000):
        # Same (seed, index): identical, whatever was drawn before.
        assert torch.equal(a[index].support, b[index].support)
        assert torch.equal(a[index].query, b[index].query)
        assert torch.equal(a[index].query_labels, b[index].query_labels)
    assert torch.equal(a[3].support, a[3].support)
    # Different index or seed: different episodes.
    draws = {tuple(torch.cat([a[i].support, a[i].query]).tolist()) for i in range(20)}
    assert len(draws) == 20
    other = EpisodeSampler(labels, _classes(6), spec, seed=8)
    assert any(not torch.equal(a[i].support, other[i].support) for i in range(5))
    assert not torch.equal(torch.cat([a[0].support, a[0].query]), torch.cat([other[0].support, other[0].query]))


def test_sampling_does_not_touch_global_rng():
    sampler = EpisodeSampler(_labels([5] * 4), _classes(4), EpisodeSpec(way=3, shot=1, query=2), seed=0)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    sampler[0]
    sampler[1]
    assert torch.equal(torch.rand(3), expected)


def test_episode_seed():
    assert episode_seed(0, 0) == episode_seed(0, 0)
    seeds = {episode_seed(s, i) for s in range(10) for i in range(10)}
    assert len(seeds) == 100  # no collisions between (seed, index) pairs, unlike seed + index
    assert all(0 <= s < 2**63 for s in seeds)


def test_way_larger_than_classes():
    with pytest.raises(DataError) as err:
        EpisodeSampler(_labels([10] * 4), _classes(4), EpisodeSpec(way=5, shot=1, query=1), seed=0)
    assert "5 classes" in str(err.value) and "only 4" in str(err.value)


def test_class_with_too_few_images_is_named():
    counts = [20, 20, 5, 20]
    with pytest.raises(DataError) as err:
        EpisodeSampler(_labels(counts), _classes(4), EpisodeSpec(way=2, shot=1, query=5), seed=0)
    message = str(err.value)
    assert "'n002'" in message
    assert "only 5" in message
    assert "6 images per class" in message


def test_class_with_no_images():
    labels = torch.tensor([0, 0, 0, 2, 2, 2])
    with pytest.raises(DataError, match="'n001' has only 0"):
        EpisodeSampler(labels, _classes(3), EpisodeSpec(way=2, shot=1, query=1), seed=0)


@pytest.mark.parametrize(
    ("way", "shot", "query", "problem"),
    [(1, 1, 1, r"way\n.*greater than or equal to 2"), (5, 0, 1, r"shot\n.*equal to 1"), (5, 1, -3, r"query\n.* 1")],
)
def test_spec_values_out_of_range(way, shot, query, problem):
    """One rule for an episode's shape, wherever it is built: a 1-way episode has nothing to tell apart."""
    with pytest.raises(ValidationError, match=problem):
        EpisodeSpec(way=way, shot=shot, query=query)


def test_spec_str_and_equality():
    assert str(EpisodeSpec(way=5, shot=1, query=15)) == "5-way 1-shot 15-query"
    assert (
        EpisodeSpec(way=5, shot=1, query=15)
        == EpisodeSpec(way=5, shot=1, query=15)
        != EpisodeSpec(way=5, shot=5, query=15)
    )


def test_episode_validates_its_parts():
    spec = EpisodeSpec(way=2, shot=2, query=1)
    ok = Episode(spec, torch.arange(4), torch.tensor([4, 5]), torch.tensor([1, -1]))
    assert ok.support_labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(DataError, match="4 support images"):
        Episode(spec, torch.arange(3), torch.tensor([4, 5]), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="one label per query"):
        Episode(spec, torch.arange(4), torch.tensor([4, 5]), torch.tensor([0]))
    with pytest.raises(DataError, match=r"outside 0\.\.1"):
        Episode(spec, torch.arange(4), torch.tensor([4, 5]), torch.tensor([0, 2]))
    with pytest.raises(DataError, match=r"outside 0\.\.1"):
        Episode(spec, torch.arange(4), torch.tensor([4, 5]), torch.tensor([0, -2]))
