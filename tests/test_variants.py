"""The deviation variants (hf_gazecons/variants/): every registered variant's metric sums against its
own per-sample deviation, what an all-zero map scores, the registry, and a start without torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest
import torch

import hf_gazecons.variants as variants_package
from hf_gazecons.errors import UsageError
from hf_gazecons.metric import ConsistencyStatistics
from hf_gazecons.variants import COLLAPSE_SAFE, KEEPS_MAPS, VARIANTS, get_variant, is_zero_map


def _maps(seed: int = 0, n: int = 40, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, 4, 5, generator=g)  # float32, as the metric receives them
    maps[torch.rand(n, generator=g) < 0.2] = 0.0  # collapsed maps
    labels = torch.randint(0, k, (n,), generator=g)
    return maps, labels


@pytest.mark.parametrize("name", VARIANTS)
def test_metric_sums_equal_the_per_sample_deviation_from_the_variants_class_map(name):
    """Per class: the sum of ``deviation`` over the class's maps against the sum of their
    ``averaged_maps`` over class_map_count, and the metric's value from its sums, agree for every
    variant the package finds."""
    variant = get_variant(name)
    maps, labels = _maps()
    k = 3
    stats = ConsistencyStatistics(k, name)
    stats.update(maps, torch.nn.functional.one_hot(labels, k).float(), labels)  # every sample correct
    result = stats.result(list("abc"), "t")
    for c, label in enumerate("abc"):
        members = maps[labels == c].double()
        count = torch.tensor([float(len(members))], dtype=torch.float64)
        zeros = is_zero_map(members).double().sum().reshape(1)
        class_map = variant.averaged_maps(members).sum(0) / variant.class_map_count(count, zeros).clamp(min=1)
        expected = float(variant.deviation(members, class_map).mean())
        assert result.per_class[label].values[name] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", VARIANTS)
def test_an_all_zero_map_scores_the_zero_map_value_and_the_worst_where_the_variant_says_so(name):
    variant = get_variant(name)
    class_maps = torch.rand(6, 4, 4, dtype=torch.float64)
    zero = variant.deviation(torch.zeros(6, 4, 4, dtype=torch.float64), class_maps)
    torch.testing.assert_close(variant.zero_map_value(class_maps), zero)
    others = torch.cat([torch.rand(200, 4, 4, dtype=torch.float64), (class_maps[:1] < 0.5).double()])
    deviations = variant.deviation(others, class_maps[0])
    if name in COLLAPSE_SAFE:
        assert (deviations <= zero[0] + 1e-12).all()  # nothing scores more than the zero map
    else:  # the study's distances: a map lit where its class map is dark scores worse than none
        assert deviations[-1] > zero[0]


def test_robust_worst_case_is_twice_the_class_maps_energy_and_2_without_one():
    robust = get_variant("robust")
    class_maps = torch.rand(3, 4, 4, dtype=torch.float64)
    class_maps[2] = 0.0
    expected = torch.tensor([2 * float(class_maps[0].pow(2).mean()), 2 * float(class_maps[1].pow(2).mean()), 2.0])
    torch.testing.assert_close(robust.worst_case(class_maps), expected.double())
    torch.testing.assert_close(robust.zero_map_value(class_maps), expected.double())


def test_the_rules_of_each_variant():
    assert (COLLAPSE_SAFE, KEEPS_MAPS) == (("pearson", "robust"), ("reference",))
    assert [name for name in VARIANTS if get_variant(name).revives_collapsed_maps] == ["pearson", "robust"]
    count, zeros = torch.tensor([5.0, 3.0]), torch.tensor([2.0, 3.0])
    assert get_variant("robust").class_map_count(count, zeros).tolist() == [3.0, 0.0]  # the non-zero maps
    assert get_variant("pearson").class_map_count(count, zeros).tolist() == [3.0, 0.0]
    assert get_variant("paper").class_map_count(count, zeros).tolist() == [5.0, 3.0]  # all of them
    maps = torch.rand(4, 3, 3, dtype=torch.float64)
    assert get_variant("paper").averaged_maps(maps) is maps  # the study averages the maps themselves
    units = get_variant("pearson").averaged_maps(maps).flatten(1)  # pearson: their centred unit vectors
    torch.testing.assert_close(units, (maps.flatten(1) - maps.flatten(1).mean(1, keepdim=True)) / (
        maps.flatten(1) - maps.flatten(1).mean(1, keepdim=True)).norm(dim=1, keepdim=True))


def test_every_file_of_the_package_is_a_variant_and_unknown_names_are_a_usage_error():
    files = sorted(m.name for m in pkgutil.iter_modules(variants_package.__path__) if m.name != "base")
    assert list(VARIANTS) == files == ["paper", "pearson", "reference", "robust"]
    assert all(get_variant(name).name == name for name in VARIANTS)
    robust = get_variant("robust")
    assert get_variant(robust) is robust
    with pytest.raises(UsageError, match=r"variant must be one of paper, pearson, reference, robust, not 'papr'"):
        get_variant("papr")


def test_the_variants_load_without_torch():
    """The command line builds --variant's choices and help before torch is imported."""
    code = (
        "import sys\nfrom hf_gazecons.variants import VARIANT_HELP, VARIANTS\n"
        "print(VARIANTS, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "('paper', 'pearson', 'reference', 'robust') False", done.stdout + done.stderr
