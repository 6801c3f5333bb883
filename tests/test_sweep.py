from __future__ import annotations

from harness.sweep import sweep_points


def test_no_comma_is_one_point_with_the_overrides_as_given():
    (point,) = sweep_points(["seed=1", "sft.lora=true"])
    assert point.values == {} and point.overrides == ["seed=1", "sft.lora=true"] and point.label == ""


def test_comma_lists_form_a_grid_in_order():
    points = sweep_points(["rsdpo.eta=0.8,0.9", "seed=3", "rsdpo.tau=1, 2"])
    assert [p.label for p in points] == [
        "rsdpo.eta=0.8,rsdpo.tau=1", "rsdpo.eta=0.8,rsdpo.tau=2",
        "rsdpo.eta=0.9,rsdpo.tau=1", "rsdpo.eta=0.9,rsdpo.tau=2",
    ]
    assert points[1].overrides == ["seed=3", "rsdpo.eta=0.8", "rsdpo.tau=2"]


def test_a_yaml_list_is_a_value_not_a_sweep():
    (point,) = sweep_points(["evaluate=[heldout_reward, other]"])
    assert point.overrides == ["evaluate=[heldout_reward, other]"]
